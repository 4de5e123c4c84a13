//! Opt-out keywords end to end: STOP (any configured keyword, the whole message) marks the
//! contact opted out as the message is stored and the example workflow confirms it; START opts
//! back in; an opted-out contact gets no marketing template ("Opted out", a dead letter, not
//! retried) while utility templates still go.

use herald::domain::EventType;
use serde_json::{Value, json};

use super::{
    fake_graph,
    harness::{Options, TestApp, eventually, runs_with_status, settle, spawn_app, text_body},
};

const PHONE: &str = "+5511987650042";

const TEMPLATES: &str = "templates:
  - name: weekly_promo
    language: pt_BR
    category: marketing
  - name: order_receipt
    language: pt_BR
    category: utility
    body_parameters: 1
";

/// A call-ended follow-up that sends a utility receipt, then a marketing promotion.
const FOLLOW_UP: &str = r#"
name: follow-up
trigger:
  event: call.ended
steps:
  - send_template:
      id: receipt
      sender: "113355779900224"
      template: order_receipt
      language: pt_BR
      variables: ["{{ trigger.order_id }}"]
  - send_template:
      id: promo
      sender: "113355779900224"
      template: weekly_promo
      language: pt_BR
"#;

async fn opted_out(app: &TestApp, phone: &str) -> Option<bool> {
    sqlx::query_scalar("SELECT opted_out FROM contacts WHERE phone = $1")
        .bind(phone)
        .fetch_optional(&app.pool)
        .await
        .unwrap()
}

async fn texts(app: &TestApp) -> Vec<String> {
    app.sends()
        .await
        .iter()
        .filter_map(|s| s["text"]["body"].as_str().map(str::to_string))
        .collect()
}

async fn last_opt_out_in_events(app: &TestApp) -> Value {
    sqlx::query_scalar(
        "SELECT cloudevent->'data'->'opt_out' FROM events
         WHERE type = 'whatsapp.message_received' ORDER BY received_at DESC LIMIT 1",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_opts_the_contact_out_with_a_confirmation_and_start_opts_back_in() {
    let app = spawn_app(Options {
        workflows: vec![include_str!("../../workflows/opt-out-confirmation.yaml")],
        graph: true,
        ..Default::default()
    })
    .await;
    fake_graph::accept_all(app.graph.as_ref().unwrap()).await;

    let status = app
        .post_webhook(&text_body(PHONE, "  stop ", "wamid.OPT1"))
        .await
        .status();
    assert_eq!(status, 200);
    eventually("opt-out confirmed", || async {
        runs_with_status(&app, "completed").await == 1
    })
    .await;
    assert_eq!(opted_out(&app, PHONE).await, Some(true));
    assert_eq!(last_opt_out_in_events(&app).await, json!("opted_out"));
    assert_eq!(
        texts(&app).await,
        ["You won't get marketing messages from us any more. Reply START to subscribe again."]
    );
    assert_eq!(app.sends().await[0]["to"], "5511987650042");

    // A sentence that contains the keyword is not a keyword: nothing changes, no confirmation.
    app.post_webhook(&text_body(PHONE, "please stop calling", "wamid.OPT2"))
        .await;
    settle().await;
    assert_eq!(opted_out(&app, PHONE).await, Some(true));
    assert_eq!(last_opt_out_in_events(&app).await, Value::Null);
    assert_eq!(app.count("SELECT count(*) FROM runs").await, 1);

    app.post_webhook(&text_body(PHONE, "Start", "wamid.OPT3"))
        .await;
    eventually("opt-in confirmed", || async {
        runs_with_status(&app, "completed").await == 2
    })
    .await;
    assert_eq!(opted_out(&app, PHONE).await, Some(false));
    assert_eq!(
        texts(&app).await[1],
        "Welcome back! You'll get our messages again. Reply STOP to unsubscribe."
    );

    // A repeated delivery of the STOP message changes nothing again (one event, one run).
    app.post_webhook(&text_body(PHONE, "  stop ", "wamid.OPT1"))
        .await;
    settle().await;
    assert_eq!(opted_out(&app, PHONE).await, Some(false));
    assert_eq!(app.count("SELECT count(*) FROM runs").await, 2);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_keywords_replace_the_defaults() {
    let app = spawn_app(Options {
        env: vec![
            ("HERALD_OPT_OUT_KEYWORDS", "BAJA".into()),
            ("HERALD_OPT_IN_KEYWORDS", "ALTA".into()),
        ],
        ..Default::default()
    })
    .await;
    app.post_webhook(&text_body(PHONE, "stop", "wamid.KW1"))
        .await;
    eventually("contact stored", || async {
        opted_out(&app, PHONE).await.is_some()
    })
    .await;
    assert_eq!(
        opted_out(&app, PHONE).await,
        Some(false),
        "STOP is not configured"
    );
    app.post_webhook(&text_body(PHONE, "baja", "wamid.KW2"))
        .await;
    eventually("opted out by BAJA", || async {
        opted_out(&app, PHONE).await == Some(true)
    })
    .await;
    app.post_webhook(&text_body(PHONE, "alta", "wamid.KW3"))
        .await;
    eventually("opted in by ALTA", || async {
        opted_out(&app, PHONE).await == Some(false)
    })
    .await;
    app.cleanup().await;
}

async fn call_ended(app: &TestApp, phone: &str, order: &str) {
    app.publish_event(
        EventType::CallEnded,
        "calls",
        Some(phone.trim_start_matches('+')),
        json!({"call_id": order, "customer_phone": phone, "order_id": order}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opted_out_contact_gets_the_utility_template_but_not_the_marketing_one() {
    let app = spawn_app(Options {
        workflows: vec![FOLLOW_UP],
        graph: true,
        templates_yaml: Some(TEMPLATES.into()),
        env: vec![("HERALD_RETRY_WAIT", "1s".into())],
        ..Default::default()
    })
    .await;
    fake_graph::accept_all(app.graph.as_ref().unwrap()).await;
    // The contact unsubscribes on WhatsApp (no workflow answers here).
    app.post_webhook(&text_body(PHONE, "PARAR", "wamid.OPT10"))
        .await;
    eventually("opted out", || async {
        opted_out(&app, PHONE).await == Some(true)
    })
    .await;

    call_ended(&app, PHONE, "A-1").await;
    eventually("promo dead-lettered", || async {
        app.count("SELECT count(*) FROM dead_letters").await == 1
    })
    .await;
    let sends = app.sends().await;
    assert_eq!(sends.len(), 1, "only the receipt: {sends:?}");
    assert_eq!(sends[0]["template"]["name"], "order_receipt");
    let (step, error, attempts): (String, Value, i32) =
        sqlx::query_as("SELECT step_id, error, attempts FROM dead_letters")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(step, "promo");
    assert_eq!(error["class"], "Opted out");
    assert_eq!(error["retryable"], false);
    assert_eq!(
        error["message"],
        "Opted out: +5511987650042 unsubscribed; the marketing template 'weekly_promo' (pt_BR) was not sent"
    );
    assert_eq!(attempts, 1, "not retried");
    assert_eq!(runs_with_status(&app, "failed").await, 1);

    // Someone who did not opt out gets both.
    call_ended(&app, "+5511987650043", "A-2").await;
    eventually("both sent", || async { app.sends().await.len() == 3 }).await;
    assert_eq!(app.sends().await[2]["template"]["name"], "weekly_promo");
    assert_eq!(app.sends().await[2]["to"], "5511987650043");
    app.cleanup().await;
}
