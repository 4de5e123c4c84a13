//! A step's own `retry:` wins over its workflow's and the global policy: its attempts and wait
//! decide how often and how soon a failed send is tried again.

use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{method, path_regex},
};

use super::{
    fake_graph,
    harness::{Options, TestApp, eventually, runs_with_status, settle, spawn_app, text_body},
};

const SERVER_ERROR: &[u8] = br#"{"error": {"message": "(#131000) Something went wrong", "type": "OAuthException", "code": 131000}}"#;

/// The workflow says 2 attempts a minute apart; the step says otherwise.
fn workflow(step_retry: &str) -> &'static str {
    Box::leak(
        format!(
            r#"
name: greet
trigger:
  event: whatsapp.message_received
retry: {{ attempts: 2, wait: 1m }}
steps:
  - send_text:
      id: greet
      text: "Hello!"
      retry: {step_retry}
"#
        )
        .into_boxed_str(),
    )
}

/// The first `n` sends fail with a retryable server error; later ones are accepted.
async fn fail_first(graph: &MockServer, n: u64) {
    Mock::given(method("POST"))
        .and(path_regex(r"^/\d+/messages$"))
        .respond_with(
            ResponseTemplate::new(500).set_body_raw(SERVER_ERROR.to_vec(), "application/json"),
        )
        .up_to_n_times(n)
        .with_priority(1)
        .mount(graph)
        .await;
    fake_graph::accept_all(graph).await;
}

async fn attempt_states(app: &TestApp) -> Vec<String> {
    sqlx::query_scalar("SELECT state FROM step_attempts ORDER BY attempt")
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_retry_of_four_attempts_a_second_apart_sends_once_after_three_failures() {
    let app = spawn_app(Options {
        workflows: vec![workflow("{ attempts: 4, wait: 1s }")],
        graph: true,
        ..Default::default()
    })
    .await;
    fail_first(app.graph.as_ref().unwrap(), 3).await;
    app.post_webhook(&text_body("+4915100000301", "hi", "wamid.SR1"))
        .await;
    // The workflow's one-minute wait would not finish within the 20 s this allows.
    eventually("sent after three retries", || async {
        runs_with_status(&app, "completed").await == 1
    })
    .await;
    assert_eq!(
        attempt_states(&app).await,
        ["failed", "failed", "failed", "succeeded"]
    );
    assert_eq!(
        app.sends().await.len(),
        4,
        "three failed calls and one accepted"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM outbound_messages").await,
        1,
        "sent once"
    );
    assert_eq!(app.count("SELECT count(*) FROM dead_letters").await, 0);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_retry_of_zero_attempts_dead_letters_at_the_first_failure() {
    let app = spawn_app(Options {
        workflows: vec![workflow("{ attempts: 0, wait: 1s }")],
        graph: true,
        ..Default::default()
    })
    .await;
    fail_first(app.graph.as_ref().unwrap(), 3).await;
    app.post_webhook(&text_body("+4915100000302", "hi", "wamid.SR2"))
        .await;
    eventually("dead letter", || async {
        app.count("SELECT count(*) FROM dead_letters").await == 1
    })
    .await;
    settle().await;
    assert_eq!(attempt_states(&app).await, ["failed"]);
    assert_eq!(
        app.count("SELECT count(*) FROM timers").await,
        0,
        "no retry timer"
    );
    assert_eq!(runs_with_status(&app, "failed").await, 1);
    app.cleanup().await;
}
