//! `http_request`, `notify` and `update_contact` end to end: a signed inbound message starts the
//! workflow; wiremock stands in for the CRM and for the team's Slack-compatible webhook.

use std::time::Duration;

use herald::{domain::PhoneNumber, ingress::simulate::text_message_body};
use serde_json::{Value, json};
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{body_json, header, method, path},
};

use super::harness::{Options, SENDER, TestApp, eventually, spawn_app};

const CUSTOMER: &str = "+4915112345678";

fn text_body(text: &str, wamid: &str) -> Vec<u8> {
    let phone = PhoneNumber::parse(CUSTOMER).unwrap();
    text_message_body(&phone, "Ana", text, SENDER, wamid)
}

/// A workflow text with `{base}` replaced (the fake's port is only known at run time).
fn workflow(yaml: &str, base: &str) -> &'static str {
    Box::leak(yaml.replace("{base}", base).into_boxed_str())
}

async fn app_with(workflow: &'static str, webhook: Option<String>) -> TestApp {
    let env = match webhook {
        Some(url) => vec![("HERALD_NOTIFY_WEBHOOK_URL", url)],
        None => Vec::new(),
    };
    spawn_app(Options {
        workflows: vec![workflow],
        env,
        ..Default::default()
    })
    .await
}

/// Sends one inbound message and waits for the run to finish; returns its status.
async fn run_once(app: &TestApp, text: &str) -> String {
    assert_eq!(
        app.post_webhook(&text_body(text, "wamid.M1"))
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

/// The last attempt of a step: (state, input, output, error).
async fn attempt(app: &TestApp, step_id: &str) -> (String, Value, Value, Value) {
    let row: (String, Option<Value>, Option<Value>, Option<Value>) = sqlx::query_as(
        "SELECT state, input, output, error FROM step_attempts WHERE step_id = $1
         ORDER BY attempt DESC LIMIT 1",
    )
    .bind(step_id)
    .fetch_one(&app.pool)
    .await
    .unwrap_or_else(|e| panic!("no attempt of {step_id}: {e}"));
    (
        row.0,
        row.1.unwrap_or(Value::Null),
        row.2.unwrap_or(Value::Null),
        row.3.unwrap_or(Value::Null),
    )
}

/// The JSON bodies the fake received on `path`.
async fn received(server: &MockServer, on: &str) -> Vec<Value> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.url.path() == on)
        .map(|r| serde_json::from_slice(&r.body).unwrap_or(Value::Null))
        .collect()
}

const CRM: &str = r#"
name: crm
trigger:
  event: whatsapp.message_received
steps:
  - http_request:
      id: lookup
      url: "{base}/customers/{{ trigger.customer_id }}"
      headers: { Authorization: "Bearer tok-{{ trigger.customer_id }}", Accept: application/json }
      timeout: 2s
  - http_request:
      id: crm
      method: POST
      url: "{base}/leads"
      headers: { X-Source: herald }
      body:
        name: "{{ contact.name }}"
        source: whatsapp
        message: "{{ trigger.text }}"
        plan: "{{ steps.lookup.body.plan }}"
        tags: [inbound, "{{ trigger.message_type }}"]
        score: 3
  - notify:
      id: tell
      text: "New lead {{ steps.crm.body.lead_id }} for {{ steps.lookup.body.owner }} ({{ trigger.customer_phone }})"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_request_sends_rendered_requests_and_later_steps_read_the_response() {
    let fake = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/customers/4915112345678"))
        .and(header("authorization", "Bearer tok-4915112345678"))
        .and(header("accept", "application/json"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"plan": "gold", "owner": "Rita"})),
        )
        .expect(1)
        .mount(&fake)
        .await;
    Mock::given(method("POST"))
        .and(path("/leads"))
        .and(header("x-source", "herald"))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({
            "name": "Ana", "source": "whatsapp", "message": "hello", "plan": "gold",
            "tags": ["inbound", "text"], "score": 3
        })))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"lead_id": "L-1"})))
        .expect(1)
        .mount(&fake)
        .await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .mount(&fake)
        .await;
    let app = app_with(
        workflow(CRM, &fake.uri()),
        Some(format!("{}/hook", fake.uri())),
    )
    .await;

    assert_eq!(run_once(&app, "hello").await, "completed");

    let (state, input, output, _) = attempt(&app, "lookup").await;
    assert_eq!(state, "succeeded");
    assert_eq!(output["status"], 200);
    assert_eq!(output["body"]["owner"], "Rita");
    assert_eq!(output["text"], Value::Null);
    assert_eq!(output["headers"]["content-type"], "application/json");
    // The history never shows a credential.
    assert_eq!(input["headers"]["authorization"], "***");
    assert!(!input.to_string().contains("tok-"), "{input}");
    assert_eq!(input["timeout_ms"], 2000);

    let (_, input, output, _) = attempt(&app, "crm").await;
    assert_eq!(output["status"], 201);
    assert_eq!(output["body"], json!({"lead_id": "L-1"}));
    assert_eq!(input["body"]["plan"], "gold");

    let hooks = received(&fake, "/hook").await;
    assert_eq!(
        hooks,
        vec![json!({"text": "New lead L-1 for Rita (+4915112345678)"})]
    );
    let (_, _, output, _) = attempt(&app, "tell").await;
    assert_eq!(
        output,
        json!({"delivered": "webhook", "text": "New lead L-1 for Rita (+4915112345678)"})
    );
    fake.verify().await;
    app.cleanup().await;
}

