//! Active dispatch: a workflow started for a list or a group of contacts, through the API and
//! the CLI, paced, paused, resumed and cancelled; waiting contacts; opted-out and invalid ones.

use std::time::Duration;

use serde_json::{Value, json};

use super::{
    fake_graph,
    harness::{
        Options, SENDER, TestApp, eventually, runs_with_status, settle, spawn_app, text_body,
    },
};

pub const API_TOKEN: &str = "test-api-token";

pub const SEND_ONE: &str = r#"
name: announce
trigger:
  event: manual
steps:
  - send_template:
      id: hello
      template: welcome_message
      language: en_US
      variables: ["{{ trigger.contact_name | default('there') }}"]
"#;

const ASK_AND_WAIT: &str = r#"
name: survey
trigger:
  event: manual
steps:
  - send_template:
      template: csat_survey
      language: en_US
      variables: ["{{ trigger.contact_name | default('there') }}", "{{ trigger.agent }}"]
  - wait_for_response:
      id: answer
      timeout: 1h
  - send_text:
      text: "Thanks: {{ steps.answer.text }}"
"#;

pub async fn app_with(workflows: Vec<&'static str>, env: Vec<(&'static str, String)>) -> TestApp {
    let mut env = env;
    env.push(("HERALD_API_TOKEN", API_TOKEN.into()));
    env.push(("HERALD_DEFAULT_SENDER", SENDER.into()));
    env.push(("HERALD_DISPATCH_INTERVAL_MS", "50".into()));
    let app = spawn_app(Options {
        workflows,
        graph: true,
        env,
        ..Options::default()
    })
    .await;
    fake_graph::accept_all(app.graph.as_ref().unwrap()).await;
    app
}

pub async fn api(app: &TestApp, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = app
        .http
        .request(method.parse().unwrap(), app.url(path))
        .bearer_auth(API_TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("API request");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}")),
    )
}

async fn dispatch_state(app: &TestApp, id: &str) -> Value {
    api(app, "GET", &format!("/api/v1/dispatches/{id}"), None)
        .await
        .1
}

