//! The `/api/v1` API: bearer auth, JSON errors, and the OpenAPI document kept true: the served
//! document (generated from the handlers' types) is the committed `openapi.json`, and every
//! documented operation is called for real and its answer checked against the documented schema.

use serde_json::{Value, json};

use super::{
    dispatch::{API_TOKEN, api, app_with},
    harness::{Options, eventually, spawn_app, text_body},
};

const WELCOME: &str = r#"
name: welcome
description: Greets.
trigger:
  event: whatsapp.message_received
steps:
  - send_template:
      id: greet
      template: welcome_message
      language: en_US
      variables: ["{{ trigger.contact_name }}"]
"#;

/// Checks `body` against the schema the document gives for `method path` answering `status`.
fn check_against_document(doc: &Value, method: &str, path: &str, status: u16, body: &Value) {
    let operation = &doc["paths"][path][method];
    assert!(operation.is_object(), "{method} {path} is not documented");
    let mut schema =
        operation["responses"][status.to_string()]["content"]["application/json"]["schema"].clone();
    assert!(
        schema.is_object(),
        "{method} {path} does not document status {status}"
    );
    schema["components"] = doc["components"].clone();
    let validator = jsonschema::validator_for(&schema).expect("the documented schema compiles");
    let errors: Vec<String> = validator.iter_errors(body).map(|e| e.to_string()).collect();
    assert!(
        errors.is_empty(),
        "{method} {path} -> {status} does not match its schema: {errors:?}\n{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_documented_operation_answers_as_its_schema_says() {
    let app = app_with(vec![WELCOME, super::dispatch::SEND_ONE], vec![]).await;
    let doc: Value = app
        .http
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let committed: Value = serde_json::from_str(include_str!("../../openapi.json")).unwrap();
    assert!(
        doc == committed,
        "the served document differs from the committed openapi.json"
    );
    // Something to list: a run with a send, and a dispatch.
    let response = app
        .post_webhook(&text_body("+4915112345678", "hello", "wamid.api1"))
        .await;
    assert_eq!(response.status(), 200);
    eventually("the run completed", || async {
        app.count("SELECT count(*) FROM runs WHERE status = 'completed'")
            .await
            == 1
    })
    .await;
    let run_id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM runs")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let (status, created) = api(
        &app,
        "POST",
        "/api/v1/dispatches",
        Some(json!({"workflow": "announce", "to": ["+4915112345670", "+4915112345671", "+4915112345672", "bad"], "rate": 0.1})),
    )
    .await;
    assert_eq!(status, 201);
    let dispatch = created["id"].as_str().unwrap().to_string();
    check_against_document(&doc, "post", "/api/v1/dispatches", 201, &created);

    // (method, documented path, concrete path, body, expected status) for every operation.
    let yaml = WELCOME.to_string();
    let calls: Vec<(&str, &str, String, Option<Value>, u16)> = vec![
        (
            "get",
            "/api/v1/workflows",
            "/api/v1/workflows".into(),
            None,
            200,
        ),
        (
            "get",
            "/api/v1/workflows/{name}",
            "/api/v1/workflows/welcome".into(),
            None,
            200,
        ),
        (
            "get",
            "/api/v1/workflows/{name}",
            "/api/v1/workflows/nope".into(),
            None,
            404,
        ),
        (
            "post",
            "/api/v1/workflows/validate",
            "/api/v1/workflows/validate".into(),
            Some(Value::String(yaml)),
            200,
        ),
        (
            "get",
            "/api/v1/runs",
            "/api/v1/runs?workflow=welcome&limit=5".into(),
            None,
            200,
        ),
        (
            "get",
            "/api/v1/runs",
            "/api/v1/runs?status=sleepy".into(),
            None,
            400,
        ),
        (
            "get",
            "/api/v1/runs/{id}",
            format!("/api/v1/runs/{run_id}"),
            None,
            200,
        ),
        (
            "get",
            "/api/v1/runs/{id}",
            "/api/v1/runs/0000dead".into(),
            None,
            404,
        ),
        (
            "get",
            "/api/v1/events",
            "/api/v1/events?type=whatsapp.message_received".into(),
            None,
            200,
        ),
        (
            "get",
            "/api/v1/events",
            "/api/v1/events?type=whatsapp.nope".into(),
            None,
            400,
        ),
        (
            "get",
            "/api/v1/dispatches",
            "/api/v1/dispatches".into(),
            None,
            200,
        ),
        (
            "get",
            "/api/v1/dispatches/{id}",
            format!("/api/v1/dispatches/{dispatch}"),
            None,
            200,
        ),
        (
            "get",
            "/api/v1/dispatches/{id}/contacts",
            format!("/api/v1/dispatches/{dispatch}/contacts?state=failed"),
            None,
            200,
        ),
        (
            "post",
            "/api/v1/dispatches/{id}/pause",
            format!("/api/v1/dispatches/{dispatch}/pause"),
            None,
            200,
        ),
        (
            "post",
            "/api/v1/dispatches/{id}/resume",
            format!("/api/v1/dispatches/{dispatch}/resume"),
            None,
            200,
        ),
        (
            "post",
            "/api/v1/dispatches/{id}/cancel",
            format!("/api/v1/dispatches/{dispatch}/cancel"),
            None,
            200,
        ),
        (
            "post",
            "/api/v1/dispatches/{id}/cancel",
            format!("/api/v1/dispatches/{dispatch}/cancel"),
            None,
            409,
        ),
        (
            "post",
            "/api/v1/dispatches",
            "/api/v1/dispatches".into(),
            Some(json!({"workflow": "nope", "to": []})),
            422,
        ),
        (
            "post",
            "/api/v1/contacts",
            "/api/v1/contacts".into(),
            Some(
                json!({"phone": "+4915199990001", "name": "Ana", "fields": {"plan": "pro"}, "groups": ["vip"]}),
            ),
            201,
        ),
        (
            "post",
            "/api/v1/contacts",
            "/api/v1/contacts".into(),
            Some(json!({"phone": "+4915199990001"})),
            409,
        ),
        (
            "post",
            "/api/v1/contacts",
            "/api/v1/contacts".into(),
            Some(json!({"phone": "0151 9999"})),
            422,
        ),
        (
            "get",
            "/api/v1/contacts",
            "/api/v1/contacts?group=vip".into(),
            None,
            200,
        ),
        (
            "get",
            "/api/v1/contacts",
            "/api/v1/contacts?group=no%20spaces".into(),
            None,
            400,
        ),
        (
            "get",
            "/api/v1/contacts/{contact}",
            "/api/v1/contacts/+4915199990001".into(),
            None,
            200,
        ),
        (
            "get",
            "/api/v1/contacts/{contact}",
            "/api/v1/contacts/+4915199990009".into(),
            None,
            404,
        ),
        (
            "get",
            "/api/v1/contacts/{contact}",
            "/api/v1/contacts/not-a-phone".into(),
            None,
            422,
        ),
        (
            "patch",
            "/api/v1/contacts/{contact}",
            "/api/v1/contacts/+4915199990001".into(),
            Some(json!({"name": "Ana Souza", "add_groups": ["berlin"], "opted_out": true})),
            200,
        ),
        (
            "patch",
            "/api/v1/contacts/{contact}",
            "/api/v1/contacts/+4915199990001".into(),
            Some(json!({"nickname": "x"})),
            422,
        ),
        (
            "post",
            "/api/v1/contacts/import",
            "/api/v1/contacts/import?group=imported".into(),
            Some(Value::String(
                "phone,name,city\n+4915199990002,Bo,Berlin\nnot-a-phone,Cy,Rome\n".into(),
            )),
            200,
        ),
        (
            "post",
            "/api/v1/contacts/import",
            "/api/v1/contacts/import".into(),
            Some(Value::String("name\nBo\n".into())),
            422,
        ),
        ("get", "/api/v1/groups", "/api/v1/groups".into(), None, 200),
        (
            "post",
            "/api/v1/groups",
            "/api/v1/groups".into(),
            Some(json!({"name": "newsletter", "description": "Monthly news"})),
            201,
        ),
        (
            "post",
            "/api/v1/groups",
            "/api/v1/groups".into(),
            Some(json!({"name": "bad name!"})),
            422,
        ),
        (
            "get",
            "/api/v1/groups/{name}",
            "/api/v1/groups/vip".into(),
            None,
            200,
        ),
        (
            "get",
            "/api/v1/groups/{name}",
            "/api/v1/groups/nobody".into(),
            None,
            404,
        ),
        (
            "post",
            "/api/v1/groups/{name}/members",
            "/api/v1/groups/newsletter/members".into(),
            Some(json!({"add": ["+4915199990003", "+4915199990001"]})),
            200,
        ),
        (
            "get",
            "/api/v1/groups/{name}/contacts",
            "/api/v1/groups/newsletter/contacts".into(),
            None,
            200,
        ),
        (
            "delete",
            "/api/v1/groups/{name}",
            "/api/v1/groups/newsletter".into(),
            None,
            200,
        ),
        (
            "delete",
            "/api/v1/contacts/{contact}",
            "/api/v1/contacts/+4915199990003".into(),
            None,
            200,
        ),
        (
            "delete",
            "/api/v1/contacts/{contact}",
            "/api/v1/contacts/+4915199990003".into(),
            None,
            404,
        ),
    ];
    let mut covered = std::collections::BTreeSet::new();
    for (method, documented, concrete, body, expected) in &calls {
        let mut request = app
            .http
            .request(method.to_uppercase().parse().unwrap(), app.url(concrete))
            .bearer_auth(API_TOKEN);
        request = match body {
            Some(Value::String(text)) => request.body(text.clone()),
            Some(json) => request.json(json),
            None => request,
        };
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.expect("a JSON answer");
        assert_eq!(status, *expected, "{method} {concrete}: {body}");
        check_against_document(&doc, method, documented, status, &body);
        covered.insert(format!("{method} {documented}"));
    }
    // The calls above cover every documented operation.
    let documented: std::collections::BTreeSet<String> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| format!("{m} {path}"))
        })
        .collect();
    assert_eq!(covered, documented, "operations not exercised by this test");
    // The check can fail: a dispatch without its fields does not match the schema.
    let result = std::panic::catch_unwind(|| {
        check_against_document(
            &doc,
            "get",
            "/api/v1/dispatches/{id}",
            200,
            &json!({"id": 5}),
        )
    });
    assert!(result.is_err(), "a wrong body passed the schema check");
    // Workflows validate: a broken file answers with its line.
    let (status, verdict) = {
        let r = app
            .http
            .post(app.url("/api/v1/workflows/validate"))
            .bearer_auth(API_TOKEN)
            .body("name: x\ntrigger:\n  event: whatsapp.nope\nsteps: []\n")
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(status, 200);
    assert_eq!(verdict["valid"], false);
    assert!(
        verdict["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("whatsapp.nope")
    );
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_requests_without_the_right_bearer_token() {
    let app = app_with(vec![WELCOME], vec![]).await;
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Basic dGVzdA=="),
        Some(API_TOKEN),
    ] {
        let mut request = app.http.get(app.url("/api/v1/runs"));
        if let Some(a) = auth {
            request = request.header("authorization", a);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{auth:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "unauthorized");
        assert!(!body.to_string().contains(API_TOKEN), "the token leaked");
    }
    let (status, _) = api(&app, "GET", "/api/v1/runs", None).await;
    assert_eq!(status, 200);
    // An unknown route under /api/v1 is a JSON 404.
    let (status, body) = api(&app, "GET", "/api/v1/nothing-here", None).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_real_credentials_and_no_api_token_the_api_is_off() {
    let app = spawn_app(Options {
        workflows: vec![WELCOME],
        graph: true,
        ..Options::default()
    })
    .await;
    let response = app
        .http
        .get(app.url("/api/v1/workflows"))
        .bearer_auth(herald::config::SANDBOX_API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("HERALD_API_TOKEN")
    );
    app.cleanup().await;
}

/// PostgreSQL stores no NUL character in text: such input is refused at the edge, not answered
/// with a 503 as if the database were down (schemathesis found the PATCH case).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_with_a_nul_character_is_refused_and_not_answered_as_an_outage() {
    let app = app_with(vec![WELCOME], vec![]).await;
    let (status, _) = api(
        &app,
        "POST",
        "/api/v1/contacts",
        Some(json!({"phone": "+4915199990001"})),
    )
    .await;
    assert_eq!(status, 201);
    let (status, body) = api(
        &app,
        "PATCH",
        "/api/v1/contacts/+4915199990001",
        Some(json!({"fields": {"note": "a\u{0}b"}})),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (422, Some("invalid_body"))
    );
    let (status, body) = api(&app, "GET", "/api/v1/runs?workflow=a%00b", None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_query"))
    );
    let (status, body) = api(&app, "GET", "/api/v1/runs/a%00b", None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_path"))
    );
    let response = app
        .http
        .post(app.url("/api/v1/contacts/import"))
        .bearer_auth(API_TOKEN)
        .body(b"phone,name\n+4915199990002,A\0B\n".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_csv");
    // Nothing was stored from any of them.
    assert_eq!(
        app.count("SELECT count(*) FROM contacts WHERE fields <> '{}' OR name IS NOT NULL")
            .await,
        0
    );
    app.cleanup().await;
}
