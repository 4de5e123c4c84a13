//! Every example in workflows/ runs end to end: real PostgreSQL and RabbitMQ, fakes of the Graph
//! API, the LLM API and the team webhook.

use herald::domain::EventType;
use serde_json::{Value, json};
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{method, path},
};

use super::{
    fake_graph,
    harness::{Options, TestApp, eventually, runs_with_status, spawn_app, text_body},
};

const SANDBOX_SENDER: &str = "100000000000001";

/// Fires every pending timer now (an injected clock: the delay itself is tested elsewhere).
async fn fast_forward(app: &TestApp) {
    sqlx::query("UPDATE timers SET due_at = now()")
        .execute(&app.pool)
        .await
        .unwrap();
}

async fn call_ended(app: &TestApp, phone: &str, data: Value) {
    let mut data = data;
    data["customer_phone"] = json!(phone);
    app.publish_event(
        EventType::CallEnded,
        "calls",
        Some(phone.trim_start_matches('+')),
        data,
    )
    .await;
}

async fn graph_app(workflows: Vec<&'static str>, options: Options) -> TestApp {
    let app = spawn_app(Options {
        workflows,
        graph: true,
        ..options
    })
    .await;
    fake_graph::accept_all(app.graph.as_ref().unwrap()).await;
    app
}

async fn fake_llm(answer: &str) -> MockServer {
    let llm = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-test",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}]
        })))
        .mount(&llm)
        .await;
    llm
}

