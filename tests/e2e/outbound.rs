//! Outbound calls cannot reach inside: `http_request` and assistants refuse loopback, private,
//! link-local and metadata addresses (literal, resolved, or behind a redirect) unless
//! `HERALD_HTTP_ALLOW` lists them; redirects are off unless a step asks; customer text cannot
//! change a URL's shape; credentials never show in what is recorded.
//!
//! The harness allows 127.0.0.1 (its fakes listen there); tests of the guard itself clear the
//! allow list or set their own.

use serde_json::{Value, json};
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{method, path},
};

use super::harness::{Options, TestApp, eventually, spawn_app, text_body};

/// A workflow text with `{base}` replaced (the fake's port is only known at run time).
fn workflow(yaml: &str, base: &str) -> &'static str {
    Box::leak(yaml.replace("{base}", base).into_boxed_str())
}

async fn app(workflow: &'static str, allow: &str) -> TestApp {
    spawn_app(Options {
        workflows: vec![workflow],
        env: vec![("HERALD_HTTP_ALLOW", allow.to_string())],
        ..Default::default()
    })
    .await
}

/// Sends one inbound message with `text` and waits for the run to finish; returns its status.
async fn run_once(app: &TestApp, text: &str) -> String {
    assert_eq!(
        app.post_webhook(&text_body("+4915112345678", text, "wamid.O1"))
            .await
            .status(),
        200
    );
    eventually("the run finished", || async {
        app.count("SELECT count(*) FROM runs WHERE status IN ('completed', 'failed')")
            .await
            == 1
    })
    .await;
    sqlx::query_scalar("SELECT status FROM runs")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// Every attempt of a step, oldest first: (state, input, error).
async fn attempts(app: &TestApp, step_id: &str) -> Vec<(String, Value, Value)> {
    let rows: Vec<(String, Option<Value>, Option<Value>)> = sqlx::query_as(
        "SELECT state, input, error FROM step_attempts WHERE step_id = $1 ORDER BY attempt",
    )
    .bind(step_id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(s, i, e)| (s, i.unwrap_or(Value::Null), e.unwrap_or(Value::Null)))
        .collect()
}

/// The one attempt of a step that failed for good, with its dead letter: the error.
async fn refused(app: &TestApp, step_id: &str) -> Value {
    let all = attempts(app, step_id).await;
    assert_eq!(all.len(), 1, "a refused call is not retried: {all:?}");
    let (state, _, error) = &all[0];
    assert_eq!(state, "failed");
    assert_eq!(error["class"], "Provider error", "{error}");
    assert_eq!(error["retryable"], false, "{error}");
    assert_eq!(app.count("SELECT count(*) FROM dead_letters").await, 1);
    error.clone()
}

const CALL: &str = r#"
name: call
trigger:
  event: whatsapp.message_received
steps:
  - http_request:
      id: crm
      url: "{base}/leads"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_to_the_loopback_without_the_allow_list_is_refused_for_good() {
    let fake = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": true})))
        .mount(&fake)
        .await;
    let app = app(workflow(CALL, &fake.uri()), "").await;

    assert_eq!(run_once(&app, "hi").await, "failed");
    let error = refused(&app, "crm").await;
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("127.0.0.1"), "{message}");
    assert!(message.contains("HERALD_HTTP_ALLOW"), "{message}");
    assert!(
        fake.received_requests().await.unwrap().is_empty(),
        "the fake was called"
    );
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostname_that_resolves_to_the_loopback_is_refused() {
    let fake = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&fake)
        .await;
    let base = format!("http://localhost:{}", fake.address().port());
    let app = app(workflow(CALL, &base), "").await;

    assert_eq!(run_once(&app, "hi").await, "failed");
    let error = refused(&app, "crm").await;
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("localhost"), "{message}");
    assert!(message.contains("HERALD_HTTP_ALLOW"), "{message}");
    assert!(fake.received_requests().await.unwrap().is_empty());
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_on_the_allow_list_is_called() {
    let fake = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/leads"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": true})))
        .expect(1)
        .mount(&fake)
        .await;
    let base = format!("http://localhost:{}", fake.address().port());
    let app = app(workflow(CALL, &base), "localhost").await;

    assert_eq!(run_once(&app, "hi").await, "completed");
    fake.verify().await;
    app.cleanup().await;
}

const FOLLOWING: &str = r#"
name: following
trigger:
  event: whatsapp.message_received