const FAILING: &str = r#"
name: failing-crm
trigger:
  event: whatsapp.message_received
steps:
  - http_request:
      id: crm
      method: PUT
      url: "{base}/leads/{{ trigger.customer_id }}"
      body: { text: "{{ trigger.text }}" }
      timeout: 1s
  - notify:
      text: "never reached"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_error_fails_the_step_as_provider_error() {
    let fake = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path("/leads/4915112345678"))
        .respond_with(ResponseTemplate::new(500).set_body_string("database is down"))
        .mount(&fake)
        .await;
    let app = app_with(workflow(FAILING, &fake.uri()), None).await;

    assert_eq!(
        app.post_webhook(&text_body("hi", "wamid.E1"))
            .await
            .status(),
        200
    );
    eventually("the step failed", || async {
        app.count("SELECT count(*) FROM step_attempts WHERE state = 'failed'")
            .await
            >= 1
    })
    .await;
    let (state, _, _, error) = attempt(&app, "crm").await;
    assert_eq!(state, "failed");
    assert_eq!(error["class"], "Provider error");
    assert_eq!(error["http_status"], 500);
    assert_eq!(error["retryable"], true);
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("HTTP 500"), "{message}");
    assert!(message.contains("database is down"), "{message}");
    assert_eq!(
        app.count("SELECT count(*) FROM step_attempts WHERE step_type = 'notify'")
            .await,
        0,
        "the run stops at the failed step"
    );
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_outlasts_its_timeout_fails_as_provider_error() {
    let fake = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"ok": true}))
                .set_delay(Duration::from_secs(4)),
        )
        .mount(&fake)
        .await;
    let app = app_with(workflow(FAILING, &fake.uri()), None).await;

    let started = std::time::Instant::now();
    assert_eq!(
        app.post_webhook(&text_body("hi", "wamid.T1"))
            .await
            .status(),
        200
    );
    eventually("the step failed", || async {
        app.count("SELECT count(*) FROM step_attempts WHERE state = 'failed'")
            .await
            >= 1
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the 1s timeout cut the call short: {:?}",
        started.elapsed()
    );
    let (_, _, _, error) = attempt(&app, "crm").await;
    assert_eq!(error["class"], "Provider error");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("did not answer within 1s"), "{message}");
    app.cleanup().await;
}

const RATE_LIMITED: &str = r#"
name: busy-crm
trigger:
  event: whatsapp.message_received
steps:
  - http_request:
      id: crm
      url: "{base}/busy"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_rate_limited() {
    let fake = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/busy"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "30"))
        .mount(&fake)
        .await;
    let app = app_with(workflow(RATE_LIMITED, &fake.uri()), None).await;
    assert_eq!(
        app.post_webhook(&text_body("hi", "wamid.R1"))
            .await
            .status(),
        200
    );
    eventually("the step failed", || async {
        app.count("SELECT count(*) FROM step_attempts WHERE state = 'failed'")
            .await
            >= 1
    })
    .await;
    let (_, _, _, error) = attempt(&app, "crm").await;
    assert_eq!(error["class"], "Rate limited");
    assert_eq!(error["http_status"], 429);
    app.cleanup().await;
}

const NOTIFY: &str = r#"
name: notify-team
trigger:
  event: whatsapp.message_received
