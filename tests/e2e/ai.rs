//! `generate_ai_response` end to end: a signed inbound message starts the workflow, wiremock
//! stands in for an OpenAI-compatible chat-completions API, and the fake Graph API receives the
//! answer sent with `send_text`.

use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};
use wiremock::{
    Mock, MockServer, Request, Respond, ResponseTemplate,
    matchers::{header, method, path},
};

use super::{
    fake_graph,
    harness::{Options, TestApp, eventually, settle, spawn_app, text_body},
};

const CUSTOMER: &str = "+4915112345678";
const SYSTEM_PROMPT: &str = "You are the support assistant of ACME. Answer briefly.";
/// The API key's variable. The crate forbids `unsafe`, so a test cannot `set_var`: it names a
/// variable that cargo (and nextest) set for every test process, and expects its value.
const KEY_VAR: &str = "CARGO_PKG_NAME";

fn api_key() -> String {
    std::env::var(KEY_VAR).expect("cargo sets CARGO_PKG_NAME for test processes")
}

const AI_REPLY: &str = r#"
name: ai-reply
trigger:
  event: whatsapp.message_received
  filter: 'trigger.message_type == "text"'
steps:
  - generate_ai_response:
      id: ai
      assistant: support
      message: "{{ trigger.text }}"
      variables:
        customer_name: "{{ contact.name | default('unknown') }}"
  - send_text:
      text: "{{ steps.ai.response }}"
"#;

const UNKNOWN_ASSISTANT: &str = r#"
name: ai-unknown
trigger:
  event: whatsapp.message_received
steps:
  - generate_ai_response:
      id: ai
      assistant: sales
      message: "{{ trigger.text }}"
  - send_text:
      text: "{{ steps.ai.response }}"
"#;

fn assistants_yaml(llm: &MockServer) -> String {
    format!(
        r#"
assistants:
  support:
    base_url: {}/v1
    model: gpt-test
    system_prompt: "{SYSTEM_PROMPT}"
    api_key_env: {KEY_VAR}
    timeout: 5s
  billing:
    base_url: {}/v1
    model: gpt-test
    system_prompt: Billing.
    api_key_env: {KEY_VAR}
"#,
        llm.uri(),
        llm.uri()
    )
}

/// Answers like OpenAI's chat completions: `Answer <n> to: <last user message>`.
struct FakeLlm {
    calls: AtomicUsize,
    /// How long each answer takes.
    delay: std::time::Duration,
}

impl Respond for FakeLlm {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let body: Value = serde_json::from_slice(&request.body).unwrap_or_default();
        let last = body["messages"]
            .as_array()
            .and_then(|m| m.last())
            .and_then(|m| m["content"].as_str())
            .unwrap_or_default()
            .to_string();
        ResponseTemplate::new(200)
            .set_delay(self.delay)
            .set_body_json(json!({
                "id": format!("chatcmpl-{n}"),
                "object": "chat.completion",
                "model": body["model"],
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": format!("Answer {n} to: {last}")},
                    "finish_reason": "stop",
                }],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            }))
    }
}

fn completions() -> wiremock::MockBuilder {
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(header(
            "authorization",
            format!("Bearer {}", api_key()).as_str(),
        ))
}

/// A fake LLM that answers every request, and Herald with the fake Graph API.
async fn app_with_llm(workflow: &'static str, llm: ResponseOr) -> (TestApp, MockServer) {
    let server = MockServer::start().await;
    match llm {
        ResponseOr::Answer | ResponseOr::SlowAnswer => {
            let delay = match llm {
                ResponseOr::SlowAnswer => std::time::Duration::from_millis(800),
                _ => std::time::Duration::ZERO,
            };
            completions()
                .respond_with(FakeLlm {
                    calls: AtomicUsize::new(0),
                    delay,
                })
                .mount(&server)
                .await
        }
        ResponseOr::Fail(response) => completions().respond_with(response).mount(&server).await,
    }
    let app = spawn_app(Options {
        workflows: vec![workflow],
        graph: true,
        assistants_yaml: Some(assistants_yaml(&server)),
        ..Default::default()
    })
    .await;
    fake_graph::accept_all(app.graph.as_ref().unwrap()).await;
    (app, server)
}

enum ResponseOr {
    Answer,
    /// Answers, each after 800 ms.
    SlowAnswer,
    Fail(ResponseTemplate),
}

async fn llm_requests(server: &MockServer) -> Vec<Value> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap_or(Value::Null))
        .collect()
}

async fn completed_runs(app: &TestApp) -> i64 {
    app.count("SELECT count(*) FROM runs WHERE status = 'completed'")
        .await
}