fn phone(i: usize) -> String {
    format!("+49151{:08}", 10_000_000 + i)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dispatch_of_a_thousand_sends_to_each_valid_contact_once_paced_at_its_rate() {
    let app = app_with(vec![SEND_ONE], vec![]).await;
    let mut to: Vec<String> = (0..998).map(phone).collect();
    // Three of them opted out earlier.
    for i in [10, 500, 997] {
        sqlx::query(
            "INSERT INTO contacts (id, customer_id, phone, opted_out) VALUES (gen_random_uuid(), $1, $2, true)",
        )
        .bind(phone(i).trim_start_matches('+'))
        .bind(phone(i))
        .execute(&app.pool)
        .await
        .unwrap();
    }
    to.insert(100, "0151 1234567".into());
    to.insert(700, "+49abc".into());
    assert_eq!(to.len(), 1000);
    let rate = 250.0;
    let (status, created) = api(
        &app,
        "POST",
        "/api/v1/dispatches",
        Some(json!({"workflow": "announce", "to": to, "rate": rate})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["progress"]["total"], 1000);
    assert_eq!(created["progress"]["failed"], 2);
    let id = created["id"].as_str().unwrap().to_string();
    let poll = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let d = dispatch_state(&app, &id).await;
        if d["status"] == "completed" {
            break;
        }
        assert!(tokio::time::Instant::now() < poll, "not completed: {d}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let d = dispatch_state(&app, &id).await;
    assert_eq!(d["progress"]["completed"], 995, "{d}");
    assert_eq!(d["progress"]["skipped_opted_out"], 3);
    assert_eq!(d["progress"]["failed"], 2);
    assert_eq!(d["progress"]["pending"], 0);
    // Each valid contact got exactly one message.
    let sends = app.sends().await;
    assert_eq!(sends.len(), 995);
    let mut recipients: Vec<&str> = sends.iter().map(|s| s["to"].as_str().unwrap()).collect();
    recipients.sort();
    recipients.dedup();
    assert_eq!(recipients.len(), 995);
    for i in [10, 500, 997] {
        assert!(!recipients.contains(&phone(i).trim_start_matches('+')));
    }
    // The two bad numbers failed with the error class and what to do.
    let (_, failed) = api(
        &app,
        "GET",
        &format!("/api/v1/dispatches/{id}/contacts?state=failed"),
        None,
    )
    .await;
    let failed = failed.as_array().unwrap();
    assert_eq!(failed.len(), 2);
    for f in failed {
        assert_eq!(f["error"]["class"], "Invalid phone number");
        assert!(
            f["error"]["what_to_do"]
                .as_str()
                .unwrap()
                .contains("+[country code]")
        );
    }
    assert_eq!(failed[0]["to"], "0151 1234567");
    let (_, skipped) = api(
        &app,
        "GET",
        &format!("/api/v1/dispatches/{id}/contacts?state=skipped_opted_out"),
        None,
    )
    .await;
    assert_eq!(skipped.as_array().unwrap().len(), 3);
    // Paced: never more than 1.25 x rate + 1 starts in any second, and 995 starts take at
    // least (995 - burst) / rate seconds.
    let starts: Vec<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
        "SELECT started_at FROM dispatch_contacts WHERE dispatch_id = $1::uuid AND state = 'started' ORDER BY started_at",
    )
    .bind(&id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(starts.len(), 995);
    let window = chrono::TimeDelta::seconds(1);
    let max_in_window = (0..starts.len())
        .map(|i| {
            starts[i..]
                .iter()
                .take_while(|t| **t - starts[i] < window)
                .count()
        })
        .max()
        .unwrap();
    assert!(
        max_in_window as f64 <= rate * 1.25 + 1.0,
        "{max_in_window} starts in one second at rate {rate}"
    );
    let span = (*starts.last().unwrap() - starts[0]).as_seconds_f64();
    assert!(
        span >= (995.0 - rate * 0.25 - 1.0) / rate * 0.95,
        "995 starts took only {span} s at {rate}/s"
    );
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dispatch_can_be_paused_resumed_and_cancelled() {
    let app = app_with(vec![SEND_ONE], vec![]).await;
    let to: Vec<String> = (0..40).map(phone).collect();
    let (status, created) = api(
        &app,
        "POST",
        "/api/v1/dispatches",
        Some(json!({"workflow": "announce", "to": to, "rate": 5})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let started = |app: &TestApp| {
        let id = id.clone();
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM dispatch_contacts WHERE dispatch_id = $1::uuid AND state = 'started'",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    eventually("a few contacts started", || async {
        started(&app).await >= 3
    })
    .await;
    let (status, paused) = api(
        &app,
        "POST",
        &format!("/api/v1/dispatches/{id}/pause"),
        None,
    )
    .await;
    assert_eq!((status, paused["status"].as_str()), (200, Some("paused")));
    let at_pause = started(&app).await;
    settle().await;
    assert_eq!(
        started(&app).await,
        at_pause,
        "a paused dispatch started runs"
    );
    // Pausing twice is a conflict with a clear message.
    let (status, again) = api(
        &app,
        "POST",
        &format!("/api/v1/dispatches/{id}/pause"),
        None,
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(again["error"], "conflict");
    assert!(again["message"].as_str().unwrap().contains("paused"));
    let (status, resumed) = api(
        &app,
        "POST",
        &format!("/api/v1/dispatches/{id}/resume"),
        None,
    )
    .await;
    assert_eq!((status, resumed["status"].as_str()), (200, Some("running")));
    eventually("more contacts started after resume", || async {
        started(&app).await >= at_pause + 3
    })
    .await;
    let (status, cancelled) = api(
        &app,
        "POST",
        &format!("/api/v1/dispatches/{id}/cancel"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(cancelled["status"], "cancelled");
    let at_cancel = started(&app).await;
    assert!(
        at_cancel < 40,
        "everything started before the cancel: {at_cancel}"
    );
    settle().await;
    assert_eq!(started(&app).await, at_cancel);
    // A contact started just before the cancel may still have its run queued: the cancel stops
    // that run too. Every started contact's run either completed (sent once) or was cancelled.
    eventually("no started run is still under way", || async {
        runs_with_status(&app, "completed").await + runs_with_status(&app, "cancelled").await
            == at_cancel
    })
    .await;
    let completed = runs_with_status(&app, "completed").await;
    assert!(
        completed >= 3,
        "the runs started before the pause completed"
    );
    let d = dispatch_state(&app, &id).await;
    assert_eq!(d["progress"]["cancelled"], 40 - completed, "{d}");
    assert_eq!(d["progress"]["completed"], completed, "{d}");
    assert_eq!(d["progress"]["pending"], 0);
    // Every completed contact was sent to once; none of the cancelled ones.
    settle().await;
    assert_eq!(app.sends().await.len() as i64, completed);
    // Resuming a cancelled dispatch is refused; an unknown one is 404.
    let (status, _) = api(
        &app,
        "POST",
        &format!("/api/v1/dispatches/{id}/resume"),
        None,
    )
    .await;
    assert_eq!(status, 409);
    let (status, missing) = api(
        &app,
        "POST",
        "/api/v1/dispatches/0190a0a0-0000-7000-8000-000000000000/pause",
        None,
    )
    .await;
    assert_eq!(
        (status, missing["error"].as_str()),
        (404, Some("not_found"))
    );
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contacts_who_have_not_answered_are_listed_as_waiting_and_an_answer_moves_the_run_on() {
    let app = app_with(vec![ASK_AND_WAIT], vec![]).await;
    let to: Vec<String> = (0..3).map(phone).collect();
    let (status, created) = api(
        &app,
        "POST",
        "/api/v1/dispatches",
        Some(json!({"workflow": "survey", "to": to, "vars": {"agent": "Lea"}})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let waiting_path = format!("/api/v1/dispatches/{id}/contacts?state=waiting");
    eventually("all three wait for an answer", || async {
        api(&app, "GET", &waiting_path, None)
            .await
            .1
            .as_array()
            .map(Vec::len)
            == Some(3)
    })
    .await;
    let sends = app.sends().await;
    assert_eq!(sends.len(), 3);
    assert_eq!(
        sends[0]["template"]["components"][0]["parameters"][1]["text"], "Lea",
        "the dispatch's vars reach the template"
    );
    // The second contact answers.
    let response = app
        .post_webhook(&text_body(&phone(1), "5 stars", "wamid.answer1"))
        .await;
    assert_eq!(response.status(), 200);
    eventually("the answering contact's run completes", || async {
        dispatch_state(&app, &id).await["progress"]["completed"] == 1
    })
    .await;
    let (_, waiting) = api(&app, "GET", &waiting_path, None).await;
    let waiting: Vec<&str> = waiting
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["phone"].as_str().unwrap())
        .collect();
    assert_eq!(waiting, vec![phone(0), phone(2)]);
    eventually(
        "the thank-you text went to the one who answered",
        || async {
            app.sends().await.iter().any(|s| {
                s["to"] == phone(1).trim_start_matches('+')
                    && s["text"]["body"] == "Thanks: 5 stars"
            })
        },
    )
    .await;
    // Progress shows the others still waiting; nobody else started.
    let d = dispatch_state(&app, &id).await;
    assert_eq!(d["progress"]["waiting"], 2, "{d}");
    assert_eq!(d["status"], "running");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_dispatch_starts_one_run_per_member_and_bad_requests_get_clear_errors() {
    let app = app_with(vec![SEND_ONE], vec![]).await;
    for (i, groups) in [
        (0, vec!["vip"]),
        (1, vec!["vip", "berlin"]),
        (2, vec!["berlin"]),
    ] {
        sqlx::query(
            "INSERT INTO contacts (id, customer_id, phone, name, groups, fields) VALUES (gen_random_uuid(), $1, $2, $3, $4, $5)",
        )
        .bind(phone(i).trim_start_matches('+'))
        .bind(phone(i))
        .bind(format!("Contact {i}"))
        .bind(groups)
        .bind(json!({"plan": if i == 1 { "pro" } else { "free" }}))
        .execute(&app.pool)
        .await
        .unwrap();
    }
    let (status, created) = api(
        &app,
        "POST",
        "/api/v1/dispatches",
        Some(json!({"workflow": "announce", "group": "vip"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["progress"]["total"], 2);
    eventually("both vip contacts got the template", || async {
        app.sends().await.len() == 2
    })
    .await;
    let names: Vec<String> = app
        .sends()
        .await
        .iter()
        .map(|s| {
            s["template"]["components"][0]["parameters"][0]["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(names.contains(&"Contact 0".to_string()) && names.contains(&"Contact 1".to_string()));
    // A filter over contact fields narrows the group.
    let (status, filtered) = api(
        &app,
        "POST",
        "/api/v1/dispatches",
        Some(json!({"workflow": "announce", "group": "berlin", "filter": "contact.fields.plan == \"pro\""})),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(filtered["progress"]["total"], 1);
    // Bad requests: each a JSON error with a stable code.
    for (body, code) in [
        (
            json!({"workflow": "nope", "to": ["+4915112345678"]}),
            "unknown_workflow",
        ),
        (json!({"workflow": "announce"}), "bad_target"),
        (
            json!({"workflow": "announce", "to": ["+4915112345678"], "group": "vip"}),
            "bad_target",
        ),
        (
            json!({"workflow": "announce", "group": "nobody-here"}),
            "no_contacts",
        ),
        (json!({"workflow": "announce", "to": []}), "no_contacts"),
        (
            json!({"workflow": "announce", "to": ["+4915112345678"], "rate": 0}),
            "bad_rate",
        ),
        (
            json!({"workflow": "announce", "group": "vip", "filter": "contact.("}),
            "bad_filter",
        ),
        (
            json!({"workflow": "announce", "to": "+4915112345678"}),
            "invalid_body",
        ),
        (
            json!({"workflow": "announce", "to": ["+4915112345678"], "surprise": 1}),
            "invalid_body",
        ),
    ] {
        let (status, answer) = api(&app, "POST", "/api/v1/dispatches", Some(body.clone())).await;
        assert_eq!(status, 422, "{body} -> {answer}");
        assert_eq!(answer["error"], code, "{body} -> {answer}");
        assert!(!answer["message"].as_str().unwrap().is_empty());
    }
    let (status, answer) = api(&app, "GET", "/api/v1/dispatches/not-a-uuid", None).await;
    assert_eq!((status, answer["error"].as_str()), (404, Some("not_found")));
    let (status, answer) = api(
        &app,
        "GET",
        &format!(
            "/api/v1/dispatches/{}/contacts?state=sleepy",
            created["id"].as_str().unwrap()
        ),
        None,
    )
    .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("bad_request"))
    );
    assert_eq!(
        app.count("SELECT count(*) FROM dispatches").await,
        2,
        "a refused request created a dispatch"
    );
    app.cleanup().await;
}

fn herald(app: &TestApp, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .envs(&app.vars)
        .env("HERALD_WORKFLOWS", &app.workflows_dir)
        .output()
        .expect("run herald")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn herald_trigger_starts_a_workflow_for_one_number_and_dispatches_shows_it() {
    let app = app_with(vec![SEND_ONE], vec![]).await;
    let out = herald(
        &app,
        &[
            "trigger",
            "announce",
            "--to",
            "+4915112345678",
            "--wait",
            "--json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["status"], "completed", "{shown}");
    assert_eq!(shown["progress"]["completed"], 1);
    let sends = app.sends().await;
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0]["to"], "4915112345678");
    // Listing and contacts.
    let id = shown["id"].as_str().unwrap();
    let out = herald(&app, &["dispatches", "contacts", id]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("+4915112345678") && text.contains("completed"),
        "{text}"
    );
    // Mistakes are reported, not crashed on.
    for (args, expected) in [
        (
            vec!["trigger", "nope", "--to", "+4915112345678"],
            "unknown workflow 'nope'",
        ),
        (vec!["trigger", "announce"], "--to"),
        (
            vec![
                "trigger",
                "announce",
                "--to",
                "+4915112345678",
                "--var",
                "novalue",
            ],
            "is not key=value",
        ),
        (
            vec!["dispatches", "contacts", id, "--state", "sleepy"],
            "unknown state 'sleepy'",
        ),
        (vec!["dispatches", "pause", id], "cannot be paused"),
    ] {
        let out = herald(&app, &args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    app.cleanup().await;
}

/// A workflow whose one send needs the contact's `plan` field: a contact without it fails.
const NEEDS_PLAN: &str = r#"
name: upgrade
trigger:
  event: manual
steps:
  - send_template:
      template: welcome_message
      language: en_US
      variables: ["{{ trigger.contact_fields.plan }}"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn herald_trigger_wait_exits_1_when_a_run_of_the_dispatch_failed() {
    let app = app_with(vec![NEEDS_PLAN], vec![]).await;
    let out = herald(
        &app,
        &["contacts", "add", "+4915112340001", "--field", "plan=pro"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = herald(
        &app,
        &[
            "trigger",
            "upgrade",
            "--to",
            "+4915112340001",
            "--to",
            "+4915112340002",
            "--wait",
            "--json",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // The dispatch itself went as asked: its JSON is printed, and no error.
    let shown: Value = serde_json::from_slice(&out.stdout).expect("the dispatch as JSON");
    assert_eq!(shown["status"], "completed", "{shown}");
    assert_eq!(shown["progress"]["completed"], 1, "{shown}");
    assert_eq!(shown["progress"]["failed"], 1, "{shown}");
    assert!(!stderr.contains("herald:"), "{stderr}");
    let sends = app.sends().await;
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0]["to"], "4915112340001");
    app.cleanup().await;
}

fn status_body(wamid: &str, recipient: &str, status: &str, error_code: Option<i64>) -> Vec<u8> {
    let mut st = json!({
        "id": wamid, "status": status, "timestamp": chrono::Utc::now().timestamp().to_string(),
        "recipient_id": recipient,
    });
    if let Some(code) = error_code {
        st["errors"] = json!([{
            "code": code, "title": "Message undeliverable", "message": "Message undeliverable",
            "error_data": {"details": "Message failed to send because the number is not on WhatsApp."},
        }]);
    }
    serde_json::to_vec(&json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "210987654321098", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550104477", "phone_number_id": SENDER},
            "statuses": [st],
        }}]}],
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn message_statuses_update_the_dispatch_progress_and_a_failed_one_records_its_class_on_the_step()
 {
    let app = app_with(vec![SEND_ONE], vec![]).await;
    let (_, created) = api(
        &app,
        "POST",
        "/api/v1/dispatches",
        Some(json!({"workflow": "announce", "to": [phone(1), phone(2)]})),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_string();
    eventually("both sent", || async {
        app.count("SELECT count(*) FROM outbound_messages WHERE wamid IS NOT NULL")
            .await
            == 2
    })
    .await;
    let sent: Vec<(String, String)> =
        sqlx::query_as("SELECT wamid, recipient FROM outbound_messages ORDER BY recipient")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    let digits = |p: &str| p.trim_start_matches('+').to_string();
    for (status, code) in [("sent", None), ("delivered", None), ("read", None)] {
        let r = app
            .post_webhook(&status_body(&sent[0].0, &digits(&sent[0].1), status, code))
            .await;
        assert_eq!(r.status(), 200);
    }
    let r = app
        .post_webhook(&status_body(
            &sent[1].0,
            &digits(&sent[1].1),
            "failed",
            Some(131026),
        ))
        .await;
    assert_eq!(r.status(), 200);
    // A late "delivered" never undoes "read".
    let r = app
        .post_webhook(&status_body(
            &sent[0].0,
            &digits(&sent[0].1),
            "delivered",
            None,
        ))
        .await;
    assert_eq!(r.status(), 200);
    let d = dispatch_state(&app, &id).await;
    assert_eq!(
        d["progress"]["messages"],
        json!({"accepted": 0, "sent": 0, "delivered": 0, "read": 1, "failed": 1}),
        "{d}"
    );
    let error: Value = sqlx::query_scalar(
        "SELECT sa.error FROM step_attempts sa JOIN outbound_messages om
           ON om.run_id = sa.run_id AND om.step_index = sa.step_index WHERE om.wamid = $1",
    )
    .bind(&sent[1].0)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(error["class"], "Invalid phone number", "{error}");
    assert_eq!(error["provider_code"], 131026);
    let ok: Option<Value> = sqlx::query_scalar(
        "SELECT sa.error FROM step_attempts sa JOIN outbound_messages om
           ON om.run_id = sa.run_id AND om.step_index = sa.step_index WHERE om.wamid = $1",
    )
    .bind(&sent[0].0)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(ok, None);
    app.cleanup().await;
}

const FLOW_SURVEY: &str = r#"
name: flow-survey
trigger:
  event: manual
steps:
  - send_template:
      template: csat_survey
      language: en_US
      variables: ["{{ trigger.contact_name | default('there') }}", "Lea"]
      buttons:
        - flow:
            flow_action_data:
              agent: Lea
  - wait_for_response:
      id: answer
      timeout: 1d
  - send_text:
      text: "Thanks! You gave us {{ steps.answer.flow_response.csat_score }}."
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flow_sent_by_dispatch_waits_and_the_submitted_flow_resumes_the_run_with_its_fields() {
    let app = app_with(vec![FLOW_SURVEY], vec![]).await;
    let chloe = "+447700900311";
    let (status, created) = api(
        &app,
        "POST",
        "/api/v1/dispatches",
        Some(json!({"workflow": "flow-survey", "to": [chloe, phone(1)]})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let waiting_path = format!("/api/v1/dispatches/{id}/contacts?state=waiting");
    eventually("both wait for the flow", || async {
        api(&app, "GET", &waiting_path, None)
            .await
            .1
            .as_array()
            .map(Vec::len)
            == Some(2)
    })
    .await;
    let sends = app.sends().await;
    let button = sends[0]["template"]["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "button")
        .unwrap()
        .clone();
    let token = button["parameters"][0]["action"]["flow_token"]
        .as_str()
        .unwrap()
        .to_string();
    // Chloe submits the Flow (Meta's nfm_reply, fixture 06, to our sender).
    let mut body: Value = serde_json::from_slice(include_bytes!(
        "../fixtures/whatsapp/06-flow-completion-nfm-reply.json"
    ))
    .unwrap();
    let message = &mut body["entry"][0]["changes"][0]["value"]["messages"][0];
    let mut response: Value = serde_json::from_str(
        message["interactive"]["nfm_reply"]["response_json"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    response["flow_token"] = json!(token);
    message["interactive"]["nfm_reply"]["response_json"] = json!(response.to_string());
    message["timestamp"] = json!(chrono::Utc::now().timestamp().to_string());
    body["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] = json!(SENDER);
    let r = app.post_webhook(&serde_json::to_vec(&body).unwrap()).await;
    assert_eq!(r.status(), 200);
    eventually("Chloe's run went on with the submitted fields", || async {
        app.sends()
            .await
            .iter()
            .any(|s| s["to"] == "447700900311" && s["text"]["body"] == "Thanks! You gave us 4.")
    })
    .await;
    let (_, waiting) = api(&app, "GET", &waiting_path, None).await;
    let waiting: Vec<&str> = waiting
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["phone"].as_str().unwrap())
        .collect();
    assert_eq!(
        waiting,
        vec![phone(1)],
        "only the one who did not answer waits"
    );
    eventually("the dispatch counts one completed", || async {
        dispatch_state(&app, &id).await["progress"]["completed"] == 1
    })
    .await;
    // The submission started no new run.
    assert_eq!(app.count("SELECT count(*) FROM runs").await, 2);
    app.cleanup().await;
}