steps:
  - notify:
      id: tell
      text: "{{ contact.name }} ({{ trigger.customer_phone }}) wrote: {{ trigger.text }}"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_posts_slack_json_to_the_team_webhook() {
    let fake = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .and(header("content-type", "application/json"))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .expect(1)
        .mount(&fake)
        .await;
    let app = app_with(NOTIFY, Some(format!("{}/hook", fake.uri()))).await;

    assert_eq!(run_once(&app, "I need help").await, "completed");
    let text = "Ana (+4915112345678) wrote: I need help";
    assert_eq!(
        received(&fake, "/hook").await,
        vec![json!({ "text": text })]
    );
    let (_, input, output, _) = attempt(&app, "tell").await;
    assert_eq!(input, json!({ "text": text }));
    assert_eq!(output, json!({"delivered": "webhook", "text": text}));
    fake.verify().await;
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_without_a_webhook_only_logs_and_succeeds() {
    let app = app_with(NOTIFY, None).await;
    assert_eq!(run_once(&app, "hi").await, "completed");
    let (_, _, output, _) = attempt(&app, "tell").await;
    assert_eq!(
        output,
        json!({"delivered": "log", "text": "Ana (+4915112345678) wrote: hi"})
    );
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_team_webhook_fails_the_step() {
    let fake = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(404).set_body_string("no_service"))
        .mount(&fake)
        .await;
    let app = app_with(NOTIFY, Some(format!("{}/hook", fake.uri()))).await;
    assert_eq!(run_once(&app, "hi").await, "failed");
    let (_, _, _, error) = attempt(&app, "tell").await;
    assert_eq!(error["class"], "Provider error");
    assert_eq!(error["http_status"], 404);
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("no_service"), "{message}");
    assert!(
        !message.contains(&fake.uri()),
        "the webhook URL is a secret: {message}"
    );
    app.cleanup().await;
}

const CONTACT: &str = r#"
name: qualify
trigger:
  event: whatsapp.message_received
steps:
  - update_contact:
      id: first
      fields: { city: "{{ trigger.text }}", plan: silver, visits: 1 }
      add_groups: [cold, leads]
  - update_contact:
      id: save
      name: "Ana Maria"
      fields: { plan: gold }
      add_groups: [vip, leads]
      remove_groups: [cold]
      opted_out: true
  - update_contact:
      id: referral
      contact: "+4915100000001"
      add_groups: [referrals]
  - notify:
      id: tell
      text: "{{ contact.name }} in {{ contact.fields.city }} is {{ contact.fields.plan }}, groups {{ contact.groups | join(',') }}, opted out: {{ 'yes' if contact.opted_out else 'no' }}"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_contact_sets_name_merges_fields_changes_groups_and_opt_out() {
    let app = app_with(CONTACT, None).await;
    assert_eq!(run_once(&app, "Lisbon").await, "completed");

    let (name, phone, fields, groups, opted_out): (
        Option<String>,
        Option<String>,
        Value,
        Vec<String>,
        bool,
    ) = sqlx::query_as(
        "SELECT name, phone, fields, groups, opted_out FROM contacts WHERE customer_id = '4915112345678'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(name.as_deref(), Some("Ana Maria"));
    assert_eq!(phone.as_deref(), Some(CUSTOMER));
    assert_eq!(
        fields,
        json!({"city": "Lisbon", "plan": "gold", "visits": 1})
    );
    assert_eq!(groups, vec!["leads", "vip"]);
    assert!(opted_out);

    let (_, input, output, _) = attempt(&app, "save").await;
    assert_eq!(input["contact"], "4915112345678");
    assert_eq!(
        output,
        json!({"id": "4915112345678", "name": "Ana Maria", "phone": CUSTOMER,
               "fields": {"city": "Lisbon", "plan": "gold", "visits": 1},
               "groups": ["leads", "vip"], "opted_out": true})
    );

    // Another contact named by number is created.
    let (phone, groups): (Option<String>, Vec<String>) =
        sqlx::query_as("SELECT phone, groups FROM contacts WHERE customer_id = '4915100000001'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(phone.as_deref(), Some("+4915100000001"));
    assert_eq!(groups, vec!["referrals"]);

    // A later step sees the updated contact.
    let (_, _, output, _) = attempt(&app, "tell").await;
    assert_eq!(
        output["text"],
        "Ana Maria in Lisbon is gold, groups leads,vip, opted out: yes"
    );
    app.cleanup().await;
}
