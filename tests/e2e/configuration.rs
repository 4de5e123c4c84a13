//! The configuration as the real `herald` binary reads it: `--help` lists every variable with its
//! default and never prints a secret; a bad variable stops every command, naming it.

use std::process::{Command, Output};

use herald::config::variables;

/// `herald ARGS` with exactly `vars` of the configuration set (none inherited from the test's
/// environment).
fn herald(args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    for v in variables() {
        command.env_remove(&v.name);
    }
    command.args(args).envs(vars.iter().copied());
    command.output().expect("run herald")
}

#[test]
fn serve_help_lists_every_configuration_variable_with_its_default() {
    let out = herald(&["serve", "--help"], &[]);
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8(out.stdout).unwrap();
    let variables = variables();
    assert!(variables.len() >= 41, "{variables:?}");
    for v in variables {
        assert!(
            help.contains(&format!("[env: {}", v.name)),
            "{} missing from `herald serve --help`:\n{help}",
            v.name
        );
        assert!(help.contains(&v.flag), "{} missing:\n{help}", v.flag);
        if let Some(default) = v.default {
            assert!(
                help.contains(&format!("[default: {default}]")),
                "{}'s default {default} missing:\n{help}",
                v.name
            );
        }
    }
}

#[test]
fn help_shows_the_value_of_a_plain_variable_but_never_of_a_secret() {
    let secrets = [
        ("WHATSAPP_ACCESS_TOKEN", "access-token-value"),
        ("WHATSAPP_APP_SECRET", "app-secret-value"),
        ("WHATSAPP_VERIFY_TOKEN", "verify-token-value"),
        ("HERALD_API_TOKEN", "api-token-value"),
        ("HERALD_CALLS_TOKEN", "calls-token-value"),
        ("HERALD_CALLS_SECRET", "calls-secret-value"),
        (
            "HERALD_NOTIFY_WEBHOOK_URL",
            "https://hooks.test/webhook-value",
        ),
        (
            "HERALD_DATABASE_URL",
            "postgres://herald:db-password-value@db/herald",
        ),
        (
            "HERALD_AMQP_URL",
            "amqp://herald:amqp-password-value@mq/%2f",
        ),
    ];
    let mut vars = secrets.to_vec();
    vars.push(("HERALD_LISTEN", "127.0.0.1:9999"));
    let out = herald(&["serve", "--help"], &vars);
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(
        help.contains("[env: HERALD_LISTEN=127.0.0.1:9999]"),
        "{help}"
    );
    for (name, value) in secrets {
        assert!(help.contains(&format!("[env: {name}]")), "{name}:\n{help}");
        assert!(!help.contains(value), "{name}'s value printed:\n{help}");
    }
}

#[test]
fn a_bad_variable_stops_every_command_naming_it_and_a_blank_one_is_unset() {
    let out = herald(&["workflows", "schema"], &[("HERALD_LISTEN", "nope")]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("herald: configuration: HERALD_LISTEN (--listen): 'nope' is not host:port"),
        "{stderr}"
    );
    let out = herald(
        &["workflows", "schema"],
        &[("HERALD_SANDBOX", "true"), ("WHATSAPP_ACCESS_TOKEN", "t")],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("HERALD_SANDBOX and WHATSAPP_ACCESS_TOKEN are both set")
    );
    let out = herald(
        &["workflows", "schema"],
        &[
            ("HERALD_LISTEN", "  "),
            ("HERALD_LOG_FORMAT", ""),
            ("HERALD_RECIPIENT_BURST", " "),
        ],
    );
    assert!(out.status.success(), "{out:?}");
}

/// Outside the sandbox a role that lacks its credential does not start (before it connects to
/// anything), naming the variable: no public default takes its place.
#[test]
fn a_role_without_its_credential_refuses_to_start_outside_the_sandbox() {
    for (role, vars, missing) in [
        (
            "worker",
            vec![("WHATSAPP_APP_SECRET", "s")],
            "WHATSAPP_ACCESS_TOKEN",
        ),
        (
            "worker",
            vec![("WHATSAPP_ACCESS_TOKEN", "")],
            "WHATSAPP_ACCESS_TOKEN",
        ),
        (
            "ingress",
            vec![("WHATSAPP_ACCESS_TOKEN", "t")],
            "WHATSAPP_APP_SECRET",
        ),
        ("all", vec![], "WHATSAPP_APP_SECRET"),
    ] {
        let out = herald(&["serve", "--role", role], &vars);
        assert!(!out.status.success(), "{role} {vars:?} started: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("{missing} is not set")),
            "{role} {vars:?}: {stderr}"
        );
    }
}

#[test]
fn the_sandbox_refuses_a_public_listen_address_unless_told() {
    let out = herald(
        &["serve", "--sandbox"],
        &[("HERALD_LISTEN", "0.0.0.0:18080")],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("HERALD_SANDBOX_PUBLIC"),
        "{out:?}"
    );
}
