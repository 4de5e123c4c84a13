//! Fault injection ("When things fail"): processes killed during a retry wait, every process
//! down when a timer is due, RabbitMQ and PostgreSQL cut off (through the harness's TCP
//! proxies) while runs are in flight, and the outbox relay publishing what a webhook stored
//! but could not publish. Each test asserts the exact outcome: sends per recipient, run
//! statuses, step attempts, dead letters.

use std::{
    collections::BTreeMap,
    future::Future,
    process::{Child, Command, Stdio},
    time::Duration,
};

use futures::StreamExt;
use herald::app::Role;

use super::{
    fake_graph,
    harness::{Options, TestApp, runs_with_status, settle, spawn_app, text_body},
    retries::{SERVER_ERROR, fail_first},
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
      variables: ["{{ trigger.text }}"]
"#;

/// A short durable delay, then one send: runs spend most of their life "in flight".
const LATER: &str = r#"
name: later
trigger:
  event: whatsapp.message_received
steps:
  - delay: { duration: 1s }
  - send_template:
      id: greet
      template: welcome_message
      language: en_US
      variables: ["{{ trigger.text }}"]
"#;

/// Herald's logs on stdout when `HERALD_TEST_LOGS` is set (with `--nocapture`).
fn logs_if_asked() {
    if std::env::var_os("HERALD_TEST_LOGS").is_some() {
        herald::telemetry::init_logs(false);
    }
}

/// Polls `check` until it returns true; panics with `what` after `secs` seconds.
async fn within<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {secs} s waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Cleans up, asserting that every Herald stops within 30 s after the fault (a consumer or a
/// handler stuck on a dead connection would hold the shutdown forever).
async fn shut_down(app: TestApp) {
    tokio::time::timeout(Duration::from_secs(30), app.cleanup())
        .await
        .expect("Herald shuts down within 30 s after the fault");
}

/// A `herald serve --role worker` child process on the app's database and broker names.
fn worker_process(app: &TestApp) -> Child {
    Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--role", "worker"])
        .envs(&app.vars)
        .env("HERALD_LISTEN", "127.0.0.1:0")
        .env("HERALD_WORKFLOWS", &app.workflows_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start worker process")
}

/// `+49151000<n>` with `n` padded to five digits: one distinct recipient per message.
fn phone(n: usize) -> String {
    format!("+49151000{n:05}")
}

/// How many successful sends (2xx answers of the fake) each recipient got, and how many
/// calls the fake answered in all.
async fn sends_per_recipient(app: &TestApp) -> BTreeMap<String, usize> {
    let mut per = BTreeMap::new();
    for send in app.sends().await {
        *per.entry(send["to"].as_str().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    per
}

/// `(state, error class)` of every attempt of the one run, in order.
async fn attempts(app: &TestApp) -> Vec<(String, Option<String>)> {
    sqlx::query_as("SELECT state, error->>'class' FROM step_attempts ORDER BY attempt")
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

/// Send attempts of one run's send step beyond the first, or that ended other than succeeded.
async fn irregular_send_attempts(app: &TestApp) -> i64 {
    app.count(
        "SELECT count(*) FROM step_attempts
         WHERE step_type = 'send_template' AND (attempt > 1 OR state <> 'succeeded')",
    )
    .await
}

/// Stored `whatsapp.message_received` events.
async fn received_events(app: &TestApp) -> i64 {
    app.count("SELECT count(*) FROM events WHERE type = 'whatsapp.message_received'")
        .await
}

/// Posts each body (several at once) and returns the HTTP statuses in the same order.
async fn post_all(app: &TestApp, bodies: &[Vec<u8>]) -> Vec<u16> {
    futures::stream::iter(bodies)
        .map(|b| async move { app.post_webhook(b).await.status().as_u16() })
        .buffered(16)
        .collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_during_the_retry_wait_leaves_the_retry_to_the_next_worker_which_runs_it_once()
 {
    let app = spawn_app(Options {
        workflows: vec![GREET],
        graph: true,
        roles: vec![Role::Ingress, Role::Matcher, Role::Scheduler],
        env: vec![("HERALD_RETRY_WAIT", "4s".into())],
        ..Default::default()
    })
    .await;
    fail_first(app.graph.as_ref().unwrap(), 1, 500, SERVER_ERROR, None).await;
    let mut worker = worker_process(&app);
    assert_eq!(
        app.post_webhook(&text_body(&phone(101), "hi", "wamid.FAULT101"))
            .await
            .status(),
        200
    );
    within(
        30,
        "the first attempt failed and a retry is scheduled",
        || async {
            runs_with_status(&app, "retrying").await == 1
                && app.count("SELECT count(*) FROM timers").await == 1
        },
    )
    .await;
    worker.kill().expect("kill -9 the worker during the wait");
    let _ = worker.wait();
    let due: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT due_at FROM timers")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(due > chrono::Utc::now(), "killed before the retry was due");

    // The scheduler fires the timer at its due time; no worker is there to take the job.
    within(30, "the retry timer fired", || async {
        app.count("SELECT count(*) FROM timers").await == 0
    })
    .await;
    settle().await;
    assert_eq!(app.sends().await.len(), 1, "no retry without a worker");
    assert_eq!(runs_with_status(&app, "retrying").await, 1);

    let mut worker = worker_process(&app);
    within(30, "the retry ran on the new worker", || async {
        runs_with_status(&app, "completed").await == 1
    })
    .await;
    settle().await;
    let _ = worker.kill();
    let _ = worker.wait();
    assert_eq!(
        attempts(&app).await,
        [
            ("failed".to_string(), Some("Provider error".to_string())),
            ("succeeded".to_string(), None)
        ],
        "one failed attempt, one retry"
    );
    assert_eq!(app.sends().await.len(), 2, "one failed call, one send");
    assert_eq!(app.count("SELECT count(*) FROM outbound_messages").await, 1);
    assert_eq!(app.count("SELECT count(*) FROM dead_letters").await, 0);
    shut_down(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_due_while_every_instance_is_down_runs_once_when_two_come_back() {
    let mut app = spawn_app(Options {
        workflows: vec![GREET],
        graph: true,
        env: vec![("HERALD_RETRY_WAIT", "2s".into())],
        ..Default::default()
    })
    .await;
    fail_first(app.graph.as_ref().unwrap(), 1, 500, SERVER_ERROR, None).await;
    assert_eq!(
        app.post_webhook(&text_body(&phone(102), "hi", "wamid.FAULT102"))
            .await
            .status(),
        200
    );
    within(
        30,
        "the first attempt failed and a retry is scheduled",
        || async {
            runs_with_status(&app, "retrying").await == 1
                && app.count("SELECT count(*) FROM timers").await == 1
        },
    )
    .await;
    app.stop_all().await;
    let due: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT due_at FROM timers")
        .fetch_one(&app.pool)
        .await
        .expect("the timer is still there: everything stopped before it was due");
    let past_due = (due - chrono::Utc::now()).to_std().unwrap_or_default() + Duration::from_secs(1);
    tokio::time::sleep(past_due).await;
    assert_eq!(app.count("SELECT count(*) FROM timers").await, 1);
    assert_eq!(app.sends().await.len(), 1, "nothing ran while all was down");

    // Everything comes back at once, twice over: two schedulers race for the one due timer.
    app.start_more(&[Role::All]).await;
    app.start_more(&[Role::All]).await;
    within(30, "the retry ran", || async {
        runs_with_status(&app, "completed").await == 1
    })
    .await;
    settle().await;
    assert_eq!(
        attempts(&app).await,
        [
            ("failed".to_string(), Some("Provider error".to_string())),
            ("succeeded".to_string(), None)
        ],
        "the retry ran once: not zero times, not twice"
    );
    assert_eq!(app.sends().await.len(), 2, "one failed call, one send");
    assert_eq!(app.count("SELECT count(*) FROM timers").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM dead_letters").await, 0);
    shut_down(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_going_away_while_runs_are_in_flight_loses_no_run_and_sends_nothing_twice() {
    const RUNS: usize = 200;
    logs_if_asked();
    let mut app = spawn_app(Options {
        workflows: vec![LATER],
        graph: true,
        amqp_proxy: true,
        ..Default::default()
    })
    .await;
    fake_graph::accept_all(app.graph.as_ref().unwrap()).await;
    // A second process, as in a deployment with separate workers.
    app.start_more(&[Role::Matcher, Role::Worker, Role::Scheduler])
        .await;
    let bodies: Vec<Vec<u8>> = (0..RUNS)
        .map(|i| text_body(&phone(1000 + i), "hi", &format!("wamid.AMQP{i}")))
        .collect();
    let statuses = post_all(&app, &bodies).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    within(30, "runs are in flight", || async {
        app.count("SELECT count(*) FROM runs").await >= (RUNS / 2) as i64
    })
    .await;
    let in_flight = app
        .count("SELECT count(*) FROM runs WHERE status <> 'completed'")
        .await;
    eprintln!("cutting RabbitMQ off with {in_flight} runs in flight");

    // What a broker restart looks like to Herald: every connection drops, none can be made.
    let proxy = app.amqp_proxy.as_ref().unwrap();
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(5)).await;
    proxy.restore();

    within(50, "every run completed", || async {
        runs_with_status(&app, "completed").await == RUNS as i64
    })
    .await;
    settle().await;
    assert!(in_flight > 0, "the cut happened while runs were in flight");
    let per = sends_per_recipient(&app).await;
    assert_eq!(per.len(), RUNS, "every recipient got a send");
    let twice: Vec<_> = per.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "sent more than once: {twice:?}");
    assert_eq!(app.count("SELECT count(*) FROM runs").await, RUNS as i64);
    assert_eq!(irregular_send_attempts(&app).await, 0);
    assert_eq!(
        app.count("SELECT count(*) FROM outbound_messages").await,
        RUNS as i64
    );
    assert_eq!(app.count("SELECT count(*) FROM dead_letters").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM outbox").await, 0);
    shut_down(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_down_for_ten_seconds_gives_503s_then_everything_recovers_by_itself() {
    const BEFORE: usize = 20;
    const DURING: usize = 10;
    logs_if_asked();
    let mut app = spawn_app(Options {
        workflows: vec![LATER],
        graph: true,
        pg_proxy: true,
        env: vec![("HERALD_PROVIDER_TIMEOUT_MS", "2000".into())],
        ..Default::default()
    })
    .await;
    // Each send takes a second: at the cut some sends are in flight, their outcome unrecorded.
    app.graph
        .as_ref()
        .unwrap()
        .register(
            wiremock::Mock::given(wiremock::matchers::method("POST")).respond_with(
                fake_graph::Accept {
                    delay: Duration::from_secs(1),
                },
            ),
        )
        .await;
    app.start_more(&[Role::Matcher, Role::Worker, Role::Scheduler])
        .await;
    let before: Vec<Vec<u8>> = (0..BEFORE)
        .map(|i| text_body(&phone(2000 + i), "hi", &format!("wamid.PGB{i}")))
        .collect();
    let during: Vec<Vec<u8>> = (0..DURING)
        .map(|i| text_body(&phone(3000 + i), "hi", &format!("wamid.PGD{i}")))
        .collect();
    assert!(post_all(&app, &before).await.iter().all(|s| *s == 200));
    within(30, "sends are in flight", || async {
        !app.sends().await.is_empty()
    })
    .await;

    // The test's own pool goes straight to PostgreSQL; Herald's go through the proxy.
    let proxy = app.pg_proxy.as_ref().unwrap();
    let cut_at = std::time::Instant::now();
    proxy.cut();
    let statuses = post_all(&app, &during).await;
    assert!(
        statuses.iter().all(|s| *s == 503),
        "webhooks during the outage are refused so that Meta delivers again: {statuses:?}"
    );
    // Nothing is sent while the database is away (a send in flight at the cut may finish).
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(cut_at.elapsed())).await;
    let sent_early = app.sends().await.len();
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(cut_at.elapsed())).await;
    assert_eq!(
        app.sends().await.len(),
        sent_early,
        "workers take no job while PostgreSQL is away"
    );
    proxy.restore();

    // Meta delivers the refused webhooks again.
    within(30, "the redelivered webhooks are accepted", || async {
        post_all(&app, &during).await.iter().all(|s| *s == 200)
    })
    .await;
    let total = (BEFORE + DURING) as i64;
    within(50, "every run completed", || async {
        runs_with_status(&app, "completed").await == total
    })
    .await;
    settle().await;
    let per = sends_per_recipient(&app).await;
    assert_eq!(per.len(), BEFORE + DURING, "every recipient got a send");
    let twice: Vec<_> = per.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "sent more than once: {twice:?}");
    assert_eq!(app.count("SELECT count(*) FROM runs").await, total);
    assert_eq!(received_events(&app).await, total);
    assert_eq!(
        irregular_send_attempts(&app).await,
        0,
        "a send in flight at the cut is recorded as succeeded once the database is back"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM outbound_messages").await,
        total
    );
    assert_eq!(app.count("SELECT count(*) FROM dead_letters").await, 0);
    shut_down(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stored_but_not_published_is_published_by_the_relay_and_its_redelivery_adds_no_run()
 {
    logs_if_asked();
    let app = spawn_app(Options {
        workflows: vec![GREET],
        graph: true,
        amqp_proxy: true,
        ..Default::default()
    })
    .await;
    fake_graph::accept_all(app.graph.as_ref().unwrap()).await;
    let first = text_body(&phone(401), "hi", "wamid.RELAY1");
    let second = text_body(&phone(402), "hi", "wamid.RELAY2");
    let proxy = app.amqp_proxy.as_ref().unwrap();
    proxy.cut();
    for body in [&first, &second] {
        assert_eq!(
            app.post_webhook(body).await.status(),
            503,
            "stored, but not published: Meta must deliver again"
        );
    }
    assert_eq!(received_events(&app).await, 2);
    assert_eq!(
        app.count("SELECT count(*) FROM outbox").await,
        app.count("SELECT count(*) FROM events").await,
        "every stored event waits in the outbox"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM outbox WHERE body IS NOT NULL")
            .await,
        0,
        "an inbound message's outbox row keeps no second copy of its event"
    );
    assert_eq!(app.count("SELECT count(*) FROM runs").await, 0);
    proxy.restore();

    // Meta redelivers the second at once (its row may not be relayed yet): no second event.
    let again = app.post_webhook(&second).await;
    assert_eq!(again.status(), 200);
    let again: serde_json::Value = again.json().await.unwrap();
    assert_eq!(again["new_events"], 0);
    assert_eq!(again["duplicates"], 1);
    // The first is never redelivered: the relay publishes it.
    within(30, "both runs completed", || async {
        runs_with_status(&app, "completed").await == 2
    })
    .await;
    // Meta redelivers the first late, after its run completed: nothing new.
    assert_eq!(app.post_webhook(&first).await.status(), 200);
    settle().await;
    assert_eq!(app.count("SELECT count(*) FROM runs").await, 2);
    assert_eq!(received_events(&app).await, 2);
    assert_eq!(app.count("SELECT count(*) FROM outbox").await, 0);
    let per = sends_per_recipient(&app).await;
    assert_eq!(
        per,
        BTreeMap::from([
            ("4915100000401".to_string(), 1),
            ("4915100000402".to_string(), 1)
        ])
    );
    assert_eq!(irregular_send_attempts(&app).await, 0);
    shut_down(app).await;
}
