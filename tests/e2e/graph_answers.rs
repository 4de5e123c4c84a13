//! A 2xx from the Graph API is a send that happened, even when its answer cannot be read: the
//! step succeeds with an unknown wamid and the message is never sent again.

use serde_json::Value;
use wiremock::{
    Mock, ResponseTemplate,
    matchers::{method, path_regex},
};

use super::harness::{Options, eventually, runs_with_status, settle, spawn_app, text_body};

const GREET: &str = r#"
name: greet
trigger:
  event: whatsapp.message_received
steps:
  - send_text:
      id: greet
      text: "hello {{ trigger.text }}"
"#;

async fn a_2xx_answer_is_one_send(status: u16, body: &'static [u8], phone: &str) {
    let app = spawn_app(Options {
        workflows: vec![GREET],
        graph: true,
        env: vec![("HERALD_RETRY_WAIT", "1s".into())],
        ..Default::default()
    })
    .await;
    Mock::given(method("POST"))
        .and(path_regex(r"^/\d+/messages$"))
        .respond_with(ResponseTemplate::new(status).set_body_raw(body.to_vec(), "application/json"))
        .mount(app.graph.as_ref().unwrap())
        .await;
    let wamid = format!("wamid.GA{}", &phone[1..]);
    assert_eq!(
        app.post_webhook(&text_body(phone, "there", &wamid))
            .await
            .status(),
        200
    );
    eventually("the run completes", || async {
        runs_with_status(&app, "completed").await == 1
    })
    .await;
    // Longer than the retry wait: a retry would have reached the fake by now.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    settle().await;
    assert_eq!(
        app.sends().await.len(),
        1,
        "exactly one request reached Meta"
    );
    let attempts: Vec<(String, Value)> =
        sqlx::query_as("SELECT state, output FROM step_attempts ORDER BY attempt")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(attempts.len(), 1, "no retry: {attempts:?}");
    assert_eq!(attempts[0].0, "succeeded");
    let message_id = attempts[0].1["message_id"].as_str().unwrap_or_default();
    assert!(message_id.starts_with("unknown."), "{message_id}");
    let recorded: String =
        sqlx::query_scalar("SELECT wamid FROM outbound_messages WHERE recipient LIKE '%' || $1")
            .bind(&phone[1..])
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        recorded, message_id,
        "the outbound message is recorded as sent"
    );
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_with_an_empty_object_is_recorded_as_sent_and_never_retried() {
    a_2xx_answer_is_one_send(200, b"{}", "+4915100000401").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_with_a_garbage_body_is_recorded_as_sent_and_never_retried() {
    a_2xx_answer_is_one_send(200, b"\x00<html>oops", "+4915100000402").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_201_with_an_empty_message_id_is_recorded_as_sent_and_never_retried() {
    a_2xx_answer_is_one_send(201, br#"{"messages": [{"id": ""}]}"#, "+4915100000403").await;
}
