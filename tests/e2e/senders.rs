//! Senders: throughput limits that hold across worker processes, per-recipient gaps, 429
//! storms, offline senders (fail fast, probe, come back) and quality drops that pause
//! dispatches with one team notification.

use std::{
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use herald::app::Role;
use serde_json::{Value, json};
use wiremock::{
    Mock, MockServer, Request, Respond, ResponseTemplate,
    matchers::{method, path, path_regex},
};

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
steps:
  - send_template:
      id: greet
      template: welcome_message
      language: en_US
"#;

const TWICE: &str = r#"
name: twice
trigger:
  event: whatsapp.message_received
steps:
  - send_template:
      id: first
      template: welcome_message
      language: en_US
  - send_template:
      id: second
      template: welcome_message
      language: en_US
"#;

const RATE_LIMITED: &[u8] =
    include_bytes!("../fixtures/whatsapp/graph-errors/130429-throughput-rate-limit.json");
const NOT_REGISTERED: &[u8] = br#"{"error": {"message": "(#133010) Account not registered", "type": "OAuthException", "code": 133010, "error_data": {"messaging_product": "whatsapp", "details": "Account not registered"}, "fbtrace_id": "AbC"}}"#;

/// One call the fake Graph API received: when, to whom, and what it answered.
#[derive(Clone, Debug)]
struct Call {
    at: Instant,
    to: String,
    status: u16,
}

/// A fake Graph API that records the time of every send; during `storm` after it starts it
/// refuses sends with 429 / 130429, as Meta does when throughput is exceeded.
#[derive(Clone)]
struct Recorder {
    calls: Arc<Mutex<Vec<Call>>>,
    started: Instant,
    storm: Duration,
    /// Refuse this many first calls with a 400 and this body (besides the storm).
    refuse_first: usize,
    refusal: &'static [u8],
}

impl Recorder {
    async fn mount(graph: &MockServer, storm: Duration) -> Recorder {
        Recorder {
            calls: Arc::default(),
            started: Instant::now(),
            storm,
            refuse_first: 0,
            refusal: b"",
        }
        .mount_on(graph)
        .await
    }

    async fn mount_on(self, graph: &MockServer) -> Recorder {
        let recorder = self;
        Mock::given(method("POST"))
            .and(path_regex(r"^/\d+/messages$"))
            .respond_with(recorder.clone())
            .mount(graph)
            .await;
        recorder
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn accepted(&self) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.status == 200)
            .collect()
    }
}

impl Respond for Recorder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or_default();
        let to = body["to"].as_str().unwrap_or_default().to_string();
        let now = Instant::now();
        let storming = now < self.started + self.storm;
        let mut calls = self.calls.lock().unwrap();
        let refused = calls.len() < self.refuse_first;
        calls.push(Call {
            at: now,
            to: to.clone(),
            status: if storming {
                429
            } else if refused {
                400
            } else {
                200
            },
        });
        drop(calls);
        if refused {
            return ResponseTemplate::new(400)
                .set_body_raw(self.refusal.to_vec(), "application/json");
        }
        if storming {
            return ResponseTemplate::new(429)
                .set_body_raw(RATE_LIMITED.to_vec(), "application/json");
        }
        ResponseTemplate::new(200).set_body_json(json!({
            "messaging_product": "whatsapp",
            "contacts": [{"input": to, "wa_id": to}],
            "messages": [{"id": format!("wamid.FAKE{}", uuid::Uuid::now_v7().simple())}],
        }))
    }
}

/// The most calls in any one-second window [t, t + 1 s).
fn busiest_second(calls: &[Call]) -> usize {
    let mut times: Vec<Instant> = calls.iter().map(|c| c.at).collect();
    times.sort();
    (0..times.len())
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|t| **t - times[i] < Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0)
}

fn herald(app: &TestApp, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .envs(&app.vars)
        .output()
        .expect("run herald")
}

