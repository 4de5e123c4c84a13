//! The template catalog at run time: templates.yaml seeds it, the Graph API's template list
//! (two pages) syncs it and a failed sync keeps it, a status webhook pauses a template; a send
//! of an unknown, not approved or wrongly parameterised template fails "Template not found"
//! before Meta is called.

use herald::domain::EventType;
use serde_json::{Value, json};
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{header, method, path, query_param, query_param_is_missing},
};

use super::{
    fake_graph,
    harness::{ACCESS_TOKEN, Options, TestApp, eventually, runs_with_status, settle, spawn_app},
};

const WABA: &str = "102290129340398";

const TEMPLATES: &str = "templates:
  - name: welcome_message
    language: en_US
    category: utility
    body_parameters: 1
  - name: old_promo
    language: en_US
    category: marketing
    status: paused
";

/// One workflow per case, started by a call-ended event whose `case` names it.
fn case(name: &'static str, template: &str, variables: &str) -> &'static str {
    Box::leak(
        format!(
            r#"
name: {name}
trigger:
  event: call.ended
  filter: 'trigger.case == "{name}"'
steps:
  - send_template:
      id: send
      sender: "113355779900224"
      template: {template}
      language: en_US
      variables: {variables}
"#
        )
        .into_boxed_str(),
    )
}

async fn start(app: &TestApp, case: &str, n: u32) {
    let phone = format!("+49151000002{n:02}");
    app.publish_event(
        EventType::CallEnded,
        "calls",
        Some(phone.trim_start_matches('+')),
        json!({"call_id": format!("{case}-{n}"), "customer_phone": phone, "case": case}),
    )
    .await;
}

async fn dead_letter_message(app: &TestApp, workflow: &str) -> Value {
    let error: Value = sqlx::query_scalar(
        "SELECT error FROM dead_letters WHERE workflow = $1 ORDER BY created_at DESC LIMIT 1",
    )
    .bind(workflow)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(error["class"], "Template not found", "{error}");
    assert_eq!(error["retryable"], false, "{error}");
    error["message"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paused_and_miscounted_templates_fail_template_not_found_without_calling_meta() {
    let app = spawn_app(Options {
        workflows: vec![
            case("unknown", "no_such_template", "[]"),
            case("paused", "old_promo", "[]"),
            case("miscounted", "welcome_message", r#"["a", "b"]"#),
            case("named", "welcome_message", "{ name: Ana }"),
            case("good", "welcome_message", r#"["Ana"]"#),
        ],
        graph: true,
        templates_yaml: Some(TEMPLATES.into()),
        ..Default::default()
    })
    .await;
    fake_graph::accept_all(app.graph.as_ref().unwrap()).await;
    for (n, c) in ["unknown", "paused", "miscounted", "named", "good"]
        .into_iter()
        .enumerate()
    {
        start(&app, c, n as u32).await;
    }
    eventually("four dead letters and one send", || async {
        app.count("SELECT count(*) FROM dead_letters").await == 4
            && runs_with_status(&app, "completed").await == 1
    })
    .await;
    assert_eq!(
        dead_letter_message(&app, "unknown").await,
        "Template not found: 'no_such_template' (en_US) is unknown to the template catalog"
    );
    assert_eq!(
        dead_letter_message(&app, "paused").await,
        "Template not found: 'old_promo' (en_US) has status PAUSED, not APPROVED"
    );
    assert_eq!(
        dead_letter_message(&app, "miscounted").await,
        "Template not found: 'welcome_message' (en_US) expects 1 body variables, the step gives 2"
    );
    assert_eq!(
        dead_letter_message(&app, "named").await,
        "Template not found: 'welcome_message' (en_US) expects 1 body variables, the step gives the named [\"name\"]"
    );
    let sends = app.sends().await;
    assert_eq!(sends.len(), 1, "only the good one reached Meta: {sends:?}");
    assert_eq!(sends[0]["template"]["name"], "welcome_message");
    assert_eq!(
        app.count("SELECT count(*) FROM step_attempts WHERE state = 'failed'")
            .await,
        4,
        "none retried"
    );
    app.cleanup().await;
}

fn template_status_webhook(event: &str, name: &str, language: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": WABA, "time": 1763900000, "changes": [{
            "field": "message_template_status_update",
            "value": {
                "event": event, "message_template_id": 1689556908129832_u64,
                "message_template_name": name, "message_template_language": language,
                "reason": "NONE", "message_template_category": "UTILITY",
                "other_info": {"title": "FIRST_PAUSE", "description": "Low quality"}
            }
        }]}]
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_webhook_pausing_a_template_makes_the_next_send_fail_before_meta_and_reinstating_it_lets_it_go()
 {
    let app = spawn_app(Options {
        workflows: vec![case("greet", "welcome_message", r#"["Ana"]"#)],
        graph: true,
        templates_yaml: Some(TEMPLATES.into()),
        ..Default::default()
    })
    .await;
    fake_graph::accept_all(app.graph.as_ref().unwrap()).await;
    start(&app, "greet", 1).await;
    eventually("first send", || async { app.sends().await.len() == 1 }).await;

    let paused = template_status_webhook("PAUSED", "welcome_message", "en-US");
    assert_eq!(app.post_webhook(&paused).await.status(), 200);
    let status: String =
        sqlx::query_scalar("SELECT status FROM templates WHERE name = 'welcome_message'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(status, "PAUSED", "moved by the same statement as the event");
    assert_eq!(
        app.count("SELECT count(*) FROM events WHERE type = 'whatsapp.template_status'")
            .await,
        1
    );

    start(&app, "greet", 2).await;
    eventually("dead letter", || async {
        app.count("SELECT count(*) FROM dead_letters").await == 1
    })
    .await;
    assert_eq!(
        dead_letter_message(&app, "greet").await,
        "Template not found: 'welcome_message' (en_US) has status PAUSED, not APPROVED"
    );
    settle().await;
    assert_eq!(app.sends().await.len(), 1, "Meta was not called");

    let reinstated = template_status_webhook("REINSTATED", "welcome_message", "en_US");
    assert_eq!(app.post_webhook(&reinstated).await.status(), 200);
    start(&app, "greet", 3).await;
    eventually("sent again", || async { app.sends().await.len() == 2 }).await;
    app.cleanup().await;
}

fn listed(name: &str, status: &str, category: &str, body: &str) -> Value {
    json!({
        "name": name, "language": "en_US", "status": status, "category": category,
        "id": format!("id-{name}"),
        "components": [
            {"type": "HEADER", "format": "TEXT", "text": "Hello"},
            {"type": "BODY", "text": body},
            {"type": "BUTTONS", "buttons": [{"type": "QUICK_REPLY", "text": "Stop"}]}
        ]
    })
}

async fn mount_template_list(graph: &MockServer) {
    let list = || {
        Mock::given(method("GET"))
            .and(path(format!("/{WABA}/message_templates")))
            .and(header(
                "authorization",
                format!("Bearer {ACCESS_TOKEN}").as_str(),
            ))
    };
    list()
        .and(query_param_is_missing("after"))
        .and(query_param("limit", "100"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "data": [
                listed("welcome_message", "APPROVED", "UTILITY", "Hi {{1}}, welcome!"),
                listed("spring_sale", "REJECTED", "MARKETING", "Sale! {{1}}"),
            ],
            "paging": {
                "cursors": {"before": "QVFIUmJl", "after": "QVFIUmFm"},
                "next": format!("https://graph.facebook.com/v24.0/{WABA}/message_templates?limit=100&after=QVFIUmFm")
            }
        })))
        .mount(graph)
        .await;
    list()
        .and(query_param("after", "QVFIUmFm"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "data": [
                listed("order_update", "APPROVED", "UTILITY", "Order {{1}} ships {{2}}."),
            ],
            "paging": {"cursors": {"before": "QVFIUmFn", "after": "QVFIUmFo"}}
        })))
        .mount(graph)
        .await;
}

type Row = (String, String, String, i32, String);

async fn catalog(app: &TestApp) -> Vec<Row> {
    sqlx::query_as(
        "SELECT name, status, category, body_parameters, source FROM templates ORDER BY name",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

async fn list_requests(graph: &MockServer) -> usize {
    graph
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path().ends_with("/message_templates"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_graph_template_list_is_synced_over_its_pages_and_a_failed_sync_keeps_the_catalog() {
    let app = spawn_app(Options {
        workflows: vec![
            case("order", "order_update", r#"["A-17", "today"]"#),
            case("sale", "spring_sale", r#"["x"]"#),
        ],
        graph: true,
        templates_yaml: Some(TEMPLATES.into()),
        env: vec![
            ("WHATSAPP_BUSINESS_ACCOUNT_ID", WABA.into()),
            ("HERALD_TEMPLATE_SYNC_INTERVAL", "1s".into()),
        ],
        ..Default::default()
    })
    .await;
    // The first sync ran before the fake knew the list (a 404: logged, nothing changed); the
    // next ones read it.
    let graph = app.graph.as_ref().unwrap();
    mount_template_list(graph).await;
    fake_graph::accept_all(graph).await;
    let expected: Vec<Row> = vec![
        (
            "old_promo".into(),
            "PAUSED".into(),
            "MARKETING".into(),
            0,
            "config".into(),
        ),
        (
            "order_update".into(),
            "APPROVED".into(),
            "UTILITY".into(),
            2,
            "graph".into(),
        ),
        (
            "spring_sale".into(),
            "REJECTED".into(),
            "MARKETING".into(),
            1,
            "graph".into(),
        ),
        (
            "welcome_message".into(),
            "APPROVED".into(),
            "UTILITY".into(),
            1,
            "graph".into(),
        ),
    ];
    eventually("both pages synced", || async {
        catalog(&app).await == expected
    })
    .await;

    // A synced template goes; a rejected one fails before Meta.
    start(&app, "order", 1).await;
    start(&app, "sale", 2).await;
    eventually("one send, one dead letter", || async {
        app.sends().await.len() == 1 && app.count("SELECT count(*) FROM dead_letters").await == 1
    })
    .await;
    assert_eq!(app.sends().await[0]["template"]["name"], "order_update");
    assert_eq!(
        dead_letter_message(&app, "sale").await,
        "Template not found: 'spring_sale' (en_US) has status REJECTED, not APPROVED"
    );

    // Meta's list fails: the sync logs it and the last known catalog stays.
    Mock::given(method("GET"))
        .and(path(format!("/{WABA}/message_templates")))
        .respond_with(ResponseTemplate::new(500).set_body_json(json!({
            "error": {"message": "An unknown error occurred", "type": "OAuthException", "code": 1}
        })))
        .with_priority(1)
        .mount(graph)
        .await;
    let before = list_requests(graph).await;
    eventually("two failed syncs", || async {
        list_requests(graph).await >= before + 2
    })
    .await;
    assert_eq!(catalog(&app).await, expected);
    start(&app, "order", 3).await;
    eventually("still sends", || async { app.sends().await.len() == 2 }).await;
    app.cleanup().await;
}
