//! The call webhook (`POST /webhooks/calls`) end to end: authentication, validation, one event
//! per call, the contact, the example workflows, outages, and `herald simulate call-ended`.

use std::process::Command;

use herald::ingress::signature;
use serde_json::{Value, json};

use super::{
    fake_graph,
    harness::{Options, SENDER, TestApp, eventually, runs_with_status, settle, spawn_app},
};

const TOKEN: &str = "test-calls-token";
const SECRET: &str = "test-calls-secret";
const SANDBOX_SENDER: &str = "100000000000001";

/// Sends on the trigger's sender (no `sender:` in the step).
const THANK_CALLER: &str = r#"
name: thank-caller
trigger:
  event: call.ended
steps:
  - send_template:
      template: call_thanks
      language: en_US
      variables: ["{{ trigger.customer_name }}"]
"#;

async fn graph_app(workflows: Vec<&'static str>, env: Vec<(&'static str, String)>) -> TestApp {
    let app = spawn_app(Options {
        workflows,
        graph: true,
        env,
        ..Default::default()
    })
    .await;
    fake_graph::accept_all(app.graph.as_ref().unwrap()).await;
    app
}

fn token_env() -> Vec<(&'static str, String)> {
    vec![("HERALD_CALLS_TOKEN", TOKEN.into())]
}

