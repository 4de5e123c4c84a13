//! `herald-bench`: drives signed WhatsApp webhooks through the whole pipeline (HTTP ingress ->
//! RabbitMQ -> matcher -> worker -> a local HTTP sink standing in for the Graph API) and reports
//! sustained throughput, latencies, exactly-once delivery and peak memory.
//!
//! Herald runs in-process, as a library, on a fresh database and a unique RabbitMQ prefix; both
//! are removed at the end, also on error. Run it as `RUST_LOG=warn herald-bench` so that Herald's
//! per-step info logs do not skew the figures. Logs go to stderr, so `--json` output on stdout
//! stays one JSON object.

mod generator;
mod report;
mod sink;

use std::{collections::HashMap, path::Path, sync::Arc, time::Duration};

use anyhow::{Context, bail};
use clap::Parser;
use herald::{
    app::{self, Role},
    config::Config,
    workflow,
};
use sqlx::{Connection, PgConnection};
use tokio_util::sync::CancellationToken;

use crate::{
    generator::{Generator, customer_digits, latency_phase, throughput_phase},
    report::{
        DeliveryReport, LatencyReport, Report, Seen, ThroughputReport, answer_latencies, check,
        cpu_check, machine, ms, peak_rss_kib, print_report, targets,
    },
    sink::{Sink, start_sink},
};

/// The same allocator as the `herald` binary, so that the figures are the product's: under load
/// glibc's malloc/free (with its chunk consolidation) took over a quarter of the CPU time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub(crate) const APP_SECRET: &str = "bench-secret";
const ACCESS_TOKEN: &str = "bench-token";
/// Our sender's phone_number_id in the generated webhooks.
pub(crate) const SENDER: &str = "100000000000042";
/// Distinct customers the webhooks come from (`+49151` and 7 digits).
pub(crate) const CUSTOMERS: u64 = 10_000;
/// How long to wait for the pipeline to deliver what was accepted, after a phase.
pub(crate) const DRAIN_LIMIT: Duration = Duration::from_secs(60);
/// Attempts per webhook; like Meta, the generator delivers again when Herald does not answer 2xx.
pub(crate) const MAX_ATTEMPTS: u32 = 5;
/// The text of every message is this prefix and the event's sequence number; the workflow puts
/// it into the template's first body parameter, so each send at the sink joins its webhook.
pub(crate) const MARKER: &str = "bench-";

const WORKFLOW: &str = r#"
name: bench
description: Answers every inbound message with one template that echoes its text.
trigger:
  event: whatsapp.message_received
steps:
  - send_template:
      template: bench_ack
      language: en_US
      variables:
        - "{{ trigger.text }}"
"#;

#[derive(Parser, Clone, Debug)]
#[command(
    name = "herald-bench",
    version,
    about = "Measure Herald's throughput, latency and memory end to end \
             (run as `RUST_LOG=warn herald-bench`)"
)]
pub(crate) struct BenchArgs {
    /// Length of the sustained-throughput phase (e.g. 60s, 2m).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub(crate) duration: Duration,
    /// Length of the fixed-rate latency phase.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub(crate) latency_duration: Duration,
    /// Offered rate of the latency phase, in events/s (open loop).
    #[arg(long, default_value_t = 500)]
    pub(crate) rate: u32,
    /// Webhooks in flight during the throughput phase.
    #[arg(long, default_value_t = 256)]
    pub(crate) concurrency: usize,
    /// Throughput phase: most events accepted but not yet sent, so that the offered load follows
    /// what Herald sustains end to end.
    #[arg(long, default_value_t = 2000)]
    pub(crate) max_backlog: usize,
    /// Print one JSON object instead of the report.
    #[arg(long)]
    pub(crate) json: bool,
    /// Also write the latency phase's webhooks to this file, one line each: when it was due
    /// (ms after the phase began) and its answer time in ms (-1: no answer). Shows whether
    /// slow answers come alone or together.
    #[arg(long)]
    pub(crate) latency_samples: Option<std::path::PathBuf>,
    /// A database of the PostgreSQL server to connect to for creating the bench database.
    /// Herald's connections to the bench database take its options (the default: no TLS on
    /// the loopback).
    #[arg(
        long,
        default_value = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
    )]
    pub(crate) database_admin_url: String,
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub(crate) amqp_url: String,
}