steps:
  - http_request:
      id: crm
      url: "{base}/start"
      follow_redirects: true
      headers: { Authorization: "Bearer s3cret", X-Api-Key: s3cret, X-Trace: t-1 }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_the_metadata_address_is_refused() {
    let fake = MockServer::start().await;
    Mock::given(path("/start"))
        .respond_with(
            ResponseTemplate::new(302)
                .insert_header("location", "http://169.254.169.254/latest/meta-data/"),
        )
        .mount(&fake)
        .await;
    let app = app(workflow(FOLLOWING, &fake.uri()), "127.0.0.1").await;

    assert_eq!(run_once(&app, "hi").await, "failed");
    let error = refused(&app, "crm").await;
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("169.254.169.254"), "{message}");
    assert!(message.contains("HERALD_HTTP_ALLOW"), "{message}");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_not_followed_unless_the_step_asks() {
    let fake = MockServer::start().await;
    Mock::given(path("/leads"))
        .respond_with(ResponseTemplate::new(302).insert_header("location", "/moved"))
        .mount(&fake)
        .await;
    Mock::given(path("/moved"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&fake)
        .await;
    let app = app(workflow(CALL, &fake.uri()), "127.0.0.1").await;

    assert_eq!(run_once(&app, "hi").await, "failed");
    let all = attempts(&app, "crm").await;
    let (_, _, error) = &all[0];
    assert_eq!(error["http_status"], 302, "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("follow_redirects"), "{message}");
    fake.verify().await;
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_another_origin_drops_credential_headers() {
    let first = MockServer::start().await;
    let other = MockServer::start().await;
    Mock::given(path("/start"))
        .respond_with(ResponseTemplate::new(302).insert_header("location", "/same"))
        .mount(&first)
        .await;
    Mock::given(path("/same"))
        .respond_with(
            ResponseTemplate::new(307).insert_header("location", format!("{}/end", other.uri())),
        )
        .mount(&first)
        .await;
    Mock::given(path("/end"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"done": true})))
        .mount(&other)
        .await;
    let app = app(workflow(FOLLOWING, &first.uri()), "127.0.0.1").await;

    assert_eq!(run_once(&app, "hi").await, "completed");
    let same = first.received_requests().await.unwrap();
    let same = same.iter().find(|r| r.url.path() == "/same").unwrap();
    assert_eq!(same.headers["authorization"], "Bearer s3cret");
    assert_eq!(same.headers["x-api-key"], "s3cret");
    let end = other.received_requests().await.unwrap();
    assert_eq!(end.len(), 1);
    assert_eq!(end[0].headers["x-trace"], "t-1");
    assert!(
        !end[0].headers.contains_key("authorization"),
        "{:?}",
        end[0].headers
    );
    assert!(
        !end[0].headers.contains_key("x-api-key"),
        "{:?}",
        end[0].headers
    );
    app.cleanup().await;
}

const SEARCH: &str = r#"
name: search
trigger:
  event: whatsapp.message_received
steps:
  - http_request:
      id: crm
      url: "{base}/search/{{ trigger.text }}?q={{ trigger.text }}&page=1"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_text_in_a_url_cannot_add_parameters_or_path_segments() {
    let fake = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&fake)
        .await;
    let app = app(workflow(SEARCH, &fake.uri()), "127.0.0.1").await;
    let text = "a/../b?admin=1&page=9#x";

    assert_eq!(run_once(&app, text).await, "completed");
    let received = fake.received_requests().await.unwrap();
    assert_eq!(received.len(), 1);
    let url = &received[0].url;
    assert_eq!(url.path(), "/search/a%2F..%2Fb%3Fadmin%3D1%26page%3D9%23x");
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    assert_eq!(
        pairs,
        vec![
            ("q".to_string(), text.to_string()),
            ("page".to_string(), "1".to_string())
        ]
    );
    app.cleanup().await;
}

const SECRETS: &str = r#"
name: secrets
trigger:
  event: whatsapp.message_received
steps:
  - http_request:
      id: crm
      url: "{base}/leads?api_key=s3cret-query&page=2&access_token=s3cret-token"
      headers: { X-Api-Key: s3cret-header, Accept: application/json }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_the_url_and_headers_never_show_in_the_history_or_dead_letters() {
    let fake = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(404).set_body_string("no such lead"))
        .mount(&fake)
        .await;
    let app = app(workflow(SECRETS, &fake.uri()), "127.0.0.1").await;

    assert_eq!(run_once(&app, "hi").await, "failed");
    // The call itself carried them.
    let received = fake.received_requests().await.unwrap();
    assert_eq!(
        received[0].url.query(),
        Some("api_key=s3cret-query&page=2&access_token=s3cret-token")
    );
    assert_eq!(received[0].headers["x-api-key"], "s3cret-header");

    let all = attempts(&app, "crm").await;
    let (_, input, error) = &all[0];
    assert!(!input.to_string().contains("s3cret"), "{input}");
    assert!(!error.to_string().contains("s3cret"), "{error}");
    let url = input["url"].as_str().unwrap();
    assert!(
        url.ends_with("/leads?api_key=***&page=2&access_token=***"),
        "{url}"
    );
    assert_eq!(input["headers"]["x-api-key"], "***");
    assert_eq!(input["headers"]["accept"], "application/json");

    let letter: Value = sqlx::query_scalar("SELECT to_jsonb(d) FROM dead_letters d")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(letter["input"]["url"].is_string(), "{letter}");
    assert!(!letter.to_string().contains("s3cret"), "{letter}");

    let run_id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM runs")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let shown = app
        .http
        .get(app.url(&format!("/api/v1/runs/{run_id}")))
        .bearer_auth(herald::config::SANDBOX_API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(shown.status(), 200);
    let shown = shown.text().await.unwrap();
    assert!(shown.contains("api_key=***"), "{shown}");
    assert!(!shown.contains("s3cret"), "{shown}");
    app.cleanup().await;
}

const AI: &str = r#"
name: ai
trigger:
  event: whatsapp.message_received
steps:
  - generate_ai_response:
      id: ai
      assistant: support
      message: "{{ trigger.text }}"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assistant_on_an_inside_address_is_refused_without_the_allow_list() {
    let llm = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"choices": [{"message": {"role": "assistant", "content": "hello"}}]}),
        ))
        .mount(&llm)
        .await;
    let app = spawn_app(Options {
        workflows: vec![AI],
        env: vec![("HERALD_HTTP_ALLOW", String::new())],
        assistants_yaml: Some(format!(
            "assistants:\n  support:\n    base_url: http://localhost:{}/v1\n    model: m\n    \
             system_prompt: s\n    api_key_env: CARGO_PKG_NAME\n",
            llm.address().port()
        )),
        ..Default::default()
    })
    .await;

    assert_eq!(run_once(&app, "hi").await, "failed");
    let error = refused(&app, "ai").await;
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("localhost"), "{message}");
    assert!(message.contains("HERALD_HTTP_ALLOW"), "{message}");
    assert!(llm.received_requests().await.unwrap().is_empty());
    app.cleanup().await;
}
