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
    herald::cli::text_message_body(&phone, "Ana", "hello", SENDER, wamid)
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

/// The benchmark itself, briefly and at a low rate: it must keep working from the project's
/// folder (whose templates.yaml does not list the bench's template) and find every webhook sent
/// once. The figures are not judged here; `herald bench` prints them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn herald_bench_runs_a_short_pass_and_finds_every_webhook_sent_once() {
    let samples = std::env::temp_dir().join(format!(
        "herald-bench-samples-{}.txt",
        uuid::Uuid::now_v7().simple()
    ));
    let samples_arg = samples.display().to_string();
    let out = tokio::task::spawn_blocking(move || {
        herald()
            .args([
                "bench",
                "--duration",
                "4s",
                "--latency-duration",
                "2s",
                "--rate",
                "50",
                "--concurrency",
                "8",
                "--json",
                "--latency-samples",
                &samples_arg,
            ])
            .env("RUST_LOG", "warn")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("run herald bench")
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "herald bench failed: {stderr}");
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("bench --json prints one JSON object");
    assert_eq!(report["ok"], true, "{report:#}");
    let delivery = &report["delivery"];
    assert!(delivery["accepted"].as_u64().unwrap() > 0, "{report:#}");
    assert_eq!(delivery["sends"], delivery["accepted"], "{report:#}");
    assert_eq!(delivery["lost"], 0);
    assert_eq!(delivery["duplicated"], 0);
    assert!(report["throughput"]["events_per_s"].as_f64().unwrap() > 0.0);
    // A 4 s run at 50/s is not made as the first targets are stated: listed, not judged.
    let targets = report["targets"].as_array().expect("targets");
    assert_eq!(targets.len(), 3, "{report:#}");
    assert!(
        targets
            .iter()
            .all(|t| t["met"].is_null() && t["not_judged"].is_string()),
        "{report:#}"
    );
    assert_eq!(
        targets[0]["measured"], report["throughput"]["events_per_s"],
        "{report:#}"
    );
    let checks = report["cpu_check_ms"].as_array().expect("cpu_check_ms");
    assert_eq!(checks.len(), 2);
    assert!(
        checks.iter().all(|c| c.as_f64().unwrap() > 0.0),
        "{report:#}"
    );
    // One line per webhook of the latency phase (2 s at 50/s): when it was due, its answer.
    let text = std::fs::read_to_string(&samples).expect("samples file");
    let _ = std::fs::remove_file(&samples);
    let lines: Vec<Vec<f64>> = text
        .lines()
        .map(|l| l.split(' ').map(|x| x.parse().unwrap()).collect())
        .collect();
    assert_eq!(
        lines.len() as u64,
        report["latency"]["posted"].as_u64().unwrap()
    );
    assert_eq!(lines.len(), 100);
    assert!(
        lines
            .iter()
            .all(|l| l.len() == 2 && l[0] >= 0.0 && l[1] > 0.0),
        "{text}"
    );
    assert!(
        lines.windows(2).all(|w| w[0][0] < w[1][0]),
        "in the order they were due"
    );
}

/// A `--latency-samples` file that cannot be written stops the bench at once, naming it, before
/// any database or run is made.
#[test]
fn herald_bench_refuses_an_unwritable_samples_file_before_it_starts() {
    let out = herald()
        .args([
            "bench",
            "--latency-samples",
            "/nonexistent-herald-dir/samples.txt",
        ])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run herald bench");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--latency-samples: cannot write /nonexistent-herald-dir/samples.txt"),
        "{stderr}"
    );
    assert!(!stderr.contains("phase 1/2"), "{stderr}");
}
