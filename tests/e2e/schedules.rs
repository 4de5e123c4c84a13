//! Schedules: cron in a time zone, across daylight-saving changes (an injected clock: the
//! tests call `fire_due` with the instants they choose), one fire per tick with several
//! schedulers, catch-up or skip after downtime, and `for_each` over a group.

use chrono::{DateTime, Utc};
use herald::{
    app::Role,
    dispatch::Defaults,
    schedules::{Fired, fire_due},
    workflow,
};
use std::sync::Arc;

use super::{
    dispatch::app_with,
    harness::{Options, SENDER, TestApp, eventually, spawn_app},
};

const BERLIN_NINE: &str = r#"
name: morning
trigger:
  event: schedule
  cron: "0 9 * * *"
  timezone: Europe/Berlin
steps:
  - notify:
      text: "Good morning, it is {{ trigger.fire_time_local }}"
"#;

const SKIPPING: &str = r#"
name: hourly-skip
trigger:
  event: schedule
  cron: "0 * * * *"
  missed: skip
steps:
  - notify:
      text: "tick {{ trigger.fire_time }}"
"#;

const EVERY_SECOND: &str = r#"
name: heartbeat
trigger:
  event: schedule
  cron: "* * * * * *"
steps:
  - notify:
      text: "beat {{ trigger.fire_time }}"
"#;

const VIP_REMINDER: &str = r#"
name: vip-reminder
trigger:
  event: schedule
  cron: "0 9 * * 1"
  timezone: Europe/Berlin
  for_each:
    group: vip
    filter: 'contact.fields.plan == "pro"'
steps:
  - send_template:
      template: welcome_message
      language: en_US
      variables: ["{{ trigger.contact_name }}"]
"#;