/// `60s`, `2m`, `500ms` or a bare number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let bad = || format!("'{s}' is not a duration such as 60s, 2m or 500ms");
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number.parse().map_err(|_| bad())?;
    let d = match unit.trim() {
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "ms" => Duration::from_millis(n),
        _ => return Err(bad()),
    };
    if d.is_zero() {
        return Err(format!("'{s}' must be longer than zero"));
    }
    Ok(d)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = BenchArgs::parse();
    herald::telemetry::init_logs(false);
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herald-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.concurrency == 0 || args.rate == 0 || args.max_backlog == 0 {
        bail!("--concurrency, --rate and --max-backlog must be at least 1");
    }
    if let Some(path) = &args.latency_samples {
        // Checked before the run rather than found unwritable after it.
        std::fs::File::create(path)
            .with_context(|| format!("--latency-samples: cannot write {}", path.display()))?;
    }
    if std::env::var_os("RUST_LOG").is_none() {
        eprintln!(
            "hint: RUST_LOG is unset, so Herald logs every webhook and step at info level; \
             run `RUST_LOG=warn herald-bench` to keep logging out of the figures"
        );
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    let db_name = format!("herald_bench_{id}");
    let mut admin = PgConnection::connect(&args.database_admin_url)
        .await
        .context("connect to PostgreSQL (--database-admin-url)")?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db_name}")))
        .execute(&mut admin)
        .await
        .with_context(|| format!("create database {db_name}"))?;
    let _ = admin.close().await;
    let mut db_url =
        reqwest::Url::parse(&args.database_admin_url).context("parse --database-admin-url")?;
    db_url.set_path(&format!("/{db_name}"));

    let outcome = bench(&args, &id, db_url.as_str()).await;

    let dropped = async {
        let mut admin = PgConnection::connect(&args.database_admin_url).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"
        )))
        .execute(&mut admin)
        .await?;
        admin.close().await
    }
    .await;
    let report = outcome?;
    if let Err(e) = dropped {
        eprintln!("warning: could not drop database {db_name}: {e}");
    }

    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    if !report.ok {
        bail!(
            "delivery check failed: {} lost, {} duplicated, {} misrouted, {} unknown sends",
            report.delivery.lost,
            report.delivery.duplicated,
            report.delivery.misrouted,
            report.delivery.unknown_sends
        );
    }
    Ok(())
}

/// Starts the sink and Herald, runs both phases, and stops everything (also on error).
async fn bench(args: &BenchArgs, id: &str, database_url: &str) -> anyhow::Result<Report> {
    // The load generator and the sink stand for Meta's side: they run on a runtime (and thread)
    // of their own, so that their timing does not wait in Herald's task queues and Herald's
    // tasks do not wait behind theirs. They still share the machine's cores.
    let outside = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("bench-outside")
        .enable_all()
        .build()
        .context("start the load generator's runtime")?;
    let outcome = bench_with(args, id, database_url, outside.handle()).await;
    outside.shutdown_background();
    outcome
}