async fn post_call(app: &TestApp, token: &str, body: &Value) -> reqwest::Response {
    app.http
        .post(app.url("/webhooks/calls"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("post call")
}

async fn post_raw(app: &TestApp, headers: &[(&str, String)], body: &[u8]) -> reqwest::Response {
    let mut request = app
        .http
        .post(app.url("/webhooks/calls"))
        .header("content-type", "application/json");
    for (k, v) in headers {
        request = request.header(*k, v);
    }
    request.body(body.to_vec()).send().await.expect("post call")
}

fn call(call_id: &str, phone: &str, outcome: &str) -> Value {
    json!({
        "call_id": call_id, "customer_phone": phone, "customer_name": "Ana Souza",
        "agent_name": "Dr. Bruno", "outcome": outcome, "duration_seconds": 184,
        "ended_at": "2026-11-23T14:05:00Z"
    })
}

async fn nothing_stored(app: &TestApp) {
    assert_eq!(app.count("SELECT count(*) FROM events").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM contacts").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM outbox").await, 0);
}

fn templates(sends: &[Value]) -> Vec<(String, Vec<String>)> {
    sends
        .iter()
        .map(|s| {
            let params = s["template"]["components"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| c["type"] == "body")
                .flat_map(|c| c["parameters"].as_array().cloned().unwrap_or_default())
                .map(|p| p["text"].as_str().unwrap_or_default().to_string())
                .collect();
            (s["template"]["name"].as_str().unwrap().to_string(), params)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booked_call_runs_the_appointment_reminder_with_the_calls_fields_and_keeps_the_contact() {
    let app = graph_app(
        vec![include_str!("../../workflows/appointment-reminder.yaml")],
        token_env(),
    )
    .await;
    let mut body = call("call-0001", "+4915100000081", "booked");
    body["appointment_date"] = json!("Friday 28 November, 10:00");
    body["location"] = json!("Rua Augusta 100, São Paulo");
    body["crm"] = json!({"deal": 77, "tags": ["new"]});
    let response = post_call(&app, TOKEN, &body).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["duplicate"], false);
    eventually("the reminder sent", || async {
        runs_with_status(&app, "completed").await == 1
    })
    .await;
    let sends = app.sends().await;
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0]["to"], "4915100000081");
    assert_eq!(
        templates(&sends),
        [(
            "appointment_confirmation".to_string(),
            [
                "Ana Souza",
                "Dr. Bruno",
                "Friday 28 November, 10:00",
                "Rua Augusta 100, São Paulo"
            ]
            .map(String::from)
            .to_vec()
        )]
    );
    let (trigger, sender, customer): (Value, String, String) = sqlx::query_as(
        "SELECT e.cloudevent->'data', r.sender_id, r.customer_id
             FROM runs r JOIN events e ON e.id = r.event_id",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(trigger["call_id"], "call-0001");
    assert_eq!(trigger["customer_phone"], "+4915100000081");
    assert_eq!(trigger["customer_id"], "4915100000081");
    assert_eq!(trigger["duration_seconds"], 184);
    assert_eq!(trigger["crm"], json!({"deal": 77, "tags": ["new"]}));
    assert_eq!(sender, SANDBOX_SENDER);
    assert_eq!(customer, "4915100000081");
    let (event_id, event): (uuid::Uuid, Value) =
        sqlx::query_as("SELECT id, cloudevent FROM events WHERE dedup_key = 'call:call-0001'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(answer["event_id"], event_id.to_string());
    assert_eq!(event["type"], "call.ended");
    assert_eq!(event["subject"], "4915100000081");
    assert_eq!(event["time"], "2026-11-23T14:05:00Z");
    let (name, phone, seen): (
        Option<String>,
        Option<String>,
        Option<chrono::DateTime<chrono::Utc>>,
    ) = sqlx::query_as(
        "SELECT name, phone, last_seen_at FROM contacts WHERE customer_id = '4915100000081'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(name.as_deref(), Some("Ana Souza"));
    assert_eq!(phone.as_deref(), Some("+4915100000081"));
    assert_eq!(seen.unwrap().to_rfc3339(), "2026-11-23T14:05:00+00:00");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_call_follow_up_example_runs_through_the_endpoint_and_picks_the_template_of_the_outcome()
 {
    let app = graph_app(
        vec![
            include_str!("../../workflows/call-follow-up.yaml"),
            include_str!("../../workflows/appointment-reminder.yaml"),
        ],
        token_env(),
    )
    .await;
    for (id, phone, outcome) in [
        ("c-1", "+4915100000071", "no_answer"),
        ("c-2", "+4915100000072", "callback_requested"),
    ] {
        assert_eq!(
            post_call(&app, TOKEN, &call(id, phone, outcome))
                .await
                .status(),
            200
        );
    }
    eventually("both asleep for ten minutes", || async {
        runs_with_status(&app, "sleeping").await == 2
    })
    .await;
    assert!(app.sends().await.is_empty());
    sqlx::query("UPDATE timers SET due_at = now()")
        .execute(&app.pool)
        .await
        .unwrap();
    eventually("both completed", || async {
        runs_with_status(&app, "completed").await == 2
    })
    .await;
    let mut sent = templates(&app.sends().await);
    sent.sort();
    let pair = || vec!["Ana Souza".to_string(), "Dr. Bruno".to_string()];
    assert_eq!(
        sent,
        [
            ("callback_scheduled".to_string(), pair()),
            ("missed_call".to_string(), pair())
        ]
    );
    // The booked-call workflow did not match these outcomes.
    assert_eq!(
        app.count("SELECT count(*) FROM runs WHERE workflow = 'appointment-reminder'")
            .await,
        0
    );
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_step_without_sender_goes_out_on_the_calls_sender_or_the_configured_default() {
    let mut env = token_env();
    env.push(("HERALD_CALLS_SENDER", "123456789012345".into()));
    let app = graph_app(vec![THANK_CALLER], env).await;
    let mut named = call("c-sender", "+4915100000091", "other");
    named["sender"] = json!(SENDER);
    assert_eq!(post_call(&app, TOKEN, &named).await.status(), 200);
    assert_eq!(
        post_call(&app, TOKEN, &call("c-default", "+4915100000092", "other"))
            .await
            .status(),
        200
    );
    eventually("both sent", || async {
        runs_with_status(&app, "completed").await == 2
    })
    .await;
    let requests = app
        .graph
        .as_ref()
        .unwrap()
        .received_requests()
        .await
        .unwrap();
    let mut routes: Vec<(String, String)> = requests
        .iter()
        .map(|r| {
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            (
                r.url.path().to_string(),
                body["to"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    routes.sort();
    assert_eq!(
        routes,
        [
            (format!("/{SENDER}/messages"), "4915100000091".to_string()),
            (
                "/123456789012345/messages".to_string(),
                "4915100000092".to_string()
            ),
        ]
    );
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_sandbox_mode_the_default_token_works_and_the_sandbox_records_the_template() {
    let app = spawn_app(Options {
        workflows: vec![THANK_CALLER],
        ..Default::default()
    })
    .await;
    let response = post_call(
        &app,
        herald::config::SANDBOX_CALLS_TOKEN,
        &call("c-sandbox", "+4915100000093", "other"),
    )
    .await;
    assert_eq!(response.status(), 200);
    eventually("sent", || async {
        runs_with_status(&app, "completed").await == 1
    })
    .await;
    let (provider, sender, request): (String, String, Value) =
        sqlx::query_as("SELECT provider, sender_id, request FROM outbound_messages")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(provider, "sandbox");
    assert_eq!(sender, SANDBOX_SENDER);
    assert_eq!(request["template"]["name"], "call_thanks");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_missing_token_is_refused_with_401_and_nothing_is_stored() {
    let app = graph_app(vec![THANK_CALLER], token_env()).await;
    let body = call("c-401", "+4915100000094", "other");
    for response in [
        post_call(&app, "not-the-token", &body).await,
        post_call(&app, herald::config::SANDBOX_CALLS_TOKEN, &body).await,
        post_raw(&app, &[], &serde_json::to_vec(&body).unwrap()).await,
        post_raw(
            &app,
            &[("authorization", format!("Basic {TOKEN}"))],
            &serde_json::to_vec(&body).unwrap(),
        )
        .await,
    ] {
        assert_eq!(response.status(), 401);
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["error"], "unauthorized");
        assert!(answer["message"].as_str().unwrap().contains("Bearer"));
    }
    settle().await;
    nothing_stored(&app).await;
    assert_eq!(app.count("SELECT count(*) FROM runs").await, 0);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hmac_signature_of_the_body_is_accepted_and_a_wrong_one_refused() {
    let app = graph_app(
        vec![THANK_CALLER],
        vec![("HERALD_CALLS_SECRET", SECRET.into())],
    )
    .await;
    let body = serde_json::to_vec(&call("c-hmac", "+4915100000095", "other")).unwrap();
    let wrong = signature::sign(b"another-secret", &body);
    let tampered = signature::sign(SECRET.as_bytes(), b"{}");
    for sig in [wrong, tampered, "sha256=".into(), "garbage".into()] {
        let r = post_raw(&app, &[("x-herald-signature-256", sig)], &body).await;
        assert_eq!(r.status(), 401);
    }
    // A secret alone: no bearer token works, not even the sandbox one.
    let r = post_call(
        &app,
        herald::config::SANDBOX_CALLS_TOKEN,
        &call("c-hmac", "+4915100000095", "other"),
    )
    .await;
    assert_eq!(r.status(), 401);
    nothing_stored(&app).await;
    let good = signature::sign(SECRET.as_bytes(), &body);
    let r = post_raw(&app, &[("x-herald-signature-256", good)], &body).await;
    assert_eq!(r.status(), 200);
    eventually("sent", || async {
        runs_with_status(&app, "completed").await == 1
    })
    .await;
    assert_eq!(app.sends().await.len(), 1);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_the_sandbox_without_token_or_secret_the_endpoint_says_what_to_set() {
    let app = graph_app(vec![THANK_CALLER], Vec::new()).await;
    let r = post_call(
        &app,
        herald::config::SANDBOX_CALLS_TOKEN,
        &call("c-off", "+4915100000096", "other"),
    )
    .await;
    assert_eq!(r.status(), 401);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["error"], "not_configured");
    let message = answer["message"].as_str().unwrap();
    assert!(
        message.contains("HERALD_CALLS_TOKEN") && message.contains("HERALD_CALLS_SECRET"),
        "{message}"
    );
    nothing_stored(&app).await;
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_get_400_or_422_with_a_code_and_a_message_and_nothing_is_stored() {
    let app = graph_app(vec![THANK_CALLER], token_env()).await;
    let bearer = [("authorization", format!("Bearer {TOKEN}"))];
    let cases: [(&[u8], u16, &str, &str); 5] = [
        (
            br#"{"call_id": "c-1", "customer_phone": "0151 1234567"}"#,
            422,
            "invalid_phone",
            "Invalid phone number '0151 1234567'",
        ),
        (b"{not json", 400, "invalid_json", "not JSON"),
        (
            br#"{"customer_phone": "+4915100000097"}"#,
            422,
            "missing_field",
            "call_id",
        ),
        (
            br#"{"call_id": "c-1"}"#,
            422,
            "missing_field",
            "customer_phone",
        ),
        (br#""a string""#, 422, "invalid_body", "JSON object"),
    ];
    for (body, status, code, message) in cases {
        let r = post_raw(&app, &bearer, body).await;
        assert_eq!(r.status(), status, "{}", String::from_utf8_lossy(body));
        let answer: Value = r.json().await.unwrap();
        assert_eq!(answer["error"], code);
        let text = answer["message"].as_str().unwrap();
        assert!(text.contains(message), "{text}");
        if code == "invalid_phone" {
            assert!(text.contains("+[country code][number]"), "{text}");
        }
    }
    nothing_stored(&app).await;
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_call_body_is_refused_with_413() {
    let mut env = token_env();
    env.push(("HERALD_MAX_BODY_BYTES", "1024".into()));
    let app = graph_app(vec![THANK_CALLER], env).await;
    let mut body = call("c-big", "+4915100000098", "other");
    body["transcript"] = json!("x".repeat(2048));
    assert_eq!(post_call(&app, TOKEN, &body).await.status(), 413);
    nothing_stored(&app).await;
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_call_id_gives_one_event_and_one_run_also_when_posted_at_once() {
    let app = graph_app(vec![THANK_CALLER], token_env()).await;
    let body = call("c-dup", "+4915100000099", "other");
    let first = post_call(&app, TOKEN, &body).await;
    assert_eq!(first.status(), 200);
    let again: Value = post_call(&app, TOKEN, &body).await.json().await.unwrap();
    assert_eq!(again["duplicate"], true);
    let concurrent = call("c-at-once", "+4915100000100", "other");
    let answers = futures::future::join_all(
        (0..8).map(|_| async { post_call(&app, TOKEN, &concurrent).await }),
    )
    .await;
    let mut duplicates = 0;
    for r in answers {
        assert_eq!(r.status(), 200);
        let a: Value = r.json().await.unwrap();
        duplicates += usize::from(a["duplicate"] == true);
    }
    assert_eq!(duplicates, 7);
    eventually("two runs completed", || async {
        runs_with_status(&app, "completed").await == 2
    })
    .await;
    settle().await;
    assert_eq!(app.count("SELECT count(*) FROM events").await, 2);
    assert_eq!(app.count("SELECT count(*) FROM runs").await, 2);
    assert_eq!(app.sends().await.len(), 2);
    assert_eq!(app.count("SELECT count(*) FROM contacts").await, 2);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_down_answers_503_and_the_redelivered_call_runs_once() {
    let app = spawn_app(Options {
        workflows: vec![THANK_CALLER],
        graph: true,
        amqp_proxy: true,
        env: token_env(),
        ..Default::default()
    })
    .await;
    fake_graph::accept_all(app.graph.as_ref().unwrap()).await;
    let body = call("c-mq", "+4915100000101", "other");
    app.amqp_proxy.as_ref().unwrap().cut();
    let r = post_call(&app, TOKEN, &body).await;
    assert_eq!(r.status(), 503);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["error"], "unavailable");
    app.amqp_proxy.as_ref().unwrap().restore();
    eventually("redelivery accepted", || async {
        post_call(&app, TOKEN, &body).await.status() == 200
    })
    .await;
    eventually("run completed", || async {
        runs_with_status(&app, "completed").await == 1
    })
    .await;
    settle().await;
    assert_eq!(post_call(&app, TOKEN, &body).await.status(), 200);
    settle().await;
    assert_eq!(app.count("SELECT count(*) FROM events").await, 1);
    assert_eq!(app.count("SELECT count(*) FROM runs").await, 1);
    assert_eq!(app.sends().await.len(), 1);
    assert_eq!(app.count("SELECT count(*) FROM outbox").await, 0);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_answers_503_and_the_redelivered_call_runs_once() {
    let app = spawn_app(Options {
        workflows: vec![THANK_CALLER],
        graph: true,
        pg_proxy: true,
        env: token_env(),
        ..Default::default()
    })
    .await;
    fake_graph::accept_all(app.graph.as_ref().unwrap()).await;
    let body = call("c-pg", "+4915100000102", "other");
    app.pg_proxy.as_ref().unwrap().cut();
    assert_eq!(post_call(&app, TOKEN, &body).await.status(), 503);
    app.pg_proxy.as_ref().unwrap().restore();
    eventually("redelivery accepted", || async {
        post_call(&app, TOKEN, &body).await.status() == 200
    })
    .await;
    eventually("run completed", || async {
        runs_with_status(&app, "completed").await == 1
    })
    .await;
    settle().await;
    assert_eq!(app.count("SELECT count(*) FROM runs").await, 1);
    assert_eq!(app.sends().await.len(), 1);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn herald_simulate_call_ended_posts_an_authenticated_call_to_a_running_herald() {
    let app = graph_app(
        vec![include_str!("../../workflows/appointment-reminder.yaml")],
        vec![("HERALD_CALLS_SECRET", SECRET.into())],
    )
    .await;
    let simulate = |call_id: &str| {
        Command::new(env!("CARGO_BIN_EXE_herald"))
            .args([
                "simulate",
                "call-ended",
                "--phone",
                "+4915100000103",
                "--outcome",
                "booked",
                "--name",
                "Ana Souza",
                "--agent",
                "Dr. Bruno",
                "--duration",
                "120",
                "--call-id",
                call_id,
                "--field",
                "appointment_date=Friday 28 November, 10:00",
                "--field",
                "location=Rua Augusta 100",
            ])
            .args(["--url", &app.url("")])
            .env("HERALD_CALLS_SECRET", SECRET)
            .env("WHATSAPP_ACCESS_TOKEN", "t")
            .env("WHATSAPP_APP_SECRET", "s")
            .output()
            .unwrap()
    };
    let out = simulate("sim-1");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("200 OK") && stdout.contains("call_id: sim-1"),
        "{stdout}"
    );
    eventually("the reminder sent", || async {
        runs_with_status(&app, "completed").await == 1
    })
    .await;
    assert_eq!(
        templates(&app.sends().await),
        [(
            "appointment_confirmation".to_string(),
            [
                "Ana Souza",
                "Dr. Bruno",
                "Friday 28 November, 10:00",
                "Rua Augusta 100"
            ]
            .map(String::from)
            .to_vec()
        )]
    );
    let trigger: Value = sqlx::query_scalar(
        "SELECT e.cloudevent->'data' FROM runs r JOIN events e ON e.id = r.event_id",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(trigger["duration_seconds"], 120);
    // The same call again is a duplicate; a wrong secret is refused and the command fails.
    let again = simulate("sim-1");
    assert!(String::from_utf8_lossy(&again.stdout).contains("\"duplicate\":true"));
    let refused = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["simulate", "call-ended", "--phone", "+4915100000103"])
        .args(["--outcome", "booked", "--url", &app.url("")])
        .env("HERALD_CALLS_SECRET", "wrong")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stdout).contains("401"));
    let bad_phone = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["simulate", "call-ended", "--phone", "015100000103"])
        .args(["--outcome", "booked", "--url", &app.url("")])
        .output()
        .unwrap();
    assert!(!bad_phone.status.success());
    assert!(String::from_utf8_lossy(&bad_phone.stderr).contains("+[country code][number]"));
    settle().await;
    assert_eq!(app.count("SELECT count(*) FROM runs").await, 1);
    app.cleanup().await;
}
