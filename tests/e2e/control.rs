//! Control flow end to end: delay (durable timers), branch, wait_for_response.

use std::time::Duration;

use herald::{app::Role, domain::EventType};
use serde_json::{Value, json};

use super::{
    fake_graph,
    harness::{Options, TestApp, eventually, runs_with_status, settle, spawn_app, text_body},
};

const FOLLOW_UP: &str = r#"
name: call-follow-up
trigger:
  event: call.ended
steps:
  - delay: { duration: 1s }
  - branch:
      id: by_outcome
      when:
        - condition: 'trigger.outcome == "booked"'
          steps:
            - send_template:
                id: confirm
                sender: "113355779900224"
                template: appointment_confirmed
                language: en_US
                variables: ["{{ trigger.customer_name }}"]
        - condition: 'trigger.outcome == "no_answer"'
          steps:
            - send_template:
                sender: "113355779900224"
                template: sorry_we_missed_you
                language: en_US
      else:
        - send_template:
            sender: "113355779900224"
            template: thanks_for_calling
            language: en_US
"#;

async fn call(app: &TestApp, phone: &str, outcome: &str) {
    app.publish_event(
        EventType::CallEnded,
        "calls",
        Some(phone.trim_start_matches('+')),
        json!({"customer_phone": phone, "customer_name": "Ana", "outcome": outcome}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_follow_up_waits_then_sends_the_template_of_its_outcome() {
    let app = spawn_app(Options {
        workflows: vec![FOLLOW_UP],
        graph: true,
        ..Default::default()
    })
    .await;
    fake_graph::accept_all(app.graph.as_ref().unwrap()).await;
    call(&app, "+4915100000031", "booked").await;
    call(&app, "+4915100000032", "no_answer").await;
    call(&app, "+4915100000033", "voicemail").await;
    eventually("three runs asleep", || async {
        runs_with_status(&app, "sleeping").await == 3
    })
    .await;
    assert!(
        app.sends().await.is_empty(),
        "nothing is sent before the delay"
    );
    eventually("three runs completed", || async {
        runs_with_status(&app, "completed").await == 3
    })
    .await;
    let mut sent: Vec<(String, String)> = app
        .sends()
        .await
        .iter()
        .map(|s| {
            (
                s["to"].as_str().unwrap().to_string(),
                s["template"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    sent.sort();
    assert_eq!(
        sent,
        [
            (
                "4915100000031".to_string(),
                "appointment_confirmed".to_string()
            ),
            (
                "4915100000032".to_string(),
                "sorry_we_missed_you".to_string()
            ),
            (
                "4915100000033".to_string(),
                "thanks_for_calling".to_string()
            ),
        ]
    );
    let arm: Value = sqlx::query_scalar(
        "SELECT context->'steps'->'by_outcome' FROM runs WHERE customer_id = '4915100000031'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(arm["arm"], 0);
    assert_eq!(app.count("SELECT count(*) FROM timers").await, 0);
    app.cleanup().await;
}

const SLOW: &str = r#"
name: slow
trigger:
  event: call.ended
steps:
  - delay: { duration: 3s }
  - send_template:
      sender: "113355779900224"
      template: later
      language: en_US
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delay_survives_stopping_every_instance_and_fires_once_with_two_schedulers_back() {
    let mut app = spawn_app(Options {
        workflows: vec![SLOW],
        graph: true,
        ..Default::default()
    })
    .await;
    fake_graph::accept_all(app.graph.as_ref().unwrap()).await;
    call(&app, "+4915100000041", "booked").await;
    eventually("run asleep", || async {
        runs_with_status(&app, "sleeping").await == 1
    })
    .await;
    app.stop_all().await;
    tokio::time::sleep(Duration::from_secs(4)).await; // the timer falls due while nothing runs
    assert!(app.sends().await.is_empty());
    // Two schedulers come back: the timer still fires once.
    app.start_more(&[Role::All]).await;
    app.start_more(&[Role::Scheduler]).await;
    eventually("run completed", || async {
        runs_with_status(&app, "completed").await == 1
    })
    .await;
    settle().await;
    assert_eq!(app.sends().await.len(), 1);
    app.cleanup().await;
}

const ASK: &str = r#"
name: ask-city
trigger:
  event: whatsapp.message_received
  filter: 'trigger.text == "start"'
steps:
  - send_text: { text: "Which city?" }
  - wait_for_response:
      id: city
      timeout: 2s
      on_timeout:
        - send_text: { id: nudge, text: "No answer, we will call you." }
  - branch:
      when:
        - condition: 'steps.city.timed_out == false'
          steps:
            - send_text: { id: thanks, text: "Thanks, {{ steps.city.text }} it is." }
"#;

const ANY_MESSAGE: &str = r#"
name: any-message
trigger:
  event: whatsapp.message_received
  filter: 'trigger.text != "start"'
steps:
  - send_text: { text: "auto-reply" }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_goes_to_the_waiting_run_and_starts_no_other_run() {
    let app = spawn_app(Options {
        workflows: vec![ASK, ANY_MESSAGE],
        graph: true,
        env: vec![],
        ..Default::default()
    })
    .await;
    fake_graph::accept_all(app.graph.as_ref().unwrap()).await;
    assert_eq!(
        app.post_webhook(&text_body("+4915100000051", "start", "wamid.W1"))
            .await
            .status(),
        200
    );
    eventually("run waits", || async {
        runs_with_status(&app, "waiting").await == 1
    })
    .await;
    assert_eq!(
        app.post_webhook(&text_body("+4915100000051", "Berlin", "wamid.W2"))
            .await
            .status(),
        200
    );
    eventually("run completed", || async {
        runs_with_status(&app, "completed").await == 1
    })
    .await;
    settle().await;
    let texts: Vec<String> = app
        .sends()
        .await
        .iter()
        .map(|s| s["text"]["body"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(texts, ["Which city?", "Thanks, Berlin it is."]);
    assert_eq!(
        app.count("SELECT count(*) FROM runs").await,
        1,
        "the reply started no other run"
    );
    let city: Value = sqlx::query_scalar("SELECT context->'steps'->'city' FROM runs")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(city["message_type"], "text");
    assert_eq!(
        app.count("SELECT count(*) FROM timers").await,
        0,
        "the timeout was cancelled"
    );
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_reply_the_timeout_steps_run() {
    let app = spawn_app(Options {
        workflows: vec![ASK],
        graph: true,
        ..Default::default()
    })
    .await;
    fake_graph::accept_all(app.graph.as_ref().unwrap()).await;
    assert_eq!(
        app.post_webhook(&text_body("+4915100000061", "start", "wamid.T1"))
            .await
            .status(),
        200
    );
    eventually("run completed after the timeout", || async {
        runs_with_status(&app, "completed").await == 1
    })
    .await;
    let texts: Vec<String> = app
        .sends()
        .await
        .iter()
        .map(|s| s["text"]["body"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(texts, ["Which city?", "No answer, we will call you."]);
    // A message after the timeout is an ordinary message again.
    assert_eq!(
        app.post_webhook(&text_body("+4915100000061", "start", "wamid.T2"))
            .await
            .status(),
        200
    );
    eventually("a new run", || async {
        app.count("SELECT count(*) FROM runs").await == 2
    })
    .await;
    app.cleanup().await;
}

const UNTIL: &str = r#"
name: until
trigger:
  event: call.ended
steps:
  - delay: { id: wait, until: "{{ trigger.at }}" }
  - send_template:
      sender: "113355779900224"
      template: later
      language: en_US
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delay_until_a_past_time_goes_on_at_once_and_a_bad_time_fails_the_step() {
    let app = spawn_app(Options {
        workflows: vec![UNTIL],
        graph: true,
        ..Default::default()
    })
    .await;
    fake_graph::accept_all(app.graph.as_ref().unwrap()).await;
    let past = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    app.publish_event(
        EventType::CallEnded,
        "calls",
        Some("4915100000111"),
        json!({"customer_phone": "+4915100000111", "at": past}),
    )
    .await;
    app.publish_event(
        EventType::CallEnded,
        "calls",
        Some("4915100000112"),
        json!({"customer_phone": "+4915100000112", "at": "next tuesday"}),
    )
    .await;
    eventually("one completed, one failed", || async {
        runs_with_status(&app, "completed").await == 1
            && runs_with_status(&app, "failed").await == 1
    })
    .await;
    assert_eq!(app.sends().await.len(), 1);
    let error: Value = sqlx::query_scalar("SELECT error FROM runs WHERE status = 'failed'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("'next tuesday': not a time"),
        "{error}"
    );
    app.cleanup().await;
}

const FRAGILE_BRANCH: &str = r#"
name: fragile
trigger:
  event: call.ended
steps:
  - branch:
      when:
        - condition: 'trigger.outcome == "booked"'
          steps:
            - send_template: { sender: "113355779900224", template: booked, language: en_US }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_branch_condition_that_cannot_be_evaluated_fails_with_a_hint_and_a_false_one_takes_no_arm()
 {
    let app = spawn_app(Options {
        workflows: vec![FRAGILE_BRANCH],
        graph: true,
        ..Default::default()
    })
    .await;
    fake_graph::accept_all(app.graph.as_ref().unwrap()).await;
    app.publish_event(
        EventType::CallEnded,
        "calls",
        Some("4915100000121"),
        json!({"customer_phone": "+4915100000121"}),
    )
    .await;
    app.publish_event(
        EventType::CallEnded,
        "calls",
        Some("4915100000122"),
        json!({"customer_phone": "+4915100000122", "outcome": "lost"}),
    )
    .await;
    eventually("one failed, one completed", || async {
        runs_with_status(&app, "failed").await == 1
            && runs_with_status(&app, "completed").await == 1
    })
    .await;
    let error: Value = sqlx::query_scalar("SELECT error FROM runs WHERE status = 'failed'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(
        error["message"].as_str().unwrap().contains("has(...)"),
        "{error}"
    );
    assert!(app.sends().await.is_empty());
    app.cleanup().await;
}