async fn bench_with(
    args: &BenchArgs,
    id: &str,
    database_url: &str,
    outside: &tokio::runtime::Handle,
) -> anyhow::Result<Report> {
    let sink = Arc::new(Sink::new(args.max_backlog));
    let sink_stop = CancellationToken::new();
    let sink_addr = outside
        .spawn(start_sink(sink.clone(), sink_stop.clone()))
        .await
        .context("the sink's task")??;

    let vars: HashMap<&str, String> = HashMap::from([
        ("HERALD_LISTEN", "127.0.0.1:0".to_string()),
        ("HERALD_DATABASE_URL", database_url.to_string()),
        ("HERALD_AMQP_URL", args.amqp_url.clone()),
        ("HERALD_AMQP_PREFIX", format!("bench{id}")),
        ("HERALD_AMQP_QUEUE_TYPE", "classic".to_string()),
        ("HERALD_DB_MAX_CONNECTIONS", "40".to_string()),
        ("WHATSAPP_ACCESS_TOKEN", ACCESS_TOKEN.to_string()),
        // The bench workflow asks no assistant: do not read the working directory's file.
        (
            "HERALD_ASSISTANTS",
            "/nonexistent/herald-bench-assistants.yaml".to_string(),
        ),
        ("WHATSAPP_APP_SECRET", APP_SECRET.to_string()),
        ("WHATSAPP_API_BASE_URL", format!("http://{sink_addr}")),
        // The bench measures Herald, not Meta's limits: the pacing statement still runs on
        // every send, with a sender rate and no recipient gap that never hold one back (its
        // 10,000 customers each get several messages per minute at full speed).
        ("HERALD_SENDER_RATE", "10000".to_string()),
        ("HERALD_RECIPIENT_GAP", "0s".to_string()),
        (
            "HERALD_SENDERS",
            "/nonexistent/herald-bench-senders.yaml".to_string(),
        ),
        // Nor the working directory's template catalog: it does not list the bench's template,
        // and without a catalog every template may be sent.
        (
            "HERALD_TEMPLATES",
            "/nonexistent/herald-bench-templates.yaml".to_string(),
        ),
    ]);
    let config = Config::from_lookup(|k| vars.get(k).cloned())?;
    let workflow =
        workflow::parse_workflow(Path::new("bench.yaml"), WORKFLOW).map_err(|errors| {
            let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
            anyhow::anyhow!("bench workflow: {}", lines.join("; "))
        })?;
    let running = match app::start(
        config,
        &[Role::All],
        workflow::Workflows::new(vec![workflow]),
    )
    .await
    {
        Ok(r) => r,
        Err(e) => {
            sink_stop.cancel();
            return Err(e);
        }
    };
    let url = format!("http://{}/webhooks/whatsapp", running.addr);
    let outcome = match Generator::new(url, id) {
        Ok(generator) => {
            let (args, sink) = (args.clone(), sink.clone());
            outside
                .spawn(async move { phases(&args, Arc::new(generator), &sink).await })
                .await
                .context("the load generator's task")
                .and_then(|r| r)
        }
        Err(e) => Err(e),
    };

    // Stop Herald first (its consumers would otherwise see their queues vanish), then remove the
    // topology with the same bus, which reconnects for it.
    let bus = running.bus.clone();
    running.shutdown().await;
    if let Err(e) = bus.delete_topology().await {
        eprintln!("warning: could not delete the RabbitMQ topology: {e}");
    }
    // Not `bus.close()`: delete_topology leaves its channel open, and closing the connection
    // then logs a spurious lapin error; the process ends right after, which closes it.
    sink_stop.cancel();
    outcome
}