/// Waits until `n` runs have completed.
async fn until_completed(app: &TestApp, n: i64) {
    eventually(&format!("{n} runs completed"), || async {
        completed_runs(app).await == n
    })
    .await;
}

async fn send(app: &TestApp, from: &str, text: &str, wamid: &str) {
    assert_eq!(
        app.post_webhook(&text_body(from, text, wamid))
            .await
            .status(),
        200
    );
}

/// The failed attempt of step `ai` (waits for it).
async fn failed_ai_attempt(app: &TestApp) -> Value {
    eventually("the ai step failed", || async {
        app.count("SELECT count(*) FROM step_attempts WHERE step_id = 'ai' AND state = 'failed'")
            .await
            >= 1
    })
    .await;
    sqlx::query_scalar(
        "SELECT error FROM step_attempts WHERE step_id = 'ai' AND state = 'failed'
         ORDER BY attempt LIMIT 1",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

/// After a failure: the run did not go on, nothing was sent and no history was stored.
async fn assert_nothing_sent_or_stored(app: &TestApp) {
    settle().await;
    assert_eq!(completed_runs(app).await, 0);
    assert!(app.sends().await.is_empty(), "nothing is sent");
    assert_eq!(app.count("SELECT count(*) FROM ai_messages").await, 0);
    let (status, error): (String, Option<Value>) = sqlx::query_as("SELECT status, error FROM runs")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    if status == "failed" {
        assert_eq!(error.unwrap()["step"], "ai");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_message_is_answered_by_the_assistant_and_the_answer_is_sent() {
    let (app, llm) = app_with_llm(AI_REPLY, ResponseOr::Answer).await;
    send(&app, CUSTOMER, "Where is my order?", "wamid.AI1").await;
    until_completed(&app, 1).await;

    let requests = llm_requests(&llm).await;
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0],
        json!({"model": "gpt-test", "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "system", "content": "Context: customer_name=Ana Souza"},
            {"role": "user", "content": "Where is my order?"},
        ]})
    );
    let sends = app.sends().await;
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0]["type"], "text");
    assert_eq!(sends[0]["to"], "4915112345678");
    assert_eq!(sends[0]["text"]["body"], "Answer 1 to: Where is my order?");

    let output: Value = sqlx::query_scalar(
        "SELECT output FROM step_attempts WHERE step_id = 'ai' AND state = 'succeeded'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(output["response"], "Answer 1 to: Where is my order?");
    assert_eq!(output["assistant"], "support");
    assert_eq!(output["model"], "gpt-test");
    let (conversation, customer): (uuid::Uuid, String) =
        sqlx::query_as("SELECT id, customer FROM ai_conversations WHERE assistant = 'support'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(output["conversation_id"], conversation.to_string());
    assert_eq!(
        customer, "4915112345678",
        "the default customer is trigger.customer_id"
    );
    let history: Vec<(String, String)> =
        sqlx::query_as("SELECT role, content FROM ai_messages ORDER BY id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        history,
        [
            ("user".to_string(), "Where is my order?".to_string()),
            (
                "assistant".to_string(),
                "Answer 1 to: Where is my order?".to_string()
            ),
        ]
    );
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_quick_messages_are_answered_in_order_and_the_second_sees_the_first_answer() {
    let (mut app, llm) = app_with_llm(AI_REPLY, ResponseOr::SlowAnswer).await;
    // Two worker processes' worth of workers: the order must hold across them.
    app.start_more(&[herald::app::Role::Worker]).await;
    const OTHER: &str = "+4915199999999";
    // Both messages of the customer arrive before the assistant has answered the first; a
    // message of another customer arrives meanwhile.
    send(&app, CUSTOMER, "first question", "wamid.O1").await;
    send(&app, CUSTOMER, "second question", "wamid.O2").await;
    send(&app, OTHER, "hello", "wamid.O3").await;
    until_completed(&app, 3).await;

    let requests = llm_requests(&llm).await;
    assert_eq!(requests.len(), 3);
    let last_text =
        |r: &Value| r["messages"].as_array().unwrap().last().unwrap()["content"].clone();
    // The second question went to the assistant only after the first was answered and sent:
    // it carries that exchange as history. Racing runs would have sent it without.
    let second = requests
        .iter()
        .position(|r| last_text(r) == "second question")
        .expect("the second question was asked");
    let history: Vec<Value> = requests[second]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].clone())
        .collect();
    assert!(history.contains(&json!("first question")), "{history:?}");
    assert!(
        history.iter().any(|c| c
            .as_str()
            .is_some_and(|c| c.ends_with("to: first question"))),
        "{history:?}"
    );
    // The other customer was not held back: their question did not wait for the second one.
    assert_eq!(
        second, 2,
        "the other customer's question came first: {requests:?}"
    );
    // The customer's answers went out in the order of the questions.
    let to_customer: Vec<String> = app
        .sends()
        .await
        .iter()
        .filter(|s| s["to"] == CUSTOMER.trim_start_matches('+'))
        .map(|s| s["text"]["body"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(to_customer.len(), 2, "{to_customer:?}");
    assert!(
        to_customer[0].ends_with("to: first question"),
        "{to_customer:?}"
    );
    assert!(
        to_customer[1].ends_with("to: second question"),
        "{to_customer:?}"
    );
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_message_of_the_same_customer_sends_the_history_and_another_customer_has_none() {
    let (app, llm) = app_with_llm(AI_REPLY, ResponseOr::Answer).await;
    send(&app, CUSTOMER, "Hi, I need help", "wamid.H1").await;
    until_completed(&app, 1).await;
    send(&app, CUSTOMER, "It is order 42", "wamid.H2").await;
    until_completed(&app, 2).await;

    let requests = llm_requests(&llm).await;
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[1]["messages"],
        json!([
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "system", "content": "Context: customer_name=Ana Souza"},
            {"role": "user", "content": "Hi, I need help"},
            {"role": "assistant", "content": "Answer 1 to: Hi, I need help"},
            {"role": "user", "content": "It is order 42"},
        ])
    );
    let bodies: Vec<Value> = app
        .sends()
        .await
        .iter()
        .map(|s| s["text"]["body"].clone())
        .collect();
    assert!(
        bodies.contains(&json!("Answer 2 to: It is order 42")),
        "{bodies:?}"
    );

    // Another customer starts a conversation of their own, without that history.
    send(&app, "+4915199999999", "Hello", "wamid.H3").await;
    until_completed(&app, 3).await;
    let requests = llm_requests(&llm).await;
    let last = &requests[2]["messages"];
    assert_eq!(last.as_array().unwrap().len(), 3, "{last}");
    assert_eq!(last[2]["content"], "Hello");
    assert_eq!(app.count("SELECT count(*) FROM ai_conversations").await, 2);
    assert_eq!(app.count("SELECT count(*) FROM ai_messages").await, 6);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_llm_server_error_fails_the_step_as_provider_error_and_nothing_is_sent() {
    let failure = ResponseTemplate::new(500).set_body_json(json!({
        "error": {"message": "The server had an error while processing your request.", "type": "server_error"}
    }));
    let (app, llm) = app_with_llm(AI_REPLY, ResponseOr::Fail(failure)).await;
    send(&app, CUSTOMER, "Hello?", "wamid.F1").await;

    let error = failed_ai_attempt(&app).await;
    assert_eq!(error["class"], "Provider error");
    assert_eq!(error["http_status"], 500);
    assert_eq!(error["retryable"], true);
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("HTTP 500"), "{message}");
    assert!(message.contains("The server had an error"), "{message}");
    assert!(!llm_requests(&llm).await.is_empty());
    assert_nothing_sent_or_stored(&app).await;
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_llm_429_is_rate_limited() {
    let failure = ResponseTemplate::new(429)
        .insert_header("retry-after", "20")
        .set_body_json(json!({
            "error": {"message": "Rate limit reached for requests", "type": "requests"}
        }));
    let (app, _llm) = app_with_llm(AI_REPLY, ResponseOr::Fail(failure)).await;
    send(&app, CUSTOMER, "Hello?", "wamid.R1").await;

    let error = failed_ai_attempt(&app).await;
    assert_eq!(error["class"], "Rate limited");
    assert_eq!(error["http_status"], 429);
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("Rate limit reached"), "{message}");
    assert_nothing_sent_or_stored(&app).await;
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_assistant_fails_the_run_naming_the_configured_ones() {
    let (app, llm) = app_with_llm(UNKNOWN_ASSISTANT, ResponseOr::Answer).await;
    send(&app, CUSTOMER, "Hello?", "wamid.U1").await;

    let error = failed_ai_attempt(&app).await;
    assert_eq!(error["class"], "Provider error");
    assert_eq!(
        error["message"],
        "Unknown assistant 'sales' (configured: billing, support)"
    );
    eventually("run failed", || async {
        app.count("SELECT count(*) FROM runs WHERE status = 'failed'")
            .await
            == 1
    })
    .await;
    let run_error: Value = sqlx::query_scalar("SELECT error FROM runs")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(
        run_error["message"]
            .as_str()
            .unwrap()
            .starts_with("Unknown assistant 'sales'"),
        "{run_error}"
    );
    assert!(llm_requests(&llm).await.is_empty(), "no LLM call");
    assert_nothing_sent_or_stored(&app).await;
    app.cleanup().await;
}