fn customer(i: usize) -> String {
    format!("+49151000{i:05}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_worker_instances_together_never_exceed_the_sender_rate_and_send_each_message_once() {
    let mut app = spawn_app(Options {
        workflows: vec![GREET],
        graph: true,
        // 5/s: a slot every 200 ms, so scheduling jitter on a busy test machine (a send that
        // leaves a little after its slot) cannot put a sixth message into one second.
        env: vec![("HERALD_SENDER_RATE", "5".into())],
        ..Default::default()
    })
    .await;
    app.start_more(&[Role::Worker]).await;
    let recorder = Recorder::mount(app.graph.as_ref().unwrap(), Duration::ZERO).await;
    let posts = (0..40).map(|i| {
        let body = text_body(&customer(i), "hi", &format!("wamid.RATE{i}"));
        let app = &app;
        async move { app.post_webhook(&body).await.status() }
    });
    for status in futures::future::join_all(posts).await {
        assert_eq!(status, 200);
    }
    eventually("40 runs completed", || async {
        runs_with_status(&app, "completed").await == 40
    })
    .await;
    settle().await;
    let calls = recorder.calls();
    assert_eq!(calls.len(), 40, "each message sent once");
    let mut recipients: Vec<&str> = calls.iter().map(|c| c.to.as_str()).collect();
    recipients.sort();
    recipients.dedup();
    assert_eq!(recipients.len(), 40, "every customer got their message");
    let busiest = busiest_second(&calls);
    assert!(
        busiest <= 6,
        "at most 5 per second (plus the first of a burst); the busiest second had {busiest}"
    );
    let first = calls.iter().map(|c| c.at).min().unwrap();
    let last = calls.iter().map(|c| c.at).max().unwrap();
    assert!(
        last - first >= Duration::from_millis(7500),
        "40 messages at 5/s take about 8 s, took {:?}",
        last - first
    );
    assert_eq!(
        app.count("SELECT count(*) FROM step_attempts WHERE state <> 'succeeded'")
            .await,
        0,
        "pacing is not a failed attempt"
    );
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_messages_to_one_customer_keep_the_gap_and_other_customers_are_not_delayed() {
    let app = spawn_app(Options {
        workflows: vec![TWICE],
        graph: true,
        env: vec![
            ("HERALD_RECIPIENT_GAP", "2s".into()),
            ("HERALD_RECIPIENT_BURST", "1".into()),
            // The second message's slot (2 s away) is farther than this: it is deferred.
            ("HERALD_PACING_MAX_WAIT", "500ms".into()),
        ],
        ..Default::default()
    })
    .await;
    let recorder = Recorder::mount(app.graph.as_ref().unwrap(), Duration::ZERO).await;
    let (ana, bia) = ("+4915100000301", "+4915100000302");
    let (body_a, body_b) = (
        text_body(ana, "hi", "wamid.GAP1"),
        text_body(bia, "hi", "wamid.GAP2"),
    );
    let (a, b) = tokio::join!(app.post_webhook(&body_a), app.post_webhook(&body_b));
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    eventually("both runs completed", || async {
        runs_with_status(&app, "completed").await == 2
    })
    .await;
    let calls = recorder.calls();
    assert_eq!(calls.len(), 4, "two messages each, sent once");
    let times = |who: &str| -> Vec<Instant> {
        let digits = who.trim_start_matches('+');
        calls
            .iter()
            .filter(|c| c.to == digits)
            .map(|c| c.at)
            .collect()
    };
    let (ana, bia) = (times(ana), times(bia));
    assert!(
        ana[1] - ana[0] >= Duration::from_millis(1900),
        "the same customer's messages are {:?} apart",
        ana[1] - ana[0]
    );
    assert!(bia[1] - bia[0] >= Duration::from_millis(1900));
    let firsts = if ana[0] > bia[0] {
        ana[0] - bia[0]
    } else {
        bia[0] - ana[0]
    };
    assert!(
        firsts < Duration::from_millis(1000),
        "a different customer is not held back by the first one's gap ({firsts:?})"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM step_attempts").await,
        4,
        "a deferred send uses no attempt: one attempt per step"
    );
    assert_eq!(app.count("SELECT count(*) FROM dead_letters").await, 0);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_loses_nothing_sends_nothing_twice_and_uses_no_attempts() {
    let app = spawn_app(Options {
        workflows: vec![GREET],
        graph: true,
        env: vec![("HERALD_RETRY_ATTEMPTS", "1".into())],
        ..Default::default()
    })
    .await;
    let recorder = Recorder::mount(app.graph.as_ref().unwrap(), Duration::from_secs(2)).await;
    for i in 0..6 {
        let status = app
            .post_webhook(&text_body(
                &customer(500 + i),
                "hi",
                &format!("wamid.STORM{i}"),
            ))
            .await
            .status();
        assert_eq!(status, 200);
    }
    eventually("every run completed after the storm", || async {
        runs_with_status(&app, "completed").await == 6
    })
    .await;
    settle().await;
    let refused = recorder.calls().len() - recorder.accepted().len();
    // After the first refusal the sender is held for a second (no worker sends from it), so
    // fewer sends hit the storm than messages waited.
    assert!(refused >= 1, "the storm refused sends");
    let mut accepted: Vec<String> = recorder.accepted().into_iter().map(|c| c.to).collect();
    accepted.sort();
    let sent = accepted.len();
    accepted.dedup();
    assert_eq!(
        (sent, accepted.len()),
        (6, 6),
        "each message accepted exactly once"
    );
    assert_eq!(app.count("SELECT count(*) FROM dead_letters").await, 0);
    assert_eq!(
        app.count(
            "SELECT count(*) FROM step_attempts WHERE state = 'failed' AND error->>'class' <> 'Rate limited'"
        )
        .await,
        0
    );
    assert!(
        app.count("SELECT max(attempt)::bigint FROM step_attempts")
            .await
            > 1,
        "with one attempt allowed, the rate-limited retries did not use it up"
    );
    app.cleanup().await;
}

const PAIR_LIMIT: &[u8] = br#"{"error": {"message": "(#131056) (Business Account, Consumer Account) pair rate limit hit", "type": "OAuthException", "code": 131056, "error_data": {"messaging_product": "whatsapp", "details": "Message failed to send because there were too many messages sent from this phone number to the same phone number in a short period of time."}, "fbtrace_id": "AbD"}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pair_rate_limit_answer_holds_that_customer_for_a_full_gap() {
    let app = spawn_app(Options {
        workflows: vec![GREET],
        graph: true,
        ..Default::default()
    })
    .await;
    let recorder = Recorder {
        calls: Arc::default(),
        started: Instant::now(),
        storm: Duration::ZERO,
        refuse_first: 1,
        refusal: PAIR_LIMIT,
    }
    .mount_on(app.graph.as_ref().unwrap())
    .await;
    assert_eq!(
        app.post_webhook(&text_body("+4915100000601", "hi", "wamid.PAIR1"))
            .await
            .status(),
        200
    );
    eventually("run completed", || async {
        runs_with_status(&app, "completed").await == 1
    })
    .await;
    let calls = recorder.calls();
    assert_eq!(
        calls.iter().map(|c| c.status).collect::<Vec<_>>(),
        [400, 200]
    );
    assert!(
        calls[1].at - calls[0].at >= Duration::from_millis(5900),
        "after 131056 the customer waits Meta's 6 s pair gap, waited {:?}",
        calls[1].at - calls[0].at
    );
    assert_eq!(
        attempts(&app).await,
        [
            ("failed".to_string(), Some("Rate limited".to_string())),
            ("succeeded".to_string(), None)
        ]
    );
    app.cleanup().await;
}

async fn attempts(app: &TestApp) -> Vec<(String, Option<String>)> {
    sqlx::query_as("SELECT state, error->>'class' FROM step_attempts ORDER BY attempt")
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_sender_fails_fast_without_calling_meta_and_is_retried() {
    let app = spawn_app(Options {
        workflows: vec![GREET],
        graph: true,
        env: vec![("HERALD_RETRY_WAIT", "1s".into())],
        ..Default::default()
    })
    .await;
    let recorder = Recorder::mount(app.graph.as_ref().unwrap(), Duration::ZERO).await;
    let out = herald(&app, &["senders", "set-status", SENDER, "offline"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        app.post_webhook(&text_body("+4915100000401", "hi", "wamid.OFF1"))
            .await
            .status(),
        200
    );
    eventually("run failed after the retry", || async {
        runs_with_status(&app, "failed").await == 1
    })
    .await;
    let failed = ("failed".to_string(), Some("Sender offline".to_string()));
    assert_eq!(
        attempts(&app).await,
        [failed.clone(), failed],
        "tried, then retried"
    );
    assert!(recorder.calls().is_empty(), "Meta was never called");
    let error: String =
        sqlx::query_scalar("SELECT error->>'message' FROM step_attempts ORDER BY attempt LIMIT 1")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(
        error.contains(&format!("sender {SENDER} is offline")),
        "{error}"
    );

    let bad = herald(&app, &["senders", "set-status", SENDER, "asleep"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown status 'asleep'"));
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_answering_not_registered_marks_the_sender_offline_until_an_operator_reconnects_it() {
    let app = spawn_app(Options {
        workflows: vec![GREET],
        graph: true,
        env: vec![("HERALD_RETRY_WAIT", "1s".into())],
        ..Default::default()
    })
    .await;
    let graph = app.graph.as_ref().unwrap();
    fake_graph::fail_with(graph, 400, NOT_REGISTERED).await;
    assert_eq!(
        app.post_webhook(&text_body("+4915100000402", "hi", "wamid.OFF2"))
            .await
            .status(),
        200
    );
    eventually("run failed", || async {
        runs_with_status(&app, "failed").await == 1
    })
    .await;
    assert_eq!(
        app.sends().await.len(),
        1,
        "the retry failed fast, without Meta"
    );
    let shown = herald(&app, &["senders", "show", SENDER, "--json"]);
    assert!(shown.status.success());
    let shown: Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["status"], "offline");
    assert!(
        shown["status_detail"].as_str().unwrap().contains("133010"),
        "{shown}"
    );
    let provider_code: Option<i64> = sqlx::query_scalar(
        "SELECT (error->>'provider_code')::bigint FROM step_attempts ORDER BY attempt LIMIT 1",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(provider_code, Some(133010));

    // The number is registered again: the operator says so and retries the dead letter.
    Mock::given(method("POST"))
        .and(path_regex(r"^/\d+/messages$"))
        .respond_with(fake_graph::Accept {
            delay: Duration::ZERO,
        })
        .with_priority(1)
        .mount(graph)
        .await;
    let out = herald(&app, &["senders", "set-status", SENDER, "connected"]);
    assert!(out.status.success());
    let dead: uuid::Uuid = sqlx::query_scalar("SELECT id FROM dead_letters")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let retried = herald(&app, &["dead-letters", "retry", &dead.to_string()]);
    assert!(
        retried.status.success(),
        "{}",
        String::from_utf8_lossy(&retried.stderr)
    );
    eventually("run completed", || async {
        runs_with_status(&app, "completed").await == 1
    })
    .await;
    assert_eq!(app.sends().await.len(), 2);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_sender_is_probed_after_the_recheck_period_and_a_success_reconnects_it() {
    let app = spawn_app(Options {
        workflows: vec![GREET],
        graph: true,
        env: vec![
            ("HERALD_RETRY_WAIT", "2s".into()),
            ("HERALD_SENDER_RECHECK", "1s".into()),
        ],
        ..Default::default()
    })
    .await;
    let recorder = Recorder::mount(app.graph.as_ref().unwrap(), Duration::ZERO).await;
    assert!(
        herald(&app, &["senders", "set-status", SENDER, "offline"])
            .status
            .success()
    );
    assert_eq!(
        app.post_webhook(&text_body("+4915100000403", "hi", "wamid.OFF3"))
            .await
            .status(),
        200
    );
    eventually("run completed by the probe", || async {
        runs_with_status(&app, "completed").await == 1
    })
    .await;
    assert_eq!(
        attempts(&app).await,
        [
            ("failed".to_string(), Some("Sender offline".to_string())),
            ("succeeded".to_string(), None)
        ]
    );
    assert_eq!(recorder.calls().len(), 1);
    let status: String = sqlx::query_scalar("SELECT status FROM senders WHERE id = $1")
        .bind(SENDER)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(status, "connected");
    app.cleanup().await;
}

fn quality_body(event: &str, time: i64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "object": "whatsapp_business_account",
        "entry": [{
            "id": "210987654321098",
            "time": time,
            "changes": [{
                "field": "phone_number_quality_update",
                "value": {"display_phone_number": "15550104477", "event": event, "current_limit": "TIER_10K"}
            }]
        }]
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quality_drop_pauses_dispatches_notifies_once_and_an_operator_resumes() {
    let team = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&team)
        .await;
    let config_dir = std::env::temp_dir().join(format!("herald-senders-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&config_dir).unwrap();
    let senders_file = config_dir.join("senders.yaml");
    std::fs::write(
        &senders_file,
        format!("senders:\n  - id: \"{SENDER}\"\n    display_phone_number: \"+1 555 010 4477\"\n"),
    )
    .unwrap();
    let mut app = spawn_app(Options {
        workflows: vec![GREET],
        env: vec![
            ("HERALD_NOTIFY_WEBHOOK_URL", format!("{}/hook", team.uri())),
            ("HERALD_SENDERS", senders_file.display().to_string()),
        ],
        ..Default::default()
    })
    .await;
    // A second scheduler: the notice must still go out once.
    app.start_more(&[Role::Scheduler]).await;
    let flagged = include_bytes!("../fixtures/whatsapp/12-phone-number-quality-update.json");
    for _ in 0..2 {
        assert_eq!(app.post_webhook(flagged).await.status(), 200);
    }
    eventually("the team is notified", || async {
        !team.received_requests().await.unwrap().is_empty()
    })
    .await;
    settle().await;
    let notes = team.received_requests().await.unwrap();
    assert_eq!(
        notes.len(),
        1,
        "one notification for a webhook delivered twice"
    );
    let text: Value = serde_json::from_slice(&notes[0].body).unwrap();
    let text = text["text"].as_str().unwrap();
    assert!(text.contains(SENDER) && text.contains("paused"), "{text}");
    assert!(
        text.contains(&format!("herald senders resume {SENDER}")),
        "{text}"
    );

    // An improvement does not resume by itself.
    assert_eq!(
        app.post_webhook(&quality_body("UNFLAGGED", 1_795_500_000))
            .await
            .status(),
        200
    );
    settle().await;
    let list = herald(&app, &["senders", "list", "--json"]);
    assert!(list.status.success());
    let list: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["id"], SENDER, "found by its display number");
    assert_eq!(list[0]["dispatch_paused"], true);
    assert_eq!(list[0]["quality_rating"], "RED");
    assert_eq!(list[0]["quality_event"], "UNFLAGGED");
    assert!(
        list[0]["paused_reason"]
            .as_str()
            .unwrap()
            .contains("FLAGGED")
    );
    assert_eq!(team.received_requests().await.unwrap().len(), 1);

    let resumed = herald(&app, &["senders", "resume", SENDER]);
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let said = String::from_utf8_lossy(&resumed.stdout);
    assert!(
        said.contains("resumed") && said.contains("FLAGGED"),
        "{said}"
    );
    let paused: bool = sqlx::query_scalar("SELECT dispatch_paused FROM senders WHERE id = $1")
        .bind(SENDER)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(!paused);
    let again = herald(&app, &["senders", "resume", SENDER]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("were not paused"));

    let unknown = herald(&app, &["senders", "resume", "999999"]);
    assert!(!unknown.status.success(), "an unknown sender is an error");
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no sender '999999'"));
    let _ = std::fs::remove_dir_all(&config_dir);
    app.cleanup().await;
}

/// One batch of reservations (as concurrent sends hand them in together): each sender's sends
/// get consecutive slots one interval apart in the order they came, the sender's pacing row
/// ends one interval after its last slot, a second sender in the same batch is paced on its
/// own, and a recipient named twice keeps its gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_reservations_paces_each_sender_in_order_and_keeps_the_recipient_gap() {
    use herald::{
        db::batch::Statement,
        domain::Rate,
        senders::pacing::{Limit, Reservation, Reserve, SlotRequest},
    };
    let app = spawn_app(Options {
        roles: vec![Role::Ingress],
        ..Default::default()
    })
    .await;
    let limit = |per_second: &str, gap: u64| Limit {
        rate: Rate::parse(per_second).unwrap(),
        recipient_gap: Duration::from_secs(gap),
        recipient_burst: 1,
    };
    let request = |sender: &str, recipient: &str, limit: Limit| SlotRequest {
        sender: sender.into(),
        recipient: recipient.into(),
        limit,
    };
    let reserve = Reserve {
        max_wait: Duration::from_secs(5),
        recheck: Duration::from_secs(60),
    };
    let batch = vec![
        request("111", "4915100000401", limit("10", 0)),
        request("222", "4915100000402", limit("2", 0)),
        request("111", "4915100000403", limit("10", 0)),
        request("222", "4915100000404", limit("2", 0)),
        request("111", "4915100000405", limit("10", 0)),
        // A recipient named twice with a 10 s gap: the second is beyond max_wait.
        request("333", "4915100000406", limit("100", 10)),
        request("333", "4915100000406", limit("100", 10)),
    ];
    let mut conn = app.pool.acquire().await.unwrap();
    let got = reserve.run(&mut conn, &batch).await.unwrap();
    assert_eq!(got.len(), batch.len(), "one answer per request");
    let wait = |i: usize| match &got[i] {
        Reservation::Go { wait, probe: false } => wait.as_secs_f64(),
        other => panic!("request {i}: {other:?}"),
    };
    let near = |a: f64, b: f64| (a - b).abs() < 0.05;
    // Sender 111 at 10/s: 0, 0.1 and 0.2 s, in the order of the batch.
    assert!(
        near(wait(0), 0.0) && near(wait(2), 0.1) && near(wait(4), 0.2),
        "{got:?}"
    );
    // Sender 222 at 2/s, not behind 111's sends: 0 and 0.5 s.
    assert!(near(wait(1), 0.0) && near(wait(3), 0.5), "{got:?}");
    assert!(near(wait(5), 0.0), "{got:?}");
    match &got[6] {
        Reservation::Later { after } => assert!(
            after.as_secs_f64() > 9.0,
            "the same recipient's second message waits for its gap: {after:?}"
        ),
        other => panic!("second message to one recipient: {other:?}"),
    }
    // Each sender's next free time is one interval after its last slot: 0.3 s, 1 s and 0.01 s
    // after the batch (compared with each other, so that the time this query comes later does
    // not count).
    let next: Vec<(String, f64)> = sqlx::query_as(
        "SELECT sender_id, extract(epoch FROM next_at)::float8 FROM sender_pacing
         WHERE recipient = '' ORDER BY sender_id",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    assert_eq!(next.len(), 3, "{next:?}");
    assert!(near(next[1].1 - next[0].1, 0.7), "{next:?}");
    assert!(near(next[2].1 - next[0].1, -0.29), "{next:?}");
    drop(conn);
    app.cleanup().await;
}
