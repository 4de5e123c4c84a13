//! Data PostgreSQL cannot keep never loops: a NUL character is stored escaped and the message
//! runs its workflow; data PostgreSQL refuses anyway (an over-long key) is quarantined with
//! the reason and answered 200, and the deliveries around it are not held back.

use serde_json::Value;

use super::harness::{Options, eventually, runs_with_status, settle, spawn_app, text_body};

const ECHO: &str = r#"
name: echo
trigger:
  event: whatsapp.message_received
steps:
  - send_text:
      text: "You said: {{ trigger.text }}"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_in_a_message_is_stored_escaped_and_the_message_runs_its_workflow() {
    let app = spawn_app(Options {
        workflows: vec![ECHO],
        ..Default::default()
    })
    .await;
    let body = text_body("+4915100000301", "a\u{0}b", "wamid.NUL1");
    assert!(
        String::from_utf8_lossy(&body).contains("\\u0000"),
        "the body spells the NUL as JSON does"
    );
    let response = app.post_webhook(&body).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["status"], "accepted", "{answer}");
    assert_eq!(
        answer["new_events"], 2,
        "message_received and conversation_started"
    );
    eventually("the echo ran", || async {
        runs_with_status(&app, "completed").await == 1
    })
    .await;
    let stored: String = sqlx::query_scalar(
        "SELECT cloudevent -> 'data' ->> 'text' FROM events WHERE type = 'whatsapp.message_received'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(stored, "a\\u0000b");
    // A redelivery is a duplicate, as for any message.
    let again: Value = app.post_webhook(&body).await.json().await.unwrap();
    assert_eq!(again["duplicates"], 1, "{again}");
    assert_eq!(again["new_events"], 0, "{again}");
    assert_eq!(app.count("SELECT count(*) FROM quarantine").await, 0);
    app.cleanup().await;
}

/// A wamid no real message has: long and random, so that its key cannot be compressed under
/// PostgreSQL's index row limit (2,704 bytes).
fn overlong_wamid() -> String {
    let mut id = String::from("wamid.");
    while id.len() < 12_000 {
        id.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_postgresql_refuses_is_quarantined_with_the_reason_and_answered_200() {
    let app = spawn_app(Options {
        workflows: vec![ECHO],
        ..Default::default()
    })
    .await;
    let bad = text_body("+4915100000302", "hello", &overlong_wamid());
    let good: Vec<Vec<u8>> = (0..8)
        .map(|i| {
            text_body(
                &format!("+49151000004{i:02}"),
                "hi",
                &format!("wamid.GOOD{i}"),
            )
        })
        .collect();
    // The bad one among good ones at the same moment: they may share the batched statement.
    let mut posts = vec![app.post_webhook(&bad)];
    posts.extend(good.iter().map(|b| app.post_webhook(b)));
    let answers = futures::future::join_all(posts).await;
    let mut statuses = Vec::new();
    for a in answers {
        let status = a.status().as_u16();
        let body: Value = a.json().await.unwrap();
        statuses.push((
            status,
            body["status"].as_str().unwrap_or_default().to_string(),
        ));
    }
    assert_eq!(
        statuses[0],
        (200, "quarantined".to_string()),
        "{statuses:?}"
    );
    for s in &statuses[1..] {
        assert_eq!(s, &(200, "accepted".to_string()), "{statuses:?}");
    }
    let reason: String = sqlx::query_scalar("SELECT reason FROM quarantine")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(
        reason.starts_with("PostgreSQL refused the data"),
        "{reason}"
    );
    eventually("every good message ran", || async {
        runs_with_status(&app, "completed").await == 8
    })
    .await;
    // Meta would deliver the bad one again: it is quarantined again, never a 503.
    let again = app.post_webhook(&bad).await;
    assert_eq!(again.status(), 200);
    settle().await;
    assert_eq!(app.count("SELECT count(*) FROM runs").await, 8);
    assert_eq!(app.count("SELECT count(*) FROM quarantine").await, 2);
    app.cleanup().await;
}
