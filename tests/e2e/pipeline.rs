use std::time::Duration;

use futures::future::join_all;
use serde_json::{Value, json};

use super::{
    fake_graph,
    harness::{
        Options, SENDER, TestApp, eventually, runs_with_status, settle, spawn_app, text_body,
    },
};

const GREET: &str = r#"
name: greet
trigger:
  event: whatsapp.message_received
  filter: 'trigger.message_type == "text"'
steps:
  - send_template:
      id: greet
      template: welcome_message
      language: pt_BR
      variables: ["{{ trigger.contact_name }}", "{{ trigger.text }}"]
"#;

const ON_START: &str = r#"
name: on-start
trigger:
  event: whatsapp.conversation_started
steps:
  - send_template:
      template: conversation_ack
      language: en_US
      variables: ["{{ trigger.conversation_id }}"]
"#;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_text_sends_the_template_with_mapped_variables_and_records_the_wamid() {
    let app = graph_app(vec![GREET]).await;
    let fixture = include_bytes!("../fixtures/whatsapp/01-inbound-text.json");
    let response = app.post_webhook(fixture).await;
    assert_eq!(response.status(), 200);

    eventually("run completed", || async {
        runs_with_status(&app, "completed").await == 1
    })
    .await;
    let sends = app.sends().await;
    assert_eq!(sends.len(), 1);
    let sent = &sends[0];
    assert_eq!(sent["messaging_product"], "whatsapp");
    assert_eq!(sent["to"], "5511987650101");
    assert_eq!(sent["type"], "template");
    assert_eq!(sent["template"]["name"], "welcome_message");
    assert_eq!(sent["template"]["language"]["code"], "pt_BR");
    let params = &sent["template"]["components"][0]["parameters"];
    assert_eq!(params[0]["text"], "Ana Souza");
    assert_eq!(
        params[1]["text"],
        "Hi! Can I move my appointment to Friday morning? \u{1f64f}"
    );

    let graph = app.graph.as_ref().unwrap();
    let request = &graph.received_requests().await.unwrap()[0];
    assert_eq!(request.url.path(), "/113355779900224/messages");

    let (wamid, provider, status): (String, String, String) =
        sqlx::query_as("SELECT wamid, provider, status FROM outbound_messages")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(wamid.starts_with("wamid.FAKE"), "{wamid}");
    assert_eq!(
        (provider.as_str(), status.as_str()),
        ("whatsapp", "accepted")
    );
    let output: Value =
        sqlx::query_scalar("SELECT output FROM step_attempts WHERE state = 'succeeded'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(output["message_id"], wamid);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_message_starts_a_conversation_and_the_second_within_24h_does_not() {
    let app = graph_app(vec![ON_START]).await;
    assert_eq!(
        app.post_webhook(&text_body("+4915112345678", "hi", "wamid.A1"))
            .await
            .status(),
        200
    );
    assert_eq!(
        app.post_webhook(&text_body("+4915112345678", "again", "wamid.A2"))
            .await
            .status(),
        200
    );
    // Another customer has a window of their own.
    assert_eq!(
        app.post_webhook(&text_body("+4915199999999", "hey", "wamid.B1"))
            .await
            .status(),
        200
    );
    eventually("two runs completed", || async {
        runs_with_status(&app, "completed").await == 2
    })
    .await;
    settle().await;
    assert_eq!(
        app.count("SELECT count(*) FROM events WHERE type = 'whatsapp.conversation_started'")
            .await,
        2
    );
    assert_eq!(
        app.count("SELECT count(*) FROM events WHERE type = 'whatsapp.message_received'")
            .await,
        3
    );
    // Both messages of the first customer share one conversation id.
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT cloudevent->'data'->>'conversation_id' FROM events
         WHERE type = 'whatsapp.message_received' AND subject = '4915112345678'",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], ids[1]);
    assert_eq!(app.sends().await.len(), 2);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_after_the_window_closed_starts_a_new_conversation() {
    let app = graph_app(vec![ON_START]).await;
    let old = chrono::Utc::now() - chrono::Duration::hours(30);
    let mut body: Value =
        serde_json::from_slice(&text_body("+4915112345678", "old", "wamid.OLD")).unwrap();
    body["entry"][0]["changes"][0]["value"]["messages"][0]["timestamp"] =
        json!(old.timestamp().to_string());
    assert_eq!(
        app.post_webhook(&serde_json::to_vec(&body).unwrap())
            .await
            .status(),
        200
    );
    assert_eq!(
        app.post_webhook(&text_body("+4915112345678", "new", "wamid.NEW"))
            .await
            .status(),
        200
    );
    eventually("two conversations", || async {
        app.count("SELECT count(*) FROM events WHERE type = 'whatsapp.conversation_started'")
            .await
            == 2
    })
    .await;
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_with_a_wrong_or_missing_signature_is_rejected_with_401_and_nothing_is_stored() {
    let app = graph_app(vec![GREET]).await;
    let body = text_body("+4915112345678", "hello", "wamid.SIG");
    let url = app.url("/webhooks/whatsapp");
    let wrong = herald::ingress::signature::sign(b"not-the-secret", &body);
    for sig in [
        Some(wrong.as_str()),
        None,
        Some("sha256=00"),
        Some("garbage"),
    ] {
        let mut req = app.http.post(&url).body(body.clone());
        if let Some(s) = sig {
            req = req.header("x-hub-signature-256", s);
        }
        let response = req.send().await.unwrap();
        assert_eq!(response.status(), 401, "{sig:?}");
        let reason: Value = response.json().await.unwrap();
        assert_eq!(reason["error"], "bad_signature");
    }
    settle().await;
    assert_eq!(app.count("SELECT count(*) FROM events").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM quarantine").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM runs").await, 0);
    assert!(app.sends().await.is_empty());
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_delivery_produces_one_event_one_run_and_one_send() {
    let app = graph_app(vec![GREET]).await;
    // Sequential repeats.
    let body = text_body("+4915112345678", "hello", "wamid.DUP1");
    for _ in 0..2 {
        assert_eq!(app.post_webhook(&body).await.status(), 200);
    }
    // Three deliveries of another message at once.
    let body2 = text_body("+4915187654321", "hello", "wamid.DUP2");
    let statuses = join_all((0..3).map(|_| app.post_webhook(&body2))).await;
    assert!(statuses.iter().all(|r| r.status() == 200));
    eventually("two runs completed", || async {
        runs_with_status(&app, "completed").await == 2
    })
    .await;
    settle().await;
    assert_eq!(
        app.count("SELECT count(*) FROM events WHERE type = 'whatsapp.message_received'")
            .await,
        2
    );
    assert_eq!(
        app.count("SELECT count(*) FROM events WHERE type = 'whatsapp.conversation_started'")
            .await,
        2
    );
    assert_eq!(app.count("SELECT count(*) FROM runs").await, 2);
    assert_eq!(app.sends().await.len(), 2);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_malformed_body_is_quarantined_answered_200_and_can_be_replayed() {
    let app = graph_app(vec![GREET]).await;
    let response = app
        .post_webhook(b"{\"object\": \"whatsapp_business_account\", \"entry\": [")
        .await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["status"], "quarantined");
    let response = app.post_webhook(b"[1, 2, 3]").await;
    assert_eq!(response.status(), 200);
    assert_eq!(app.count("SELECT count(*) FROM quarantine").await, 2);
    assert_eq!(app.count("SELECT count(*) FROM events").await, 0);

    // A delivery with one good and one broken message: the good one runs, the body is kept.
    let mut body: Value =
        serde_json::from_slice(&text_body("+4915112345678", "hello", "wamid.GOOD")).unwrap();
    let mut broken = body["entry"][0]["changes"][0]["value"]["messages"][0].clone();
    broken.as_object_mut().unwrap().remove("id");
    body["entry"][0]["changes"][0]["value"]["messages"]
        .as_array_mut()
        .unwrap()
        .push(broken);
    let bytes = serde_json::to_vec(&body).unwrap();
    let response = app.post_webhook(&bytes).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    let qid = answer["quarantine_id"]
        .as_str()
        .expect("quarantined")
        .to_string();
    eventually("good message ran", || async {
        runs_with_status(&app, "completed").await == 1
    })
    .await;

    let stored: Vec<u8> = sqlx::query_scalar("SELECT body FROM quarantine WHERE id = $1::uuid")
        .bind(&qid)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, bytes, "kept whole, byte for byte");

    // Replaying stores nothing twice.
    let bus = herald::bus::Bus::new(&app.config());
    let keywords = app.config().opt_out_keywords;
    let result =
        herald::ingress::quarantine::replay(&app.pool, &bus, qid.parse().unwrap(), &keywords)
            .await
            .unwrap();
    assert!(result.contains("0 new events"), "{result}");
    settle().await;
    assert_eq!(app.count("SELECT count(*) FROM runs").await, 1);
    assert_eq!(app.sends().await.len(), 1);
    bus.close().await;
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_is_rejected_with_413() {
    let app = spawn_app(Options {
        env: vec![("HERALD_MAX_BODY_BYTES", "1024".into())],
        ..Default::default()
    })
    .await;
    let big = vec![b' '; 2048];
    let response = app.post_webhook(&big).await;
    assert_eq!(response.status(), 413);
    assert_eq!(app.count("SELECT count(*) FROM quarantine").await, 0);
    // A body under the limit still goes through.
    let ok = app
        .post_webhook(&text_body("+4915112345678", "hi", "wamid.SMALL"))
        .await;
    assert_eq!(ok.status(), 200);
    app.cleanup().await;
}

const ON_UNSUPPORTED: &str = r#"
name: cannot-read
trigger:
  event: whatsapp.message_received
  filter: 'trigger.message_type == "unsupported"'
steps:
  - send_text:
      text: "Sorry, I can only read text."
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsupported_message_type_is_stored_emitted_and_can_be_answered() {
    let app = graph_app(vec![ON_UNSUPPORTED]).await;
    let mut body: Value =
        serde_json::from_slice(&text_body("+4915112345678", "x", "wamid.UNS")).unwrap();
    let msg = &mut body["entry"][0]["changes"][0]["value"]["messages"][0];
    msg.as_object_mut().unwrap().remove("text");
    msg["type"] = json!("unsupported");
    msg["errors"] = json!([{"code": 131051, "title": "Message type unknown"}]);
    assert_eq!(
        app.post_webhook(&serde_json::to_vec(&body).unwrap())
            .await
            .status(),
        200
    );
    eventually("reply sent", || async {
        runs_with_status(&app, "completed").await == 1
    })
    .await;
    let data: Value = sqlx::query_scalar(
        "SELECT cloudevent->'data' FROM events WHERE type = 'whatsapp.message_received'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(data["message_type"], "unsupported");
    assert_eq!(data["errors"][0]["code"], 131051);
    let sends = app.sends().await;
    assert_eq!(sends[0]["text"]["body"], "Sorry, I can only read text.");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_down_at_post_time_answers_503_and_the_redelivered_webhook_runs_once() {
    let app = spawn_app(Options {
        workflows: vec![GREET],
        graph: true,
        amqp_proxy: true,
        ..Default::default()
    })
    .await;
    fake_graph::accept_all(app.graph.as_ref().unwrap()).await;
    let body = text_body("+4915112345678", "hello", "wamid.MQDOWN");
    app.amqp_proxy.as_ref().unwrap().cut();
    let response = app.post_webhook(&body).await;
    assert_eq!(response.status(), 503);
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(
        ready,
        json!({"status": "not ready", "postgres": "ok", "rabbitmq": "unavailable", "sandbox": false}),
        "no driver error text in a public answer"
    );

    app.amqp_proxy.as_ref().unwrap().restore();
    // Meta delivers again (and the outbox relay publishes what was stored).
    eventually("redelivery accepted", || async {
        app.post_webhook(&body).await.status() == 200
    })
    .await;
    eventually("run completed", || async {
        runs_with_status(&app, "completed").await == 1
    })
    .await;
    settle().await;
    assert_eq!(app.post_webhook(&body).await.status(), 200);
    settle().await;
    assert_eq!(app.count("SELECT count(*) FROM runs").await, 1);
    assert_eq!(app.sends().await.len(), 1);
    assert_eq!(app.count("SELECT count(*) FROM outbox").await, 0);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_at_post_time_answers_503_and_recovers() {
    let app = spawn_app(Options {
        workflows: vec![GREET],
        graph: true,
        pg_proxy: true,
        ..Default::default()
    })
    .await;
    fake_graph::accept_all(app.graph.as_ref().unwrap()).await;
    let body = text_body("+4915112345678", "hello", "wamid.PGDOWN");
    app.pg_proxy.as_ref().unwrap().cut();
    assert_eq!(app.post_webhook(&body).await.status(), 503);
    app.pg_proxy.as_ref().unwrap().restore();
    eventually("redelivery accepted", || async {
        app.post_webhook(&body).await.status() == 200
    })
    .await;
    eventually("run completed", || async {
        runs_with_status(&app, "completed").await == 1
    })
    .await;
    settle().await;
    assert_eq!(app.sends().await.len(), 1);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verification_handshake_echoes_the_challenge_only_for_the_right_token() {
    let app = spawn_app(Options::default()).await;
    let ok = app
        .http
        .get(app.url("/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token=test-verify-token&hub.challenge=1158201444"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), "1158201444");
    for query in [
        "hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1",
        "hub.mode=unsubscribe&hub.verify_token=test-verify-token&hub.challenge=1",
        "hub.mode=subscribe&hub.challenge=1",
        "",
    ] {
        let r = app
            .http
            .get(app.url(&format!("/webhooks/whatsapp?{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{query}");
    }
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_published_as_cloudevents_with_type_and_sender_in_the_routing_key() {
    use futures::StreamExt;
    use lapin::{options::*, types::FieldTable};
    let app = spawn_app(Options::default()).await;
    let conn =
        lapin::Connection::connect("amqp://guest:guest@127.0.0.1:5672/%2f", Default::default())
            .await
            .unwrap();
    let channel = conn.create_channel().await.unwrap();
    let queue = format!("{}.integrator", app.names_prefix());
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.as_str().into(),
            format!("{}.events", app.names_prefix()).as_str().into(),
            format!("whatsapp.message_received.{SENDER}")
                .as_str()
                .into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    // The first message also opens a conversation: that event comes from the statement's other
    // branch (the further events of a message).
    channel
        .queue_bind(
            queue.as_str().into(),
            format!("{}.events", app.names_prefix()).as_str().into(),
            format!("whatsapp.conversation_started.{SENDER}")
                .as_str()
                .into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "t".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        app.post_webhook(&text_body("+4915112345678", "hello", "wamid.CE"))
            .await
            .status(),
        200
    );
    let mut deliveries = Vec::new();
    for _ in 0..2 {
        let d = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("an event")
            .unwrap()
            .unwrap();
        deliveries.push(d);
    }
    let received_key = format!("whatsapp.message_received.{SENDER}");
    let (received, started): (Vec<_>, Vec<_>) = deliveries
        .into_iter()
        .partition(|d| d.routing_key.as_str() == received_key);
    let (Ok([delivery]), Ok([started])) =
        (<[_; 1]>::try_from(received), <[_; 1]>::try_from(started))
    else {
        panic!("one message_received and one conversation_started on the bus");
    };
    assert_eq!(
        delivery.routing_key.as_str(),
        format!("whatsapp.message_received.{SENDER}")
    );
    assert_eq!(delivery.properties.delivery_mode(), &Some(2), "persistent");
    let event: Value = serde_json::from_slice(&delivery.data).unwrap();
    assert_eq!(event["specversion"], "1.0");
    assert_eq!(event["type"], "whatsapp.message_received");
    assert_eq!(event["source"], format!("/whatsapp/{SENDER}"));
    assert_eq!(event["data"]["customer_phone"], "+4915112345678");
    assert_eq!(event["data"]["text"], "hello");
    assert_eq!(event["data"]["message_id"], "wamid.CE");
    assert!(event["data"]["conversation_id"].is_string());
    // What the bus carries is the event as stored, conversation id included.
    let stored: Value =
        sqlx::query_scalar("SELECT cloudevent FROM events WHERE dedup_key = 'message:wamid.CE'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(event, stored);
    let started: Value = serde_json::from_slice(&started.data).unwrap();
    assert_eq!(started["type"], "whatsapp.conversation_started");
    assert_eq!(
        started["data"]["conversation_id"],
        event["data"]["conversation_id"]
    );
    let stored: Value = sqlx::query_scalar(
        "SELECT cloudevent FROM events WHERE type = 'whatsapp.conversation_started'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(started, stored);
    let _ = conn.close(200, "done".into()).await;
    app.cleanup().await;
}

const TEXT_TO_STRANGER: &str = r#"
name: text-stranger
trigger:
  event: whatsapp.message_received
steps:
  - send_text:
      to: "+4915100000001"
      text: "Hello {{ trigger.contact_name }}"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_text_outside_the_24_hour_window_fails_and_sends_nothing() {
    let app = graph_app(vec![TEXT_TO_STRANGER]).await;
    assert_eq!(
        app.post_webhook(&text_body("+4915112345678", "hi", "wamid.OW"))
            .await
            .status(),
        200
    );
    eventually("run failed", || async {
        runs_with_status(&app, "failed").await == 1
    })
    .await;
    let error: Value = sqlx::query_scalar("SELECT error FROM runs")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(error["class"], "Outside 24-hour window");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("Outside 24-hour window")
    );
    assert!(app.sends().await.is_empty());
    app.cleanup().await;
}

const MISSING_VAR: &str = r#"
name: needs-name
trigger:
  event: whatsapp.message_received
steps:
  - send_template:
      template: appointment_reminder
      language: en_US
      variables: ["{{ trigger.customer_name }}"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_variable_fails_the_step_naming_it_and_never_sends_an_empty_string() {
    let app = graph_app(vec![MISSING_VAR]).await;
    assert_eq!(
        app.post_webhook(&text_body("+4915112345678", "hi", "wamid.MV"))
            .await
            .status(),
        200
    );
    eventually("run failed", || async {
        runs_with_status(&app, "failed").await == 1
    })
    .await;
    let error: Value = sqlx::query_scalar("SELECT error FROM runs")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(error["message"], "Missing variable trigger.customer_name");
    assert!(app.sends().await.is_empty());
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graph_api_error_is_recorded_with_its_class_and_code() {
    let app = spawn_app(Options {
        workflows: vec![GREET],
        graph: true,
        ..Default::default()
    })
    .await;
    let body = include_bytes!("../fixtures/whatsapp/graph-errors/132001-template-not-found.json");
    fake_graph::fail_with(app.graph.as_ref().unwrap(), 404, body).await;
    assert_eq!(
        app.post_webhook(&text_body("+4915112345678", "hi", "wamid.GE"))
            .await
            .status(),
        200
    );
    eventually("run failed", || async {
        runs_with_status(&app, "failed").await == 1
    })
    .await;
    let error: Value = sqlx::query_scalar("SELECT error FROM step_attempts")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(error["class"], "Template not found");
    assert_eq!(error["provider_code"], 132001);
    assert_eq!(error["retryable"], false);
    assert_eq!(app.count("SELECT count(*) FROM outbound_messages").await, 0);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_delivery_with_several_messages_and_statuses_is_handled_whole_and_statuses_only_move_forward()
 {
    let app = graph_app(vec![GREET]).await;
    assert_eq!(
        app.post_webhook(&text_body("+4915112345678", "hi", "wamid.FIRST"))
            .await
            .status(),
        200
    );
    eventually("first run", || async {
        runs_with_status(&app, "completed").await == 1
    })
    .await;
    let wamid: String = sqlx::query_scalar("SELECT wamid FROM outbound_messages")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let message = |id: &str, from: &str| json!({"from": from, "id": id, "timestamp": chrono::Utc::now().timestamp().to_string(), "type": "text", "text": {"body": "hello"}});
    let status = |s: &str| json!({"id": wamid, "status": s, "timestamp": chrono::Utc::now().timestamp().to_string(), "recipient_id": "4915112345678"});
    let batch = json!({
        "object": "whatsapp_business_account",
        "entry": [
            {"id": "1", "changes": [{"field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550104477", "phone_number_id": SENDER},
                "contacts": [{"profile": {"name": "B"}, "wa_id": "4915100000002"}],
                "messages": [message("wamid.B1", "4915100000002"), message("wamid.B2", "4915100000002")],
                "statuses": [status("sent"), status("read")]
            }}]},
            {"id": "1", "changes": [{"field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550104477", "phone_number_id": SENDER},
                "contacts": [{"profile": {"name": "C"}, "wa_id": "4915100000003"}],
                "messages": [message("wamid.C1", "4915100000003")],
                "statuses": [status("delivered")]
            }}]}
        ]
    });
    assert_eq!(
        app.post_webhook(&serde_json::to_vec(&batch).unwrap())
            .await
            .status(),
        200
    );
    eventually("four runs", || async {
        runs_with_status(&app, "completed").await == 4
    })
    .await;
    assert_eq!(
        app.count("SELECT count(*) FROM events WHERE type = 'whatsapp.message_status'")
            .await,
        3
    );
    let current: String =
        sqlx::query_scalar("SELECT status FROM outbound_messages WHERE wamid = $1")
            .bind(&wamid)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(current, "read", "a late 'delivered' does not undo 'read'");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_answer() {
    let app = spawn_app(Options {
        workflows: vec![GREET],
        ..Default::default()
    })
    .await;
    assert_eq!(
        app.http
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let ready: Value = app
        .http
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ready");
    assert_eq!(
        app.post_webhook(&text_body("+4915112345678", "hi", "wamid.MET"))
            .await
            .status(),
        200
    );
    eventually("run completed", || async {
        runs_with_status(&app, "completed").await == 1
    })
    .await;
    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "herald_events_received_total",
        "herald_runs_started_total",
        "herald_steps_total",
        "herald_send_latency_seconds",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    // The sandbox recorded what it would have sent.
    let (provider, request): (String, Value) =
        sqlx::query_as("SELECT provider, request FROM outbound_messages")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(provider, "sandbox");
    assert_eq!(request["template"]["name"], "welcome_message");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_says_whether_the_process_runs_in_sandbox_mode() {
    for graph in [false, true] {
        let app = spawn_app(Options {
            workflows: vec![GREET],
            graph,
            ..Default::default()
        })
        .await;
        let ready: serde_json::Value = app
            .http
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(ready["status"], "ready", "{ready}");
        assert_eq!(ready["sandbox"], !graph, "{ready}");
        app.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_ops_token_metrics_and_readyz_details_need_it() {
    let app = spawn_app(Options {
        workflows: vec![GREET],
        env: vec![("HERALD_OPS_TOKEN", "ops-secret".into())],
        ..Default::default()
    })
    .await;
    let get = |path: &'static str, token: Option<&'static str>| {
        let mut request = app.http.get(app.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    assert_eq!(get("/metrics", None).await.unwrap().status(), 401);
    assert_eq!(get("/metrics", Some("wrong")).await.unwrap().status(), 401);
    let metrics = get("/metrics", Some("ops-secret")).await.unwrap();
    assert_eq!(metrics.status(), 200);
    let bare: Value = get("/readyz", None).await.unwrap().json().await.unwrap();
    assert_eq!(bare, json!({"status": "ready"}));
    let full: Value = get("/readyz", Some("ops-secret"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        full,
        json!({"status": "ready", "postgres": "ok", "rabbitmq": "ok", "sandbox": true})
    );
    app.cleanup().await;
}
