//! Nothing loops and nothing is stranded: a delivery given up on is dead-lettered to
//! `<prefix>.dead` and put back later (never requeued in a tight loop), and a run whose job was
//! lost is given its job again by the scheduler's sweep, without holding back the contact's
//! next run.

use futures::StreamExt;
use herald::{app::Role, bus::Bus, runs::Job};
use lapin::{
    BasicProperties, Connection, ConnectionProperties,
    options::{BasicConsumeOptions, BasicPublishOptions, BasicRejectOptions},
    types::FieldTable,
};

use super::harness::{
    Options, SENDER, TestApp, eventually, runs_with_status, spawn_app, text_body,
};

const ECHO: &str = r#"
name: echo
trigger:
  event: whatsapp.message_received
steps:
  - send_text:
      text: "You said: {{ trigger.text }}"
"#;

/// Stores a run of `echo-lost` for `customer` that is queued at its first step and was last
/// moved `ago` (an SQL interval), with no job anywhere: as if its job had been lost. Returns
/// its id.
async fn strand_a_run(app: &TestApp, customer: &str, ago: &str) -> uuid::Uuid {
    let event = app
        .publish_event(
            herald::domain::EventType::MessageReceived,
            SENDER,
            Some(customer),
            serde_json::json!({"text": "lost", "customer_id": customer,
                               "customer_phone": format!("+{customer}"), "message_type": "text"}),
        )
        .await;
    // The matcher makes that event a run too; this one is the lost one, of its own workflow.
    let id = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO runs (id, workflow, event_id, customer_id, sender_id, status, context, created_at, updated_at)
         VALUES ($1, 'echo-lost', $2, $3, $4, 'queued', '{\"steps\": {}}', now() - $5::interval, now() - $5::interval)",
    )
    .bind(id)
    .bind(event)
    .bind(customer)
    .bind(SENDER)
    .bind(ago)
    .execute(&app.pool)
    .await
    .expect("store the stranded run");
    id
}

async fn status_of(app: &TestApp, run: uuid::Uuid) -> String {
    sqlx::query_scalar("SELECT status FROM runs WHERE id = $1")
        .bind(run)
        .fetch_one(&app.pool)
        .await
        .expect("run status")
}

/// The contact's window is open (an earlier message) and the stranded run's event came first.
async fn contact_with_a_stranded_run(app: &TestApp, customer: &str, ago: &str) -> uuid::Uuid {
    let first = app
        .post_webhook(&text_body(&format!("+{customer}"), "hello", "wamid.FIRST"))
        .await;
    assert_eq!(first.status(), 200);
    eventually("the first message's run completed", || async {
        runs_with_status(app, "completed").await == 1
    })
    .await;
    strand_a_run(app, customer, ago).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_job_was_lost_is_swept_and_runs_its_step_once() {
    let app = spawn_app(Options {
        workflows: vec![ECHO, ECHO_LOST],
        env: vec![("HERALD_STRANDED_AFTER", "2s".into())],
        ..Default::default()
    })
    .await;
    let lost = contact_with_a_stranded_run(&app, "4915100000501", "1 hour").await;
    eventually("the stranded run was swept and ran", || async {
        status_of(&app, lost).await == "completed"
    })
    .await;
    let attempts = app
        .count(&format!(
            "SELECT count(*) FROM step_attempts WHERE run_id = '{lost}'"
        ))
        .await;
    assert_eq!(attempts, 1, "the swept run ran its step once");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranded_run_holds_its_contacts_next_run_back_no_longer_than_the_bound() {
    // Stranded two days ago, the bound one day: the sweep's first look is a minute away, yet
    // the contact's next run does not wait for it.
    let app = spawn_app(Options {
        workflows: vec![ECHO, ECHO_LOST],
        env: vec![("HERALD_STRANDED_AFTER", "1d".into())],
        ..Default::default()
    })
    .await;
    let customer = "4915100000503";
    let lost = contact_with_a_stranded_run(&app, customer, "2 days").await;
    let again = app
        .post_webhook(&text_body(&format!("+{customer}"), "again", "wamid.AGAIN"))
        .await;
    assert_eq!(again.status(), 200);
    // The first message's run, the stranded run's own event's run and this one.
    eventually("the contact's next run completed", || async {
        runs_with_status(&app, "completed").await == 3
    })
    .await;
    assert_eq!(status_of(&app, lost).await, "queued", "not swept yet");
    app.cleanup().await;
}

const ECHO_LOST: &str = r#"
name: echo-lost
trigger:
  event: whatsapp.message_received
  filter: 'false'
steps:
  - send_text:
      text: "found again"
"#;

async fn amqp(app: &TestApp) -> Connection {
    let url = app.vars["HERALD_AMQP_URL"].clone();
    Connection::connect(&url, ConnectionProperties::default())
        .await
        .expect("connect to RabbitMQ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_job_is_dead_lettered_then_put_back_and_run_once() {
    // An ingress alone first: nothing consumes the jobs queue.
    let mut app = spawn_app(Options {
        workflows: vec![ECHO, ECHO_LOST],
        roles: vec![Role::Ingress],
        env: vec![
            ("HERALD_REINJECT_AFTER", "1s".into()),
            ("HERALD_STRANDED_AFTER", "1d".into()),
        ],
        ..Default::default()
    })
    .await;
    // The contact wrote (the ingress keeps the 24-hour window), then its run lost its job.
    let opened = app
        .post_webhook(&text_body("+4915100000502", "hello", "wamid.OPEN"))
        .await;
    assert_eq!(opened.status(), 200);
    let run = strand_a_run(&app, "4915100000502", "1 hour").await;
    let names = herald::bus::Names::new(app.names_prefix());
    let connection = amqp(&app).await;
    let channel = connection.create_channel().await.unwrap();
    let job = serde_json::to_vec(&Job::step(run, 0)).unwrap();
    channel
        .basic_publish(
            "".into(),
            names.jobs_queue.as_str().into(),
            BasicPublishOptions::default(),
            &job,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    // Given up on, as a worker does with a job that keeps failing.
    let mut consumer = channel
        .basic_consume(
            names.jobs_queue.as_str().into(),
            "test".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let delivery = consumer.next().await.unwrap().unwrap();
    delivery
        .reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    let _ = channel.close(200, "done".into()).await;
    let bus = Bus::new(&app.config());
    eventually("the job is in the dead-letter queue", || async {
        bus.queue_depth(&names.dead_queue).await.unwrap_or(0) == 1
    })
    .await;
    assert_eq!(status_of(&app, run).await, "queued");
    // A scheduler puts it back; a worker runs it.
    app.start_more(&[Role::Scheduler, Role::Worker]).await;
    eventually("the job was put back and run", || async {
        status_of(&app, run).await == "completed"
    })
    .await;
    assert_eq!(bus.queue_depth(&names.dead_queue).await.unwrap(), 0);
    assert_eq!(bus.queue_depth(&names.parked_queue).await.unwrap(), 0);
    let attempts = app
        .count(&format!(
            "SELECT count(*) FROM step_attempts WHERE run_id = '{run}'"
        ))
        .await;
    assert_eq!(attempts, 1);
    bus.close().await;
    let _ = connection.close(200, "done".into()).await;
    app.cleanup().await;
}
