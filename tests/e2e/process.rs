//! Tests that run the real `herald` binary: a worker killed mid-job, SIGTERM, invalid workflows.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use herald::app::Role;

use super::{
    fake_graph,
    harness::{Options, SENDER, eventually, settle, spawn_app},
};

const GREET: &str = r#"
name: greet
trigger:
  event: whatsapp.message_received
steps:
  - send_template:
      template: welcome_message
      language: en_US
      variables: ["{{ trigger.text }}"]
"#;

fn herald() -> Command {
    Command::new(env!("CARGO_BIN_EXE_herald"))
}

fn body(from: &str, wamid: &str) -> Vec<u8> {
    let phone = herald::domain::PhoneNumber::parse(from).unwrap();
    herald::ingress::simulate::text_message_body(&phone, "Ana", "hello", SENDER, wamid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_job_leaves_its_jobs_to_another_worker_and_nothing_is_sent_twice() {
    let mut app = spawn_app(Options {
        workflows: vec![GREET],
        graph: true,
        roles: vec![Role::Ingress, Role::Matcher],
        env: vec![("HERALD_PROVIDER_TIMEOUT_MS", "3000".into())],
        ..Default::default()
    })
    .await;
    let graph = app.graph.as_ref().unwrap();
    fake_graph::first_send_hangs(graph, Duration::from_secs(60)).await;
    let mut worker = herald()
        .args(["serve", "--role", "worker"])
        .envs(&app.vars)
        .env("HERALD_LISTEN", "127.0.0.1:0")
        .env("HERALD_WORKFLOWS", &app.workflows_dir)
        .env("HERALD_WORKER_PREFETCH", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start worker process");
    for (i, phone) in ["+4915100000011", "+4915100000012", "+4915100000013"]
        .iter()
        .enumerate()
    {
        let r = app
            .post_webhook(&body(phone, &format!("wamid.KILL{i}")))
            .await;
        assert_eq!(r.status(), 200);
    }
    eventually("the worker is mid-send", || async {
        !app.sends().await.is_empty()
    })
    .await;
    worker.kill().expect("kill -9 the worker");
    let _ = worker.wait();

    app.start_more(&[Role::Worker]).await;
    eventually("every run completed", || async {
        app.count("SELECT count(*) FROM runs WHERE status = 'completed'")
            .await
            == 3
    })
    .await;
    settle().await;
    let mut recipients: Vec<String> = app
        .sends()
        .await
        .iter()
        .map(|s| s["to"].as_str().unwrap_or_default().to_string())
        .collect();
    recipients.sort();
    assert_eq!(
        recipients,
        ["4915100000011", "4915100000012", "4915100000013"],
        "each sent exactly once"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM step_attempts WHERE state = 'interrupted'")
            .await,
        1
    );
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_step_in_flight_then_exits_cleanly() {
    let app = spawn_app(Options {
        workflows: vec![GREET],
        graph: true,
        roles: vec![Role::Ingress, Role::Matcher],
        ..Default::default()
    })
    .await;
    fake_graph::first_send_hangs(app.graph.as_ref().unwrap(), Duration::from_secs(2)).await;
    let mut worker = herald()
        .args(["serve", "--role", "worker"])
        .envs(&app.vars)
        .env("HERALD_LISTEN", "127.0.0.1:0")
        .env("HERALD_WORKFLOWS", &app.workflows_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start worker process");
    assert_eq!(
        app.post_webhook(&body("+4915100000021", "wamid.TERM"))
            .await
            .status(),
        200
    );
    eventually("the worker is mid-send", || async {
        !app.sends().await.is_empty()
    })
    .await;
    let killed = Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = worker.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "worker did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(
        app.count("SELECT count(*) FROM runs WHERE status = 'completed'")
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT count(*) FROM step_attempts WHERE state = 'succeeded'")
            .await,
        1
    );
    app.cleanup().await;
}

#[test]
fn serve_and_validate_refuse_invalid_workflows_naming_file_line_and_reason() {
    let dir = std::env::temp_dir().join(format!("herald-bad-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("bad.yaml"),
        "name: bad\ntrigger:\n  event: whatsapp.message_received\nsteps:\n  - send_fax:\n      to: '+4915112345678'\n",
    )
    .unwrap();
    for args in [vec!["serve"], vec!["workflows", "validate"]] {
        let out = herald()
            .args(&args)
            .env("HERALD_WORKFLOWS", &dir)
            .env("HERALD_LISTEN", "127.0.0.1:0")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("bad.yaml:5:"), "{args:?}: {stderr}");
        assert!(stderr.contains("send_fax"), "{args:?}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_example_workflows_validate() {
    let out = herald()
        .args([
            "workflows",
            "validate",
            concat!(env!("CARGO_MANIFEST_DIR"), "/workflows"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn herald_simulate_runs_the_example_workflows_through_the_sandbox() {
    let app = spawn_app(Options {
        workflows: vec![
            include_str!("../../workflows/welcome.yaml"),
            include_str!("../../workflows/new-conversation.yaml"),
        ],
        ..Default::default()
    })
    .await;
    let out = herald()
        .args([
            "simulate",
            "message",
            "--from",
            "+4915112345678",
            "--text",
            "hello",
            "--sender",
            SENDER,
        ])
        .args(["--url", &app.url("")])
        .env("WHATSAPP_APP_SECRET", super::harness::APP_SECRET)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually("both example workflows completed", || async {
        app.count("SELECT count(*) FROM runs WHERE status = 'completed'")
            .await
            == 2
    })
    .await;
    let list = herald()
        .args(["runs", "list", "--json"])
        .env("HERALD_DATABASE_URL", &app.vars["HERALD_DATABASE_URL"])
        .output()
        .unwrap();
    let runs: serde_json::Value = serde_json::from_slice(&list.stdout).expect("runs list --json");
    let mut workflows: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["workflow"].as_str().unwrap())
        .collect();
    workflows.sort();
    assert_eq!(workflows, ["new-conversation-ack", "welcome"]);
    let welcome = runs
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["workflow"] == "welcome")
        .unwrap();
    let show = herald()
        .args(["runs", "show", welcome["id"].as_str().unwrap(), "--json"])
        .env("HERALD_DATABASE_URL", &app.vars["HERALD_DATABASE_URL"])
        .output()
        .unwrap();
    let detail: serde_json::Value = serde_json::from_slice(&show.stdout).expect("runs show --json");
    let template = &detail["messages"][0]["request"]["template"];
    assert_eq!(template["name"], "welcome_message");
    assert_eq!(template["language"]["code"], "en_US");
    assert_eq!(
        template["components"][0]["parameters"][0]["text"],
        "Sandbox Customer"
    );
    assert_eq!(detail["messages"][0]["recipient"], "+4915112345678");
    assert_eq!(detail["messages"][0]["provider"], "sandbox");
    assert_eq!(detail["messages"][1]["kind"], "text");
    app.cleanup().await;
}

#[test]
fn workflows_schema_prints_a_json_schema_of_every_step() {
    let out = herald().args(["workflows", "schema"]).output().unwrap();
    assert!(out.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let text = schema.to_string();
    for step in herald::steps::StepKind::TYPE_NAMES {
        assert!(text.contains(step), "{step} missing from the schema");
    }
    assert_eq!(schema["title"], "WorkflowSpec");
}
