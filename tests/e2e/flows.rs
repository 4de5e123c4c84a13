//! Templates with header and button parameters (a FLOW button among them), and `send_flow`'s
//! interactive Flow message: the exact JSON the fake Graph API receives.

use serde_json::{Value, json};

use super::{
    fake_graph,
    harness::{Options, TestApp, eventually, runs_with_status, settle, spawn_app, text_body},
};

async fn graph_app(workflows: Vec<&'static str>) -> TestApp {
    let app = spawn_app(Options {
        workflows,
        graph: true,
        ..Default::default()
    })
    .await;
    fake_graph::accept_all(app.graph.as_ref().unwrap()).await;
    app
}

async fn run_id(app: &TestApp) -> String {
    sqlx::query_scalar("SELECT id::text FROM runs")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

async fn succeeded_output(app: &TestApp) -> Value {
    sqlx::query_scalar("SELECT output FROM step_attempts WHERE state = 'succeeded'")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

async fn run_error(app: &TestApp) -> Value {
    sqlx::query_scalar("SELECT error FROM runs")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

const SURVEY_TEMPLATE: &str = r#"
name: csat-template
trigger:
  event: whatsapp.message_received
steps:
  - send_template:
      id: survey
      template: csat_survey
      language: pt-BR
      recipient_name: "{{ trigger.contact_name }}"
      header:
        text: "{{ trigger.contact_name }}"
      variables: ["{{ trigger.text }}"]
      buttons:
        - quick_reply: CALLBACK_YES
        - url: "order/{{ trigger.message_id }}"
        - flow:
            flow_action_data: { customer: "{{ trigger.contact_name }}", channel: whatsapp }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_sends_header_body_quick_reply_url_and_flow_button_parameters() {
    let app = graph_app(vec![SURVEY_TEMPLATE]).await;
    assert_eq!(
        app.post_webhook(&text_body("+5511987650001", "call ended", "wamid.TPL1"))
            .await
            .status(),
        200
    );
    eventually("run completed", || async {
        runs_with_status(&app, "completed").await == 1
    })
    .await;
    let token = format!("{}.survey", run_id(&app).await);
    let sends = app.sends().await;
    assert_eq!(sends.len(), 1);
    assert_eq!(
        sends[0],
        json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": "5511987650001",
            "type": "template",
            "template": {
                "name": "csat_survey",
                "language": {"policy": "deterministic", "code": "pt_BR"},
                "components": [
                    {"type": "header", "parameters": [{"type": "text", "text": "Ana Souza"}]},
                    {"type": "body", "parameters": [{"type": "text", "text": "call ended"}]},
                    {"type": "button", "sub_type": "quick_reply", "index": "0",
                     "parameters": [{"type": "payload", "payload": "CALLBACK_YES"}]},
                    {"type": "button", "sub_type": "url", "index": "1",
                     "parameters": [{"type": "text", "text": "order/wamid.TPL1"}]},
                    {"type": "button", "sub_type": "flow", "index": "2",
                     "parameters": [{"type": "action", "action": {
                         "flow_token": token,
                         "flow_action_data": {"customer": "Ana Souza", "channel": "whatsapp"},
                     }}]},
                ],
            },
        })
    );
    let output = succeeded_output(&app).await;
    assert_eq!(output["flow_token"], token);
    assert_eq!(output["recipient_name"], "Ana Souza");
    assert!(
        output["message_id"]
            .as_str()
            .unwrap()
            .starts_with("wamid.FAKE")
    );
    let kind: String = sqlx::query_scalar("SELECT kind FROM outbound_messages")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(kind, "template");
    app.cleanup().await;
}

const RATE_CALL: &str = r#"
name: rate-call
trigger:
  event: whatsapp.message_received
steps:
  - send_flow:
      id: rate
      flow_id: "1234567890"
      header: Quick survey
      body: "Hi {{ trigger.contact_name }}, how was your call?"
      cta: Rate now
      footer: Takes 30 seconds
      screen: RATING
      data: { customer: "{{ trigger.contact_name }}" }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_flow_inside_the_window_sends_an_interactive_flow_message() {
    let app = graph_app(vec![RATE_CALL]).await;
    // The inbound message opens the window that the answer is sent in.
    assert_eq!(
        app.post_webhook(&text_body("+4915112345678", "hi", "wamid.FLOW1"))
            .await
            .status(),
        200
    );
    eventually("run completed", || async {
        runs_with_status(&app, "completed").await == 1
    })
    .await;
    let token = format!("{}.rate", run_id(&app).await);
    let sends = app.sends().await;
    assert_eq!(sends.len(), 1);
    assert_eq!(
        sends[0],
        json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": "4915112345678",
            "type": "interactive",
            "interactive": {
                "type": "flow",
                "header": {"type": "text", "text": "Quick survey"},
                "body": {"text": "Hi Ana Souza, how was your call?"},
                "footer": {"text": "Takes 30 seconds"},
                "action": {"name": "flow", "parameters": {
                    "flow_message_version": "3",
                    "flow_id": "1234567890",
                    "flow_cta": "Rate now",
                    "flow_token": token,
                    "mode": "published",
                    "flow_action": "navigate",
                    "flow_action_payload": {"screen": "RATING", "data": {"customer": "Ana Souza"}},
                }},
            },
        })
    );
    let output = succeeded_output(&app).await;
    let wamid = output["message_id"].as_str().unwrap().to_string();
    assert_eq!(
        output,
        json!({"message_id": wamid, "to": "+4915112345678", "flow_token": token})
    );
    let (kind, recipient, stored): (String, String, String) =
        sqlx::query_as("SELECT kind, recipient, wamid FROM outbound_messages")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        (kind.as_str(), recipient.as_str(), stored.as_str()),
        ("flow", "+4915112345678", wamid.as_str())
    );
    app.cleanup().await;
}