fn assistants(llm: &MockServer) -> String {
    let base = format!("{}/v1", llm.uri());
    format!(
        "assistants:\n  support:\n    base_url: {base}\n    model: gpt-test\n    system_prompt: Support.\n    api_key_env: CARGO_PKG_NAME\n  sales:\n    base_url: {base}\n    model: gpt-test\n    system_prompt: Sales.\n    api_key_env: CARGO_PKG_NAME\n"
    )
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
            (
                s["template"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                params,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_call_follow_up_waits_then_sends_the_template_of_the_outcome() {
    let app = graph_app(
        vec![include_str!("../../workflows/call-follow-up.yaml")],
        Options::default(),
    )
    .await;
    call_ended(
        &app,
        "+4915100000071",
        json!({"customer_name": "Ana", "agent_name": "Bruno", "outcome": "no_answer"}),
    )
    .await;
    call_ended(
        &app,
        "+4915100000072",
        json!({"customer_name": "Caio", "agent_name": "Bruno", "outcome": "other"}),
    )
    .await;
    eventually("both asleep for ten minutes", || async {
        runs_with_status(&app, "sleeping").await == 2
    })
    .await;
    let due: Vec<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar("SELECT due_at FROM timers")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert!(
        due.iter()
            .all(|d| *d > chrono::Utc::now() + chrono::Duration::minutes(9)),
        "{due:?}"
    );
    assert!(app.sends().await.is_empty());
    fast_forward(&app).await;
    eventually("both completed", || async {
        runs_with_status(&app, "completed").await == 2
    })
    .await;
    let mut sent = templates(&app.sends().await);
    sent.sort();
    assert_eq!(
        sent,
        [
            ("call_thanks".to_string(), vec!["Caio".to_string()]),
            (
                "missed_call".to_string(),
                vec!["Ana".to_string(), "Bruno".to_string()]
            ),
        ]
    );
    let requests = app
        .graph
        .as_ref()
        .unwrap()
        .received_requests()
        .await
        .unwrap();
    assert!(
        requests
            .iter()
            .all(|r| r.url.path() == format!("/{SANDBOX_SENDER}/messages"))
    );
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_appointment_reminder_maps_the_four_variables_in_order() {
    let app = graph_app(
        vec![include_str!("../../workflows/appointment-reminder.yaml")],
        Options::default(),
    )
    .await;
    call_ended(&app, "+4915100000081", json!({
        "customer_name": "Ana Souza", "agent_name": "Dr. Bruno", "outcome": "booked",
        "appointment_date": "Friday 28 November, 10:00", "location": "Rua Augusta 100, São Paulo"
    })).await;
    eventually("sent", || async {
        runs_with_status(&app, "completed").await == 1
    })
    .await;
    let sends = app.sends().await;
    assert_eq!(sends[0]["to"], "4915100000081");
    assert_eq!(
        templates(&sends),
        [(
            "appointment_confirmation".to_string(),
            vec![
                "Ana Souza",
                "Dr. Bruno",
                "Friday 28 November, 10:00",
                "Rua Augusta 100, São Paulo"
            ]
            .into_iter()
            .map(String::from)
            .collect()
        )]
    );
    app.cleanup().await;
}

async fn lead_app() -> (TestApp, MockServer, MockServer) {
    let llm = fake_llm("Acme Ltd, 40 seats: hot").await;
    let team = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&team)
        .await;
    let app = graph_app(
        vec![include_str!("../../workflows/lead-qualification.yaml")],
        Options {
            assistants_yaml: Some(assistants(&llm)),
            env: vec![("HERALD_NOTIFY_WEBHOOK_URL", format!("{}/hook", team.uri()))],
            ..Default::default()
        },
    )
    .await;
    (app, llm, team)
}

async fn team_messages(team: &MockServer) -> Vec<String> {
    team.received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| {
            serde_json::from_slice::<Value>(&r.body).unwrap()["text"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_lead_qualification_asks_waits_qualifies_saves_and_tells_sales() {
    let (app, llm, team) = lead_app().await;
    assert_eq!(
        app.post_webhook(&text_body(
            "+4915100000091",
            "What is your pricing?",
            "wamid.L1"
        ))
        .await
        .status(),
        200
    );
    eventually("waiting for the answer", || async {
        runs_with_status(&app, "waiting").await == 1
    })
    .await;
    assert_eq!(
        app.post_webhook(&text_body(
            "+4915100000091",
            "Acme Ltd, about 40 people",
            "wamid.L2"
        ))
        .await
        .status(),
        200
    );
    eventually("completed", || async {
        runs_with_status(&app, "completed").await == 1
    })
    .await;
    let texts: Vec<String> = app
        .sends()
        .await
        .iter()
        .map(|s| s["text"]["body"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(texts[0].contains("What is your company"));
    assert!(texts[1].contains("sales team will be in touch"));
    let prompt: Value =
        serde_json::from_slice(&llm.received_requests().await.unwrap()[0].body).unwrap();
    assert!(prompt.to_string().contains("Acme Ltd, about 40 people"));
    let (fields, groups): (Value, Vec<String>) =
        sqlx::query_as("SELECT fields, groups FROM contacts WHERE customer_id = '4915100000091'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(fields["lead_answer"], "Acme Ltd, about 40 people");
    assert_eq!(fields["lead_summary"], "Acme Ltd, 40 seats: hot");
    assert_eq!(groups, ["leads"]);
    let told = team_messages(&team).await;
    assert_eq!(told.len(), 1);
    assert!(
        told[0].contains("+4915100000091") && told[0].contains("Acme Ltd, 40 seats: hot"),
        "{told:?}"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM runs").await,
        1,
        "the answer started no other run"
    );
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_lead_qualification_tells_sales_when_the_lead_goes_quiet() {
    let (app, llm, team) = lead_app().await;
    assert_eq!(
        app.post_webhook(&text_body(
            "+4915100000092",
            "Can I get a quote?",
            "wamid.Q1"
        ))
        .await
        .status(),
        200
    );
    eventually("waiting for the answer", || async {
        runs_with_status(&app, "waiting").await == 1
    })
    .await;
    fast_forward(&app).await;
    eventually("completed after the timeout", || async {
        runs_with_status(&app, "completed").await == 1
    })
    .await;
    let told = team_messages(&team).await;
    assert_eq!(told.len(), 1);
    assert!(told[0].contains("did not answer"), "{told:?}");
    assert!(
        llm.received_requests().await.unwrap().is_empty(),
        "no AI without an answer"
    );
    assert_eq!(app.sends().await.len(), 1, "only the question was sent");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_ai_auto_reply_sends_the_assistants_answer() {
    let llm = fake_llm("We open at 9:00 every weekday.").await;
    let app = graph_app(
        vec![include_str!("../../workflows/ai-auto-reply.yaml")],
        Options {
            assistants_yaml: Some(assistants(&llm)),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        app.post_webhook(&text_body(
            "+4915100000101",
            "When do you open?",
            "wamid.AI1"
        ))
        .await
        .status(),
        200
    );
    eventually("answered", || async {
        runs_with_status(&app, "completed").await == 1
    })
    .await;
    let sends = app.sends().await;
    assert_eq!(sends[0]["text"]["body"], "We open at 9:00 every weekday.");
    assert_eq!(sends[0]["to"], "4915100000101");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_csat_flow_sends_the_flow_button_and_stores_the_submitted_answers() {
    let app = graph_app(
        vec![
            include_str!("../../workflows/csat-flow.yaml"),
            include_str!("../../workflows/csat-flow-done.yaml"),
        ],
        Options::default(),
    )
    .await;
    call_ended(&app, "+447700900311", json!({"customer_name": "Chloe", "agent_name": "Bruno", "outcome": "resolved", "call_id": "c-77"})).await;
    eventually("survey sent", || async {
        runs_with_status(&app, "completed").await == 1
    })
    .await;
    let survey = &app.sends().await[0];
    assert_eq!(survey["template"]["name"], "csat_survey");
    let button = survey["template"]["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "button")
        .expect("a button component")
        .clone();
    assert_eq!(button["sub_type"], "flow");
    let action = &button["parameters"][0]["action"];
    assert_eq!(action["flow_action_data"]["agent"], "Bruno");
    assert_eq!(action["flow_action_data"]["call_id"], "c-77");
    let run_id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM runs")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(action["flow_token"], format!("{run_id}.survey"));

    // The customer submits the Flow (the shape of fixture 06, with the token Herald sent).
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
    response["flow_token"] = json!(format!("{run_id}.survey"));
    message["interactive"]["nfm_reply"]["response_json"] = json!(response.to_string());
    message["timestamp"] = json!(chrono::Utc::now().timestamp().to_string());
    assert_eq!(
        app.post_webhook(&serde_json::to_vec(&body).unwrap())
            .await
            .status(),
        200
    );
    eventually("answers stored", || async {
        runs_with_status(&app, "completed").await == 2
    })
    .await;
    let thanks = &app.sends().await[1];
    assert_eq!(thanks["type"], "text");
    assert_eq!(thanks["to"], "447700900311");
    let fields: Value =
        sqlx::query_scalar("SELECT fields FROM contacts WHERE customer_id = '447700900311'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(fields["csat_score"], "4");
    assert!(
        fields["csat_comment"]
            .as_str()
            .unwrap()
            .starts_with("Atendente foi")
    );
    app.cleanup().await;
}