async fn phases(
    args: &BenchArgs,
    generator: Arc<Generator>,
    sink: &Arc<Sink>,
) -> anyhow::Result<Report> {
    let warmup = Duration::from_secs(5).min(args.duration / 4);
    eprintln!(
        "phase 1/2: sustained throughput for {} s ({} webhooks in flight, first {} s are warm-up)",
        args.duration.as_secs_f64(),
        args.concurrency,
        warmup.as_secs_f64()
    );
    let cpu_before = cpu_check();
    let sustained = throughput_phase(args, warmup, &generator, sink).await?;
    eprintln!(
        "phase 2/2: latency at {} events/s offered for {} s",
        args.rate,
        args.latency_duration.as_secs_f64()
    );
    let latency = latency_phase(args, sustained.next_seq, &generator, sink).await?;
    let cpu_after = cpu_check();

    // Exactly once: every accepted webhook produced one send, to its customer.
    let records = sink.snapshot();
    let mut by_seq: HashMap<u64, Seen> = HashMap::with_capacity(records.len());
    let mut unknown_sends = 0u64;
    for r in &records {
        let Some(seq) = r.seq else {
            unknown_sends += 1;
            continue;
        };
        let seen = by_seq.entry(seq).or_insert(Seen {
            sends: 0,
            first: r.at,
            misrouted: false,
        });
        seen.sends += 1;
        seen.first = seen.first.min(r.at);
        seen.misrouted |= r.to != customer_digits(seq);
    }
    let known = |seq: u64| seq < latency.end_seq;
    unknown_sends += by_seq.keys().filter(|s| !known(**s)).count() as u64;
    let check1 = check(&sustained.posts, &by_seq);
    let check2 = check(&latency.posts, &by_seq);
    let delivery = DeliveryReport {
        posted: check1.posted + check2.posted,
        accepted: check1.accepted + check2.accepted,
        rejected: check1.rejected + check2.rejected,
        retries: check1.retries + check2.retries,
        sends: records.len() as u64,
        lost: check1.lost + check2.lost,
        duplicated: check1.duplicated + check2.duplicated,
        misrouted: check1.misrouted + check2.misrouted,
        unknown_sends,
    };
    // Webhooks Herald kept refusing (503) are reported but not failures: Meta would deliver
    // them again for days, and Herald told it to.
    let ok = delivery.lost == 0
        && delivery.duplicated == 0
        && delivery.misrouted == 0
        && delivery.unknown_sends == 0;

    let window = sustained.window.as_secs_f64();
    let sends_in_window = records
        .iter()
        .filter(|r| {
            r.seq.is_some_and(|s| s < sustained.next_seq)
                && r.at >= sustained.window_start
                && r.at < sustained.window_end
        })
        .count();
    let accepted_in_window = sustained
        .posts
        .iter()
        .filter(|p| {
            p.accepted_at
                .is_some_and(|at| at >= sustained.window_start && at < sustained.window_end)
        })
        .count();
    let throughput = ThroughputReport {
        duration_s: args.duration.as_secs_f64(),
        warmup_s: warmup.as_secs_f64(),
        concurrency: args.concurrency,
        max_backlog: args.max_backlog,
        events_per_s: sends_in_window as f64 / window,
        webhooks_accepted_per_s: accepted_in_window as f64 / window,
        webhook_answer_ms: answer_latencies(&sustained.posts),
        webhook_to_send_ms: check1.latencies,
        posted: check1.posted,
        accepted: check1.accepted,
        lost: check1.lost,
        duplicated: check1.duplicated,
        drain_s: sustained.drain.as_secs_f64(),
    };
    let latency_report = LatencyReport {
        offered_rate: args.rate,
        duration_s: args.latency_duration.as_secs_f64(),
        webhook_answer_ms: answer_latencies(&latency.posts),
        webhook_to_send_ms: check2.latencies,
        generator_max_lag_ms: ms(latency.max_lag),
        posted: check2.posted,
        accepted: check2.accepted,
        lost: check2.lost,
        duplicated: check2.duplicated,
        drain_s: latency.drain.as_secs_f64(),
    };
    Ok(Report {
        machine: machine(),
        cpu_check_ms: [ms(cpu_before), ms(cpu_after)],
        targets: targets(&throughput, &latency_report),
        throughput,
        latency: latency_report,
        delivery,
        peak_rss_mib: peak_rss_kib().map(|k| k as f64 / 1024.0),
        peak_rss_note: "VmHWM of the bench process: Herald, the load generator and the sink together",
        ok,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_seconds_minutes_and_milliseconds() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("1h").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn the_bench_workflow_parses() {
        let w = workflow::parse_workflow(Path::new("bench.yaml"), WORKFLOW).unwrap();
        assert_eq!(w.steps.len(), 1);
    }
}