const FLOW_TO_STRANGER: &str = r#"
name: flow-stranger
trigger:
  event: whatsapp.message_received
steps:
  - send_flow:
      to: "+4915100000001"
      flow_name: csat
      body: Rate your call
      cta: Rate now
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_flow_outside_the_24_hour_window_fails_and_sends_nothing() {
    let app = graph_app(vec![FLOW_TO_STRANGER]).await;
    assert_eq!(
        app.post_webhook(&text_body("+4915112345678", "hi", "wamid.FLOWOW"))
            .await
            .status(),
        200
    );
    eventually("run failed", || async {
        runs_with_status(&app, "failed").await == 1
    })
    .await;
    let error = run_error(&app).await;
    assert_eq!(error["class"], "Outside 24-hour window");
    let message = error["message"].as_str().unwrap();
    assert!(message.starts_with("Outside 24-hour window"), "{message}");
    assert!(message.contains("+4915100000001"), "{message}");
    settle().await;
    assert!(app.sends().await.is_empty());
    assert_eq!(app.count("SELECT count(*) FROM outbound_messages").await, 0);
    app.cleanup().await;
}

const LONG_CTA: &str = r#"
name: flow-long-cta
trigger:
  event: whatsapp.message_received
steps:
  - send_flow:
      flow_id: "1234567890"
      body: Rate your call
      cta: "{{ trigger.text }}"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_cta_over_30_characters_fails_the_run_with_a_clear_message() {
    // Written in the workflow, it is caught when the workflow loads, with its line.
    let written = LONG_CTA.replace("\"{{ trigger.text }}\"", "Tell us how your call went today");
    let errors =
        herald::workflow::parse_workflow(std::path::Path::new("long.yaml"), &written).unwrap_err();
    assert_eq!(errors[0].line, Some(7), "{}", errors[0]);
    assert!(
        errors[0]
            .reason
            .contains("`cta` is 32 characters (\"Tell us how your call went today\"); WhatsApp allows at most 30"),
        "{}",
        errors[0]
    );

    // Rendered from the run's data, it fails the run before anything is sent.
    let app = graph_app(vec![LONG_CTA]).await;
    assert_eq!(
        app.post_webhook(&text_body(
            "+4915112345678",
            "Tell us how your call went today",
            "wamid.LONGCTA"
        ))
        .await
        .status(),
        200
    );
    eventually("run failed", || async {
        runs_with_status(&app, "failed").await == 1
    })
    .await;
    let error = run_error(&app).await;
    assert_eq!(
        error["message"],
        "send_flow: `cta` is 32 characters (\"Tell us how your call went today\"); WhatsApp allows at most 30"
    );
    settle().await;
    assert!(app.sends().await.is_empty());
    assert_eq!(app.count("SELECT count(*) FROM outbound_messages").await, 0);
    app.cleanup().await;
}