fn utc(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn defaults() -> Defaults {
    Defaults {
        rate: 50.0,
        sender: SENDER.into(),
    }
}

fn workflows(app: &TestApp) -> herald::workflow::SharedWorkflows {
    Arc::new(workflow::load_dir(&app.workflows_dir).unwrap())
}

/// The fire times of the schedule events of `workflow`, in order.
async fn fires(app: &TestApp, workflow: &str) -> Vec<DateTime<Utc>> {
    sqlx::query_scalar(
        "SELECT (cloudevent -> 'data' ->> 'fire_time')::timestamptz FROM events
         WHERE type = 'schedule' AND cloudevent -> 'data' ->> 'workflow' = $1 ORDER BY 1",
    )
    .bind(workflow)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nine_in_berlin_fires_at_the_right_instants_across_both_daylight_saving_changes() {
    // Only the ingress runs: the test is the scheduler, with its own clock.
    let app = spawn_app(Options {
        workflows: vec![BERLIN_NINE],
        roles: vec![Role::Ingress],
        ..Options::default()
    })
    .await;
    let w = workflows(&app);
    // The schedule starts counting when a scheduler first sees it.
    let (f, _) = fire_due(&app.pool, &w, &defaults(), utc("2026-03-27T12:00:00Z"))
        .await
        .unwrap();
    assert!(f.is_empty());
    // Every hour for four days around the spring change, then the autumn change.
    let mut now = utc("2026-03-27T12:00:00Z");
    while now < utc("2026-03-31T12:00:00Z") {
        now += chrono::TimeDelta::minutes(30);
        fire_due(&app.pool, &w, &defaults(), now).await.unwrap();
    }
    sqlx::query("UPDATE schedule_ticks SET last_tick = '2026-10-23T12:00:00Z'")
        .execute(&app.pool)
        .await
        .unwrap();
    let mut now = utc("2026-10-23T12:00:00Z");
    while now < utc("2026-10-27T12:00:00Z") {
        now += chrono::TimeDelta::minutes(30);
        fire_due(&app.pool, &w, &defaults(), now).await.unwrap();
    }
    assert_eq!(
        fires(&app, "morning").await,
        vec![
            utc("2026-03-28T08:00:00Z"), // CET, UTC+1
            utc("2026-03-29T07:00:00Z"), // CEST from 29 March, UTC+2
            utc("2026-03-30T07:00:00Z"),
            utc("2026-03-31T07:00:00Z"),
            utc("2026-10-24T07:00:00Z"), // CEST
            utc("2026-10-25T08:00:00Z"), // CET again from 25 October
            utc("2026-10-26T08:00:00Z"),
            utc("2026-10-27T08:00:00Z"),
        ]
    );
    let local: Vec<String> = sqlx::query_scalar(
        "SELECT cloudevent -> 'data' ->> 'fire_time_local' FROM events WHERE type = 'schedule' ORDER BY received_at",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert!(local.iter().all(|t| t.contains("T09:00:00")), "{local:?}");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_schedulers_at_the_same_instant_fire_each_tick_once() {
    let app = spawn_app(Options {
        workflows: vec![BERLIN_NINE],
        roles: vec![Role::Ingress],
        ..Options::default()
    })
    .await;
    let w = workflows(&app);
    fire_due(&app.pool, &w, &defaults(), utc("2026-05-01T00:00:00Z"))
        .await
        .unwrap();
    for day in 1..=5 {
        let now = utc("2026-05-01T07:00:05Z") + chrono::TimeDelta::days(day - 1);
        let d = defaults();
        let (a, b) = tokio::join!(
            fire_due(&app.pool, &w, &d, now),
            fire_due(&app.pool, &w, &d, now)
        );
        let fired = a.unwrap().0.len() + b.unwrap().0.len();
        assert_eq!(fired, 1, "day {day}: {fired} fires");
    }
    assert_eq!(fires(&app, "morning").await.len(), 5);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_scheduler_instances_fire_a_every_second_schedule_once_per_tick_and_each_fire_runs() {
    let mut app = spawn_app(Options {
        workflows: vec![EVERY_SECOND],
        env: vec![("HERALD_DISPATCH_INTERVAL_MS", "20".into())],
        ..Options::default()
    })
    .await;
    app.start_more(&[Role::Scheduler]).await;
    eventually("several ticks fired", || async {
        fires(&app, "heartbeat").await.len() >= 4
    })
    .await;
    app.stop_all().await;
    let ticks = fires(&app, "heartbeat").await;
    let mut distinct = ticks.clone();
    distinct.dedup();
    assert_eq!(distinct, ticks, "a tick fired twice");
    assert!(
        ticks
            .windows(2)
            .all(|w| w[1] - w[0] == chrono::TimeDelta::seconds(1)),
        "{ticks:?}"
    );
    let runs = app
        .count("SELECT count(*) FROM runs WHERE workflow = 'heartbeat'")
        .await;
    assert!(
        runs >= ticks.len() as i64 - 1,
        "{runs} runs for {} ticks",
        ticks.len()
    );
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_downtime_missed_ticks_fire_once_or_are_skipped_as_the_workflow_says() {
    let app = spawn_app(Options {
        workflows: vec![BERLIN_NINE, SKIPPING],
        roles: vec![Role::Ingress],
        ..Options::default()
    })
    .await;
    let w = workflows(&app);
    fire_due(&app.pool, &w, &defaults(), utc("2026-06-01T10:30:00Z"))
        .await
        .unwrap();
    // Down for three days: the daily schedule fires its latest tick once, saying what it missed;
    // the hourly one with `missed: skip` skips.
    let (fired, _) = fire_due(&app.pool, &w, &defaults(), utc("2026-06-04T10:30:00Z"))
        .await
        .unwrap();
    assert!(fired.contains(&Fired::Fired {
        workflow: "morning".into(),
        tick: utc("2026-06-04T07:00:00Z"),
        missed: 2,
    }));
    assert!(fired.contains(&Fired::Skipped {
        workflow: "hourly-skip".into(),
        tick: utc("2026-06-04T10:00:00Z"),
    }));
    assert_eq!(
        fires(&app, "morning").await,
        vec![utc("2026-06-04T07:00:00Z")]
    );
    assert!(fires(&app, "hourly-skip").await.is_empty());
    // Nothing fires twice when the scheduler looks again.
    let (fired, _) = fire_due(&app.pool, &w, &defaults(), utc("2026-06-04T10:31:00Z"))
        .await
        .unwrap();
    assert!(fired.is_empty());
    // On time (within a minute), the skipping schedule fires.
    let (fired, _) = fire_due(&app.pool, &w, &defaults(), utc("2026-06-04T11:00:20Z"))
        .await
        .unwrap();
    assert_eq!(
        fired,
        vec![Fired::Fired {
            workflow: "hourly-skip".into(),
            tick: utc("2026-06-04T11:00:00Z"),
            missed: 0,
        }]
    );
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_schedule_for_each_group_member_starts_one_paced_run_per_matching_contact() {
    let app = app_with(vec![VIP_REMINDER], vec![]).await;
    for (i, plan, groups) in [
        (0, "pro", vec!["vip"]),
        (1, "free", vec!["vip"]),
        (2, "pro", vec!["vip"]),
        (3, "pro", vec!["other"]),
    ] {
        sqlx::query(
            "INSERT INTO contacts (id, customer_id, phone, name, groups, fields, opted_out)
             VALUES (gen_random_uuid(), $1, $2, $3, $4, $5, $6)",
        )
        .bind(format!("4915100000{i}0"))
        .bind(format!("+4915100000{i}0"))
        .bind(format!("Member {i}"))
        .bind(groups)
        .bind(serde_json::json!({ "plan": plan }))
        .bind(i == 2)
        .execute(&app.pool)
        .await
        .unwrap();
    }
    let w = workflows(&app);
    // The app's own scheduler runs too, on the real clock: both it and the injected clock see
    // the same tick (the latest Monday 09:00 in Berlin), and whichever takes it fires it once.
    let now = Utc::now();
    let (tick, _) = herald::schedules::due_ticks(
        &herald::domain::CronExpr::parse("0 9 * * 1").unwrap(),
        herald::domain::TimeZone::parse("Europe/Berlin").unwrap(),
        now - chrono::TimeDelta::days(8),
        now,
    )
    .expect("a Monday within eight days");
    sqlx::query(
        "INSERT INTO schedule_ticks (workflow, last_tick) VALUES ('vip-reminder', $1)
         ON CONFLICT (workflow) DO UPDATE SET last_tick = EXCLUDED.last_tick",
    )
    .bind(tick - chrono::TimeDelta::hours(1))
    .execute(&app.pool)
    .await
    .unwrap();
    fire_due(
        &app.pool,
        &w,
        &defaults(),
        tick + chrono::TimeDelta::seconds(1),
    )
    .await
    .unwrap();
    eventually(
        "the pro member who is not opted out got the reminder",
        || async {
            app.count("SELECT count(*) FROM dispatches WHERE status = 'completed'")
                .await
                == 1
        },
    )
    .await;
    let sends = app.sends().await;
    assert_eq!(sends.len(), 1, "{sends:?}");
    assert_eq!(sends[0]["to"], "491510000000");
    let (source, skipped): (String, i64) = sqlx::query_as(
        "SELECT d.source, (SELECT count(*) FROM dispatch_contacts c WHERE c.dispatch_id = d.id AND c.state = 'skipped_opted_out')
         FROM dispatches d",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((source.as_str(), skipped), ("schedule", 1));
    assert_eq!(app.count("SELECT count(*) FROM dispatches").await, 1);
    let trigger: serde_json::Value =
        sqlx::query_scalar("SELECT cloudevent -> 'data' FROM events WHERE type = 'schedule'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        trigger["fire_time"],
        tick.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    assert_eq!(trigger["customer_phone"], "+491510000000");
    app.cleanup().await;
}
