//! The retry policy: retryable errors wait and try again (a durable timer), rate limits honour
//! Retry-After without using up attempts, permanent errors and exhausted retries become dead
//! letters with one team notification, and `dead-letters retry` finishes the run.

use std::process::Command;

use serde_json::Value;
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{method, path, path_regex},
};

use super::{
    fake_graph,
    harness::{Options, TestApp, eventually, runs_with_status, settle, spawn_app, text_body},
};

const GREET: &str = r#"
name: greet
trigger:
  event: whatsapp.message_received
steps:
  - send_template:
      id: greet
      template: welcome_message
      language: en_US
      variables: ["{{ trigger.text }}"]
"#;

async fn app_with_team() -> (TestApp, MockServer) {
    let team = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&team)
        .await;
    let app = spawn_app(Options {
        workflows: vec![GREET],
        graph: true,
        env: vec![
            ("HERALD_RETRY_WAIT", "1s".into()),
            ("HERALD_NOTIFY_WEBHOOK_URL", format!("{}/hook", team.uri())),
        ],
        ..Default::default()
    })
    .await;
    (app, team)
}

/// The first `n` sends fail with `status` and `body`; later ones are accepted.
pub(super) async fn fail_first(
    graph: &MockServer,
    n: u64,
    status: u16,
    body: &[u8],
    retry_after: Option<&str>,
) {
    let mut response =
        ResponseTemplate::new(status).set_body_raw(body.to_vec(), "application/json");
    if let Some(after) = retry_after {
        response = response.insert_header("retry-after", after);
    }
    Mock::given(method("POST"))
        .and(path_regex(r"^/\d+/messages$"))
        .respond_with(response)
        .up_to_n_times(n)
        .with_priority(1)
        .mount(graph)
        .await;
    fake_graph::accept_all(graph).await;
}

async fn attempts(app: &TestApp) -> Vec<(String, Option<String>)> {
    sqlx::query_as("SELECT state, error->>'class' FROM step_attempts ORDER BY attempt")
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

pub(super) const SERVER_ERROR: &[u8] = br#"{"error": {"message": "(#131000) Something went wrong", "type": "OAuthException", "code": 131000}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_error_is_retried_once_after_the_wait_and_sent_once() {
    let (app, team) = app_with_team().await;
    fail_first(app.graph.as_ref().unwrap(), 1, 500, SERVER_ERROR, None).await;
    let posted = std::time::Instant::now();
    assert_eq!(
        app.post_webhook(&text_body("+4915100000201", "hi", "wamid.R1"))
            .await
            .status(),
        200
    );
    eventually("completed after a retry", || async {
        runs_with_status(&app, "completed").await == 1
    })
    .await;
    assert!(
        posted.elapsed() >= std::time::Duration::from_secs(1),
        "the wait is honoured"
    );
    assert_eq!(
        attempts(&app).await,
        [
            ("failed".to_string(), Some("Provider error".to_string())),
            ("succeeded".to_string(), None)
        ]
    );
    settle().await;
    assert_eq!(app.sends().await.len(), 2, "one failed call, one send");
    assert!(
        team.received_requests().await.unwrap().is_empty(),
        "no notification for a recovered step"
    );
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_twice_makes_a_dead_letter_with_one_notification_and_a_retry_finishes_the_run() {
    let (app, team) = app_with_team().await;
    fail_first(app.graph.as_ref().unwrap(), 2, 503, SERVER_ERROR, None).await;
    assert_eq!(
        app.post_webhook(&text_body("+4915100000202", "hi", "wamid.R2"))
            .await
            .status(),
        200
    );
    eventually("run failed", || async {
        runs_with_status(&app, "failed").await == 1
    })
    .await;
    settle().await;
    assert_eq!(attempts(&app).await.len(), 2, "the default: one retry");
    let told: Vec<Value> = team
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(told.len(), 1, "exactly one notification");
    let text = told[0]["text"].as_str().unwrap();
    for part in [
        "greet",
        "Provider error",
        "dead-letters retry",
        "4915100000202",
    ] {
        assert!(text.contains(part), "{part} missing from: {text}");
    }
    let (id, error): (uuid::Uuid, Value) = sqlx::query_as("SELECT id, error FROM dead_letters")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(error["class"], "Provider error");
    assert_eq!(error["provider_code"], 131000);

    // The cause is gone (the fake now accepts): the operator retries.
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["dead-letters", "retry", &id.to_string()])
        .envs(&app.vars)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually("run completed", || async {
        runs_with_status(&app, "completed").await == 1
    })
    .await;
    let again = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["dead-letters", "retry", &id.to_string()])
        .envs(&app.vars)
        .output()
        .unwrap();
    assert!(!again.status.success(), "a dead letter is retried once");
    let list = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["dead-letters", "list", "--json"])
        .envs(&app.vars)
        .output()
        .unwrap();
    let list: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert!(list[0]["retried_at"].is_string());
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_error_is_not_retried_and_is_notified_at_once() {
    let (app, team) = app_with_team().await;
    let body = include_bytes!("../fixtures/whatsapp/graph-errors/132001-template-not-found.json");
    fail_first(app.graph.as_ref().unwrap(), 5, 404, body, None).await;
    assert_eq!(
        app.post_webhook(&text_body("+4915100000203", "hi", "wamid.R3"))
            .await
            .status(),
        200
    );
    eventually("run failed", || async {
        runs_with_status(&app, "failed").await == 1
    })
    .await;
    eventually("team told", || async {
        team.received_requests().await.unwrap().len() == 1
    })
    .await;
    settle().await;
    assert_eq!(attempts(&app).await.len(), 1, "no retry");
    assert_eq!(app.count("SELECT count(*) FROM dead_letters").await, 1);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_honour_retry_after_and_do_not_use_up_attempts() {
    let (app, team) = app_with_team().await;
    let body =
        include_bytes!("../fixtures/whatsapp/graph-errors/130429-throughput-rate-limit.json");
    fail_first(app.graph.as_ref().unwrap(), 3, 429, body, Some("1")).await;
    assert_eq!(
        app.post_webhook(&text_body("+4915100000204", "hi", "wamid.R4"))
            .await
            .status(),
        200
    );
    eventually("completed after the storm", || async {
        runs_with_status(&app, "completed").await == 1
    })
    .await;
    let classes: Vec<Option<String>> = attempts(&app).await.into_iter().map(|(_, c)| c).collect();
    assert_eq!(
        classes,
        [
            Some("Rate limited".to_string()),
            Some("Rate limited".to_string()),
            Some("Rate limited".to_string()),
            None
        ]
    );
    assert!(team.received_requests().await.unwrap().is_empty());
    assert_eq!(app.count("SELECT count(*) FROM outbound_messages").await, 1);
    app.cleanup().await;
}
