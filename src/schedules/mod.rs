//! Schedules: workflows whose trigger is `event: schedule` fire on their cron expression, in
//! their time zone (croner handles daylight-saving changes). A source of events, like ingress.
//!
//! Each schedule has one row in `schedule_ticks` (its last tick). A scheduler locks the row
//! (`FOR UPDATE SKIP LOCKED`), fires the due tick and moves the row in one transaction, so a tick
//! fires once however many schedulers run. The clock is a parameter (`fire_due(.., now)`).
//! The scheduler's housekeeping, retention and vacuum, is in [`retention`].

pub mod retention;

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde_json::{Map, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::{
    bus::{
        Bus,
        outbox::{self, OutboxRow},
    },
    dispatch::{self, Defaults, DispatchEventType, NewDispatch, Source, Target},
    domain::{CloudEvent, CronExpr, EventType, TimeZone},
    store::events,
    store::schedule_ticks,
    workflow::{Missed, SharedWorkflows, Workflow},
};

/// A tick later than this is "missed" for `missed: skip`.
pub const GRACE: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// Ticks are counted up to this many when reporting how many were missed.
const COUNT_CAP: usize = 10_000;

/// The ticks of `cron` in `tz` after `after` up to and including `until`: the latest one and
/// how many there were (capped).
pub fn due_ticks(
    cron: &CronExpr,
    tz: TimeZone,
    after: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Option<(DateTime<Utc>, usize)> {
    let tz = tz.tz();
    let mut latest = None;
    let mut count = 0;
    for tick in cron.cron().iter_after(after.with_timezone(&tz)) {
        let tick = tick.with_timezone(&Utc);
        if tick > until {
            break;
        }
        latest = Some(tick);
        count += 1;
        if count >= COUNT_CAP {
            // Jump to the last tick at or before `until` without counting each one.
            latest = cron
                .cron()
                .find_previous_occurrence(&until.with_timezone(&tz), true)
                .ok()
                .map(|t| t.with_timezone(&Utc))
                .or(latest);
            break;
        }
    }
    latest.map(|t| (t, count))
}

/// What one schedule did at a tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fired {
    /// Fired the tick (one event, or one dispatch for `for_each`); `missed` earlier ticks were
    /// folded into it.
    Fired {
        workflow: String,
        tick: DateTime<Utc>,
        missed: usize,
    },
    /// The tick was too late and the workflow says `missed: skip`.
    Skipped {
        workflow: String,
        tick: DateTime<Utc>,
    },
}

/// Fires every schedule due at `now`. Returns what fired and the outbox rows to publish.
pub async fn fire_due(
    pool: &PgPool,
    workflows: &SharedWorkflows,
    defaults: &Defaults,
    now: DateTime<Utc>,
) -> anyhow::Result<(Vec<Fired>, Vec<OutboxRow>)> {
    let mut fired = Vec::new();
    let mut rows = Vec::new();
    for workflow in workflows.for_event(EventType::Schedule) {
        let Some(cron) = &workflow.trigger.cron else {
            continue;
        };
        if let Some(f) = fire_one(pool, workflows, defaults, workflow, cron, now, &mut rows)
            .await
            .with_context(|| format!("fire schedule of workflow '{}'", workflow.name))?
        {
            fired.push(f);
        }
    }
    Ok((fired, rows))
}

async fn fire_one(
    pool: &PgPool,
    workflows: &SharedWorkflows,
    defaults: &Defaults,
    workflow: &Workflow,
    cron: &CronExpr,
    now: DateTime<Utc>,
    rows: &mut Vec<OutboxRow>,
) -> anyhow::Result<Option<Fired>> {
    let mut tx = pool.begin().await.context("begin")?;
    // First sight of a schedule: it starts counting now (ticks before it existed never fire).
    let registered = schedule_ticks::register(&mut tx, &workflow.name, now)
        .await
        .context("register schedule")?;
    if registered {
        tx.commit().await.context("commit")?;
        return Ok(None);
    }
    let last = schedule_ticks::lock(&mut tx, &workflow.name)
        .await
        .context("lock schedule")?;
    let Some(last) = last else {
        return Ok(None); // another scheduler holds it
    };
    let tz = workflow.trigger.timezone.unwrap_or_default();
    let Some((tick, count)) = due_ticks(cron, tz, last, now) else {
        // End the transaction now: a dropped one keeps the row locked until its connection
        // is cleaned up, and the next tick (SKIP LOCKED) would pass the schedule by.
        tx.rollback().await.context("release schedule")?;
        return Ok(None);
    };
    schedule_ticks::advance(&mut tx, &workflow.name, tick)
        .await
        .context("move schedule")?;
    let late = now - tick > GRACE;
    if late && workflow.trigger.missed == Missed::Skip {
        tx.commit().await.context("commit")?;
        tracing::warn!(workflow = %workflow.name, %tick, "schedule tick missed; skipped as the workflow says");
        return Ok(Some(Fired::Skipped {
            workflow: workflow.name.clone(),
            tick,
        }));
    }
    let missed = count - 1;
    let local = tick.with_timezone(&tz.tz());
    let data = json!({
        "workflow": workflow.name,
        "fire_time": tick,
        "fire_time_local": local.to_rfc3339(),
        "timezone": tz.tz().name(),
        "missed_ticks": missed,
        "late": late,
    });
    match &workflow.trigger.for_each {
        None => {
            let event = CloudEvent::new(
                EventType::Schedule,
                format!("/herald/schedules/{}", workflow.name),
                defaults.sender.clone(),
                None,
                tick,
                data,
            );
            let recorded = events::record(
                &mut tx,
                &event,
                &format!("schedule:{}:{}", workflow.name, tick.to_rfc3339()),
            )
            .await
            .context("record schedule event")?;
            rows.extend(recorded.outbox().cloned());
        }
        Some(for_each) => {
            let mut vars = Map::new();
            if let serde_json::Value::Object(d) = data {
                vars.extend(d.into_iter().filter(|(k, _)| k != "workflow"));
            }
            let created = dispatch::create_in(
                &mut tx,
                workflows,
                defaults,
                NewDispatch {
                    workflow: workflow.name.clone(),
                    target: Target::Group {
                        name: for_each.group.clone(),
                        filter: for_each.filter.clone(),
                    },
                    vars,
                    rate: for_each.rate,
                    sender: None,
                    source: Source::Schedule,
                    started_by: Some(format!("schedule {}", cron_source(cron))),
                },
                DispatchEventType::Schedule,
            )
            .await;
            match created {
                Ok(id) => {
                    tracing::info!(workflow = %workflow.name, dispatch_id = %id, "schedule started a dispatch")
                }
                Err(dispatch::DispatchError::NoContacts(reason)) => {
                    tracing::warn!(workflow = %workflow.name, %tick, reason, "schedule fired for nobody")
                }
                Err(e) => return Err(e).context("create the schedule's dispatch"),
            }
        }
    }
    tx.commit().await.context("commit schedule tick")?;
    tracing::info!(workflow = %workflow.name, %tick, missed, "schedule fired");
    metrics::counter!("herald_schedule_fires_total", "workflow" => workflow.name.clone())
        .increment(1);
    Ok(Some(Fired::Fired {
        workflow: workflow.name.clone(),
        tick,
        missed,
    }))
}

fn cron_source(cron: &CronExpr) -> String {
    String::from(cron.clone())
}

/// The schedule loop (scheduler role): fires due schedules every `interval` until shutdown.
pub async fn run(
    bus: Bus,
    pool: PgPool,
    workflows: SharedWorkflows,
    defaults: Defaults,
    interval: std::time::Duration,
    shutdown: CancellationToken,
) {
    if workflows.for_event(EventType::Schedule).next().is_none() {
        return;
    }
    loop {
        match fire_due(&pool, &workflows, &defaults, Utc::now()).await {
            Ok((_, rows)) => {
                if let Err(e) = outbox::flush(&bus, &pool, &rows).await {
                    tracing::warn!(error = %e, "publishing schedule events failed; the outbox relay will");
                }
            }
            Err(e) => tracing::warn!(error = format!("{e:#}"), "firing schedules failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn nine_in_berlin_is_eight_utc_in_winter_and_seven_in_summer() {
        let cron = CronExpr::parse("0 9 * * *").unwrap();
        let tz = TimeZone::parse("Europe/Berlin").unwrap();
        // Daylight saving time starts on 2026-03-29 at 02:00 local time.
        let ticks: Vec<_> = cron
            .cron()
            .iter_after(utc("2026-03-27T12:00:00Z").with_timezone(&tz.tz()))
            .take(3)
            .map(|t| t.with_timezone(&Utc))
            .collect();
        assert_eq!(
            ticks,
            vec![
                utc("2026-03-28T08:00:00Z"),
                utc("2026-03-29T07:00:00Z"),
                utc("2026-03-30T07:00:00Z"),
            ]
        );
        // And back on 2026-10-25.
        let (tick, n) = due_ticks(
            &cron,
            tz,
            utc("2026-10-24T12:00:00Z"),
            utc("2026-10-25T12:00:00Z"),
        )
        .unwrap();
        assert_eq!((tick, n), (utc("2026-10-25T08:00:00Z"), 1));
    }

    #[test]
    fn a_tick_in_the_skipped_hour_of_spring_fires_once() {
        // 02:30 does not exist in Berlin on 2026-03-29; the day still gets one fire.
        let cron = CronExpr::parse("30 2 * * *").unwrap();
        let tz = TimeZone::parse("Europe/Berlin").unwrap();
        let (_, n) = due_ticks(
            &cron,
            tz,
            utc("2026-03-28T12:00:00Z"),
            utc("2026-03-29T12:00:00Z"),
        )
        .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn missed_ticks_are_counted_and_the_latest_is_returned() {
        let cron = CronExpr::parse("0 * * * *").unwrap();
        let tz = TimeZone::parse("UTC").unwrap();
        let (tick, n) = due_ticks(
            &cron,
            tz,
            utc("2026-01-01T00:00:00Z"),
            utc("2026-01-01T05:30:00Z"),
        )
        .unwrap();
        assert_eq!((tick, n), (utc("2026-01-01T05:00:00Z"), 5));
        assert!(
            due_ticks(
                &cron,
                tz,
                utc("2026-01-01T05:00:00Z"),
                utc("2026-01-01T05:59:59Z")
            )
            .is_none()
        );
    }
}
