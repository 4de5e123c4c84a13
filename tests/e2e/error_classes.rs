//! Each error class as Meta (or the network) reports it: the retryable ones fail the first call,
//! then succeed -> one send, one retry, the wait honoured; the permanent ones are not retried
//! and are notified at once.

use std::time::{Duration, Instant};

use serde_json::Value;
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{method, path},
};

use super::{
    fake_graph,
    harness::{Options, TestApp, eventually, runs_with_status, settle, spawn_app, text_body},
    retries::fail_first,
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

fn graph_error(code: i64, message: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"error": {
        "message": format!("(#{code}) {message}"), "type": "OAuthException", "code": code,
        "error_data": {"messaging_product": "whatsapp", "details": message},
        "fbtrace_id": "AbCdEf",
    }}))
    .unwrap()
}

async fn app(team: &MockServer) -> TestApp {
    spawn_app(Options {
        workflows: vec![GREET],
        graph: true,
        env: vec![
            ("HERALD_RETRY_WAIT", "2s".into()),
            ("HERALD_PROVIDER_TIMEOUT_MS", "700".into()),
            ("HERALD_SENDER_RECHECK", "1s".into()),
            ("HERALD_NOTIFY_WEBHOOK_URL", format!("{}/hook", team.uri())),
        ],
        ..Default::default()
    })
    .await
}

async fn team() -> MockServer {
    let team = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&team)
        .await;
    team
}

async fn attempts(app: &TestApp) -> Vec<(String, Option<String>)> {
    sqlx::query_as("SELECT state, error->>'class' FROM step_attempts ORDER BY attempt")
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

enum Failure {
    Answer(u16, Vec<u8>),
    Hang,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_retryable_error_class_fails_once_then_sends_once_after_the_wait() {
    let cases: Vec<(&str, Failure, &str)> = vec![
        (
            "5xx with a Graph code",
            Failure::Answer(500, graph_error(131000, "Something went wrong")),
            "Provider error",
        ),
        (
            "503 without a body",
            Failure::Answer(503, Vec::new()),
            "Provider error",
        ),
        (
            "an unknown Graph code",
            Failure::Answer(400, graph_error(999_999, "Brand new error")),
            "Provider error",
        ),
        ("a timeout", Failure::Hang, "Provider error"),
        (
            "sender not registered",
            Failure::Answer(400, graph_error(133010, "Account not registered")),
            "Sender offline",
        ),
    ];
    for (i, (what, failure, class)) in cases.into_iter().enumerate() {
        let team = team().await;
        let app = app(&team).await;
        let graph = app.graph.as_ref().unwrap();
        match failure {
            Failure::Answer(status, body) => fail_first(graph, 1, status, &body, None).await,
            Failure::Hang => fake_graph::first_send_hangs(graph, Duration::from_secs(5)).await,
        }
        let posted = Instant::now();
        let r = app
            .post_webhook(&text_body("+4915100000301", "hi", &format!("wamid.EC{i}")))
            .await;
        assert_eq!(r.status(), 200);
        eventually(what, || async {
            runs_with_status(&app, "completed").await == 1
        })
        .await;
        assert!(
            posted.elapsed() >= Duration::from_secs(2),
            "{what}: the 2 s wait was not honoured"
        );
        assert_eq!(
            attempts(&app).await,
            [
                ("failed".to_string(), Some(class.to_string())),
                ("succeeded".to_string(), None)
            ],
            "{what}"
        );
        settle().await;
        let calls = app.sends().await.len();
        assert_eq!(calls, 2, "{what}: one failed call and one send");
        assert_eq!(
            app.count("SELECT count(*) FROM outbound_messages").await,
            1,
            "{what}: one message sent"
        );
        assert!(
            team.received_requests().await.unwrap().is_empty(),
            "{what}: a recovered step notifies nobody"
        );
        app.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_permanent_error_class_is_not_retried_and_is_notified_at_once() {
    let cases: Vec<(i64, &str, &str)> = vec![
        (
            132001,
            "Template name does not exist in the translation",
            "Template not found",
        ),
        (131026, "Message undeliverable", "Invalid phone number"),
        (131047, "Re-engagement message", "Outside 24-hour window"),
        (131050, "User has stopped marketing messages", "Opted out"),
    ];
    for (i, (code, message, class)) in cases.into_iter().enumerate() {
        let team = team().await;
        let app = app(&team).await;
        fail_first(
            app.graph.as_ref().unwrap(),
            5,
            400,
            &graph_error(code, message),
            None,
        )
        .await;
        let started = Instant::now();
        let r = app
            .post_webhook(&text_body("+4915100000302", "hi", &format!("wamid.PE{i}")))
            .await;
        assert_eq!(r.status(), 200);
        eventually(class, || async {
            runs_with_status(&app, "failed").await == 1
        })
        .await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{class}: failed only after a retry wait"
        );
        eventually("the team is told", || async {
            !team.received_requests().await.unwrap().is_empty()
        })
        .await;
        settle().await;
        assert_eq!(
            attempts(&app).await,
            [("failed".to_string(), Some(class.to_string()))],
            "{class}"
        );
        assert_eq!(app.sends().await.len(), 1, "{class}: called once");
        let notes = team.received_requests().await.unwrap();
        assert_eq!(notes.len(), 1, "{class}: exactly one notification");
        let note: Value = serde_json::from_slice(&notes[0].body).unwrap();
        assert!(note.to_string().contains(class), "{class}: {note}");
        let letter: Value = sqlx::query_scalar("SELECT error FROM dead_letters")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        assert_eq!(letter["class"], class);
        assert_eq!(letter["provider_code"], code);
        app.cleanup().await;
    }
}
