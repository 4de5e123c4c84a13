//! `herald bench`: drives signed WhatsApp webhooks through the whole pipeline (HTTP ingress ->
//! RabbitMQ -> matcher -> worker -> a local HTTP sink standing in for the Graph API) and reports
//! sustained throughput, latencies, exactly-once delivery and peak memory.
//!
//! Herald runs in-process on a fresh database and a unique RabbitMQ prefix; both are removed at
//! the end, also on error. Run it as `RUST_LOG=warn herald bench` so that Herald's per-step info
//! logs do not skew the figures. Logs go to stderr, so `--json` output on stdout stays one
//! JSON object.

use std::{
    collections::HashMap,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use axum::{
    Router, body::Bytes, extract::State, response::IntoResponse, routing::post, serve::ListenerExt,
};
use clap::Args;
use serde::Serialize;
use serde_json::Value;
use sqlx::{Connection, PgConnection};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::{
    app::{self, Role},
    cli::text_message_body,
    config::Config,
    domain::PhoneNumber,
    ingress::signature,
    workflow,
};

const APP_SECRET: &str = "bench-secret";
const ACCESS_TOKEN: &str = "bench-token";
/// Our sender's phone_number_id in the generated webhooks.
const SENDER: &str = "100000000000042";
/// Distinct customers the webhooks come from (`+49151` and 7 digits).
const CUSTOMERS: u64 = 10_000;
/// How long to wait for the pipeline to deliver what was accepted, after a phase.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);
/// Attempts per webhook; like Meta, the generator delivers again when Herald does not answer 2xx.
const MAX_ATTEMPTS: u32 = 5;
/// The text of every message is this prefix and the event's sequence number; the workflow puts
/// it into the template's first body parameter, so each send at the sink joins its webhook.
const MARKER: &str = "bench-";

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

#[derive(Args, Clone, Debug)]
pub struct BenchArgs {
    /// Length of the sustained-throughput phase (e.g. 60s, 2m).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Length of the fixed-rate latency phase.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub latency_duration: Duration,
    /// Offered rate of the latency phase, in events/s (open loop).
    #[arg(long, default_value_t = 500)]
    pub rate: u32,
    /// Webhooks in flight during the throughput phase.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Throughput phase: most events accepted but not yet sent, so that the offered load follows
    /// what Herald sustains end to end.
    #[arg(long, default_value_t = 2000)]
    pub max_backlog: usize,
    /// Print one JSON object instead of the report.
    #[arg(long)]
    pub json: bool,
    /// Also write the latency phase's webhooks to this file, one line each: when it was due
    /// (ms after the phase began) and its answer time in ms (-1: no answer). Shows whether
    /// slow answers come alone or together.
    #[arg(long)]
    pub latency_samples: Option<std::path::PathBuf>,
    /// A database of the PostgreSQL server to connect to for creating the bench database.
    /// Herald's connections to the bench database take its options (the default: no TLS on
    /// the loopback).
    #[arg(
        long,
        default_value = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
    )]
    pub database_admin_url: String,
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub amqp_url: String,
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

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
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
             run `RUST_LOG=warn herald bench` to keep logging out of the figures"
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

// ---------------------------------------------------------------------------------------------
// The sink: a stand-in for the Graph API that records every send.

struct SinkRecord {
    seq: Option<u64>,
    to: String,
    at: Instant,
}

struct Sink {
    records: Mutex<Vec<SinkRecord>>,
    count: AtomicU64,
    /// Credits of the throughput phase: one is taken per webhook and given back per send.
    credits: Semaphore,
}

impl Sink {
    fn new(max_backlog: usize) -> Self {
        Sink {
            records: Mutex::new(Vec::with_capacity(1 << 17)),
            count: AtomicU64::new(0),
            credits: Semaphore::new(max_backlog),
        }
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }

    fn snapshot(&self) -> Vec<SinkRecord> {
        let records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        records
            .iter()
            .map(|r| SinkRecord {
                seq: r.seq,
                to: r.to.clone(),
                at: r.at,
            })
            .collect()
    }
}

async fn start_sink(
    sink: Arc<Sink>,
    stop: CancellationToken,
) -> anyhow::Result<std::net::SocketAddr> {
    let router = Router::new()
        .route("/{phone_number_id}/messages", post(sink_send))
        .with_state(sink);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("bind the sink")?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
    });
    Ok(addr)
}

/// What the sink reads of a send: the recipient and the template's first parameter. Borrowed
/// from the body: the sink shares the machine with Herald and should cost it little.
#[derive(serde::Deserialize)]
struct SentMessage<'a> {
    #[serde(borrow, default)]
    to: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    template: Option<SentTemplate<'a>>,
}

#[derive(serde::Deserialize)]
struct SentTemplate<'a> {
    #[serde(borrow, default)]
    components: Vec<SentComponent<'a>>,
}

#[derive(serde::Deserialize)]
struct SentComponent<'a> {
    #[serde(borrow, default)]
    parameters: Vec<SentParameter<'a>>,
}

#[derive(serde::Deserialize)]
struct SentParameter<'a> {
    #[serde(borrow, default)]
    text: Option<std::borrow::Cow<'a, str>>,
}

/// `POST /{phone_number_id}/messages`: records the send and answers like the Cloud API.
async fn sink_send(State(sink): State<Arc<Sink>>, body: Bytes) -> impl IntoResponse {
    let at = Instant::now();
    let request: Option<SentMessage<'_>> = serde_json::from_slice(&body).ok();
    let to = request
        .as_ref()
        .and_then(|r| r.to.as_deref())
        .unwrap_or_default()
        .to_string();
    let seq = request
        .as_ref()
        .and_then(|r| r.template.as_ref())
        .and_then(|t| t.components.first())
        .and_then(|c| c.parameters.first())
        .and_then(|p| p.text.as_deref())
        .and_then(|t| t.strip_prefix(MARKER))
        .and_then(|n| n.parse::<u64>().ok());
    let quoted = serde_json::to_string(&to).unwrap_or_else(|_| "\"\"".into());
    let answer = format!(
        r#"{{"messaging_product":"whatsapp","contacts":[{{"input":{quoted},"wa_id":{quoted}}}],"messages":[{{"id":"wamid.{}"}}]}}"#,
        uuid::Uuid::new_v4().simple()
    );
    sink.records
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(SinkRecord { seq, to, at });
    sink.count.fetch_add(1, Ordering::AcqRel);
    sink.credits.add_permits(1);
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        answer,
    )
}

// ---------------------------------------------------------------------------------------------
// The load generator.

struct Generator {
    http: reqwest::Client,
    url: reqwest::Url,
    run_id: String,
    customers: Vec<PhoneNumber>,
    accepted: AtomicU64,
}

/// One webhook as the generator saw it.
struct Post {
    seq: u64,
    /// When the event was due: the schedule (fixed rate) or the first attempt's start.
    origin: Instant,
    /// HTTP round trip of the first attempt.
    answer: Option<Duration>,
    accepted_at: Option<Instant>,
    attempts: u32,
}

fn customer_digits(seq: u64) -> String {
    format!("49151{:07}", seq % CUSTOMERS)
}

impl Generator {
    fn new(url: String, run_id: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1024)
            .timeout(Duration::from_secs(30))
            .build()?;
        let customers = (0..CUSTOMERS)
            .map(|i| PhoneNumber::parse(&format!("+{}", customer_digits(i))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Generator {
            http,
            url: reqwest::Url::parse(&url).context("the webhook URL")?,
            run_id: run_id.to_string(),
            customers,
            accepted: AtomicU64::new(0),
        })
    }

    /// Posts the signed webhook for event `seq`, delivering again (like Meta) until Herald
    /// answers 2xx or the attempts run out.
    async fn post(&self, seq: u64, origin: Instant) -> Post {
        let from = &self.customers[(seq % CUSTOMERS) as usize];
        let text = format!("{MARKER}{seq}");
        let wamid = format!("wamid.bench.{}.{seq}", self.run_id);
        let body = Bytes::from(text_message_body(
            from,
            "Bench Customer",
            &text,
            SENDER,
            &wamid,
        ));
        let sig = signature::sign(APP_SECRET.as_bytes(), &body);
        let mut post = Post {
            seq,
            origin,
            answer: None,
            accepted_at: None,
            attempts: 0,
        };
        for attempt in 1..=MAX_ATTEMPTS {
            let started = Instant::now();
            let response = self
                .http
                .post(self.url.clone())
                .header("content-type", "application/json")
                .header("x-hub-signature-256", &sig)
                .body(body.clone())
                .send()
                .await;
            let ok = match response {
                Ok(r) => {
                    let ok = r.status().is_success();
                    ok && r.bytes().await.is_ok()
                }
                Err(_) => false,
            };
            if attempt == 1 {
                post.answer = Some(started.elapsed());
            }
            post.attempts = attempt;
            if ok {
                post.accepted_at = Some(Instant::now());
                self.accepted.fetch_add(1, Ordering::AcqRel);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100 << (attempt - 1))).await;
        }
        post
    }
}

struct SustainedRun {
    posts: Vec<Post>,
    next_seq: u64,
    window_start: Instant,
    window_end: Instant,
    window: Duration,
    drain: Duration,
}

/// Closed loop: `concurrency` posters, each posting as soon as its last webhook was answered and
/// the pipeline's backlog (accepted, not yet sent) is below `max_backlog`.
async fn throughput_phase(
    args: &BenchArgs,
    warmup: Duration,
    generator: &Arc<Generator>,
    sink: &Arc<Sink>,
) -> anyhow::Result<SustainedRun> {
    let sent_before = sink.count();
    let accepted_before = generator.accepted.load(Ordering::Acquire);
    let start = Instant::now();
    let deadline = start + args.duration;
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(args.concurrency);
    for _ in 0..args.concurrency {
        let (generator, sink, next) = (generator.clone(), sink.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut posts = Vec::new();
            loop {
                let remaining = deadline.saturating_duration_since(Instant::now());
                let credit = tokio::time::timeout(remaining, sink.credits.acquire()).await;
                match credit {
                    Ok(Ok(permit)) => permit.forget(),
                    _ => break,
                }
                if Instant::now() >= deadline {
                    sink.credits.add_permits(1);
                    break;
                }
                let seq = next.fetch_add(1, Ordering::AcqRel);
                let post = generator.post(seq, Instant::now()).await;
                if post.accepted_at.is_none() {
                    sink.credits.add_permits(1);
                }
                posts.push(post);
            }
            posts
        }));
    }
    let mut posts = Vec::new();
    for t in tasks {
        posts.extend(t.await.context("a poster task failed")?);
    }
    let posting_done = Instant::now();
    let accepted = generator.accepted.load(Ordering::Acquire) - accepted_before;
    let drain = drain(sink, sent_before + accepted, posting_done).await;
    posts.sort_by_key(|p| p.seq);
    Ok(SustainedRun {
        posts,
        next_seq: next.load(Ordering::Acquire),
        window_start: start + warmup,
        window_end: deadline,
        window: args.duration - warmup,
        drain,
    })
}

/// `--latency-samples`: one line per webhook, in the order they were due: when it was due (ms
/// after `start`) and its answer time in ms (-1: no answer).
fn write_samples(path: &std::path::Path, posts: &[Post], start: Instant) -> anyhow::Result<()> {
    let lines: Vec<String> = posts
        .iter()
        .map(|p| {
            format!(
                "{:.1} {:.2}\n",
                ms(p.origin.saturating_duration_since(start)),
                p.answer.map_or(-1.0, ms)
            )
        })
        .collect();
    std::fs::write(path, lines.concat()).with_context(|| format!("write {}", path.display()))
}

struct LatencyRun {
    posts: Vec<Post>,
    end_seq: u64,
    max_lag: Duration,
    drain: Duration,
}

/// Open loop: event `i` is started at `start + i / rate`, whether or not earlier ones finished.
async fn latency_phase(
    args: &BenchArgs,
    first_seq: u64,
    generator: &Arc<Generator>,
    sink: &Arc<Sink>,
) -> anyhow::Result<LatencyRun> {
    let sent_before = sink.count();
    let accepted_before = generator.accepted.load(Ordering::Acquire);
    let rate = f64::from(args.rate);
    let total = (rate * args.latency_duration.as_secs_f64()).round() as u64;
    let start = Instant::now() + Duration::from_millis(10);
    let mut handles = Vec::with_capacity(total as usize);
    let mut max_lag = Duration::ZERO;
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        max_lag = max_lag.max(Instant::now().saturating_duration_since(due));
        let generator = generator.clone();
        handles.push(tokio::spawn(async move {
            generator.post(first_seq + i, due).await
        }));
    }
    let mut posts = Vec::with_capacity(handles.len());
    for h in handles {
        posts.push(h.await.context("a poster task failed")?);
    }
    let posting_done = Instant::now();
    if let Some(path) = &args.latency_samples {
        write_samples(path, &posts, start)?;
    }
    let accepted = generator.accepted.load(Ordering::Acquire) - accepted_before;
    let drain = drain(sink, sent_before + accepted, posting_done).await;
    Ok(LatencyRun {
        posts,
        end_seq: first_seq + total,
        max_lag,
        drain,
    })
}

/// Waits (at most [`DRAIN_LIMIT`]) until the sink has seen `expected` sends in all, then a little
/// longer for late duplicates. Returns how long the pipeline took to catch up.
async fn drain(sink: &Sink, expected: u64, since: Instant) -> Duration {
    while sink.count() < expected && since.elapsed() < DRAIN_LIMIT {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained = since.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    drained
}

// ---------------------------------------------------------------------------------------------
// Figures.

struct Seen {
    sends: u64,
    first: Instant,
    misrouted: bool,
}

struct Check {
    posted: u64,
    accepted: u64,
    rejected: u64,
    retries: u64,
    lost: u64,
    duplicated: u64,
    misrouted: u64,
    latencies: Percentiles,
}

fn check(posts: &[Post], by_seq: &HashMap<u64, Seen>) -> Check {
    let mut c = Check {
        posted: posts.len() as u64,
        accepted: 0,
        rejected: 0,
        retries: 0,
        lost: 0,
        duplicated: 0,
        misrouted: 0,
        latencies: Percentiles::default(),
    };
    let mut latencies = Vec::with_capacity(posts.len());
    for p in posts {
        c.retries += u64::from(p.attempts.saturating_sub(1));
        if p.accepted_at.is_none() {
            c.rejected += 1;
            continue;
        }
        c.accepted += 1;
        match by_seq.get(&p.seq) {
            None => c.lost += 1,
            Some(seen) => {
                c.duplicated += seen.sends - 1;
                c.misrouted += u64::from(seen.misrouted);
                latencies.push(seen.first.saturating_duration_since(p.origin));
            }
        }
    }
    c.latencies = Percentiles::of(latencies);
    c
}

fn answer_latencies(posts: &[Post]) -> Percentiles {
    Percentiles::of(posts.iter().filter_map(|p| p.answer).collect())
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

#[derive(Debug, Default, Serialize)]
struct Percentiles {
    count: usize,
    p50: f64,
    p99: f64,
    max: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles, in milliseconds.
    fn of(mut values: Vec<Duration>) -> Self {
        if values.is_empty() {
            return Percentiles::default();
        }
        values.sort_unstable();
        let rank = |q: f64| {
            let i = (q * values.len() as f64).ceil() as usize;
            ms(values[i.clamp(1, values.len()) - 1])
        };
        Percentiles {
            count: values.len(),
            p50: rank(0.50),
            p99: rank(0.99),
            max: rank(1.0),
        }
    }
}

#[derive(Debug, Serialize)]
struct Report {
    machine: Machine,
    /// [`cpu_check`] before the first phase and after the last.
    cpu_check_ms: [f64; 2],
    /// The issue's first targets, each judged against this run's figures.
    targets: Vec<TargetCheck>,
    throughput: ThroughputReport,
    latency: LatencyReport,
    delivery: DeliveryReport,
    peak_rss_mib: Option<f64>,
    peak_rss_note: &'static str,
    ok: bool,
}

/// One first target: what it asks, what this run measured and whether it was met. `met` is
/// `None` when the run was not made the way the target is stated (a shorter throughput phase,
/// another offered rate), so the figure says nothing about it.
#[derive(Debug, Serialize)]
struct TargetCheck {
    target: &'static str,
    measured: f64,
    unit: &'static str,
    met: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    not_judged: Option<&'static str>,
}

/// The first targets on the 2-core machine: at least 2,000 events/s end to end, sustained for
/// 60 s with nothing lost; webhook p99 under 20 ms and webhook-to-send p99 under 100 ms at 500
/// events/s offered.
fn targets(t: &ThroughputReport, l: &LatencyReport) -> Vec<TargetCheck> {
    // `not_judged`: why this run says nothing about the target, if it does not.
    let check = |target, measured, unit, not_judged: Option<&'static str>, met: bool| TargetCheck {
        target,
        measured,
        unit,
        met: not_judged.is_none().then_some(met),
        not_judged,
    };
    let short =
        (t.duration_s < 60.0).then_some("needs a throughput phase of 60 s or more (--duration)");
    let other_rate = (l.offered_rate != 500)
        .then_some("needs the latency phase at 500 events/s offered (--rate 500)");
    vec![
        check(
            "end to end >= 2000 events/s sustained for 60 s, nothing lost",
            t.events_per_s,
            "events/s",
            short,
            t.events_per_s >= 2000.0 && t.lost == 0 && t.duplicated == 0,
        ),
        check(
            "webhook answer p99 < 20 ms at 500 events/s",
            l.webhook_answer_ms.p99,
            "ms",
            other_rate,
            l.webhook_answer_ms.count > 0 && l.webhook_answer_ms.p99 < 20.0,
        ),
        check(
            "webhook -> send p99 < 100 ms at 500 events/s",
            l.webhook_to_send_ms.p99,
            "ms",
            other_rate,
            l.webhook_to_send_ms.count > 0 && l.lost == 0 && l.webhook_to_send_ms.p99 < 100.0,
        ),
    ]
}

#[derive(Debug, Serialize)]
struct Machine {
    herald_version: &'static str,
    cores: usize,
    cpu_model: Option<String>,
    date: String,
}

#[derive(Debug, Serialize)]
struct ThroughputReport {
    duration_s: f64,
    warmup_s: f64,
    concurrency: usize,
    max_backlog: usize,
    /// Sends the sink received per second over the window after the warm-up.
    events_per_s: f64,
    webhooks_accepted_per_s: f64,
    webhook_answer_ms: Percentiles,
    webhook_to_send_ms: Percentiles,
    posted: u64,
    accepted: u64,
    lost: u64,
    duplicated: u64,
    drain_s: f64,
}

#[derive(Debug, Serialize)]
struct LatencyReport {
    offered_rate: u32,
    duration_s: f64,
    webhook_answer_ms: Percentiles,
    /// From the time the webhook was due by the schedule to the sink receiving the send.
    webhook_to_send_ms: Percentiles,
    generator_max_lag_ms: f64,
    posted: u64,
    accepted: u64,
    lost: u64,
    duplicated: u64,
    drain_s: f64,
}

#[derive(Debug, Serialize)]
struct DeliveryReport {
    posted: u64,
    accepted: u64,
    /// Webhooks Herald never answered 2xx, after all attempts (reported, not a failure).
    rejected: u64,
    retries: u64,
    sends: u64,
    /// Accepted webhooks that produced no send.
    lost: u64,
    /// Sends beyond the first for one webhook.
    duplicated: u64,
    /// Webhooks whose send went to another number than the customer's.
    misrouted: u64,
    /// Sends the sink could not join to a posted webhook.
    unknown_sends: u64,
}

/// How fast one core is now: the time a fixed piece of work takes (20,000 JSON round trips of
/// a webhook-sized body). A shared machine's speed changes with its neighbours' load; two runs'
/// figures compare only at similar speeds.
fn cpu_check() -> Duration {
    let from = PhoneNumber::parse("+491510000057").unwrap_or_else(|_| unreachable!());
    let body: Value = serde_json::from_slice(&text_message_body(
        &from,
        "Bench Customer",
        "bench-57",
        SENDER,
        "wamid.bench.0123456789abcdef.57",
    ))
    .unwrap_or(Value::Null);
    let start = Instant::now();
    for _ in 0..20_000 {
        let bytes = serde_json::to_vec(std::hint::black_box(&body)).unwrap_or_default();
        let back: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        std::hint::black_box(back);
    }
    start.elapsed()
}

fn machine() -> Machine {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        });
    Machine {
        herald_version: env!("CARGO_PKG_VERSION"),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model,
        date: chrono::Utc::now()
            .format("%Y-%m-%d %H:%M:%S UTC")
            .to_string(),
    }
}

/// VmHWM (peak resident set) of this process, in KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn print_report(r: &Report) {
    let m = &r.machine;
    let t = &r.throughput;
    let l = &r.latency;
    let d = &r.delivery;
    println!("Herald {} bench", m.herald_version);
    println!(
        "machine: {} cores ({}), {}",
        m.cores,
        m.cpu_model.as_deref().unwrap_or("unknown CPU"),
        m.date
    );
    println!(
        "CPU check: {:.0} ms before, {:.0} ms after (one core, fixed work; lower is faster)",
        r.cpu_check_ms[0], r.cpu_check_ms[1]
    );
    println!(
        "pipeline: webhook -> ingress -> RabbitMQ -> matcher -> worker -> local Graph API sink"
    );
    println!();
    println!(
        "1. sustained throughput ({} s, {} webhooks in flight, backlog <= {}, first {} s warm-up)",
        t.duration_s, t.concurrency, t.max_backlog, t.warmup_s
    );
    println!(
        "   end to end           {:>9.1} events/s (sends at the sink)",
        t.events_per_s
    );
    println!(
        "   webhooks accepted    {:>9.1} /s",
        t.webhooks_accepted_per_s
    );
    println!(
        "   webhook answer       p50 {:>8.2} ms   p99 {:>8.2} ms   max {:>8.2} ms",
        t.webhook_answer_ms.p50, t.webhook_answer_ms.p99, t.webhook_answer_ms.max
    );
    println!(
        "   webhook -> send      p50 {:>8.2} ms   p99 {:>8.2} ms   max {:>8.2} ms",
        t.webhook_to_send_ms.p50, t.webhook_to_send_ms.p99, t.webhook_to_send_ms.max
    );
    println!(
        "   posted {}, accepted {}, lost {}, duplicated {}; drained {:.1} s after the last post",
        t.posted, t.accepted, t.lost, t.duplicated, t.drain_s
    );
    println!();
    println!(
        "2. latency at a fixed rate ({} events/s offered, open loop, {} s)",
        l.offered_rate, l.duration_s
    );
    println!(
        "   webhook answer       p50 {:>8.2} ms   p99 {:>8.2} ms   max {:>8.2} ms",
        l.webhook_answer_ms.p50, l.webhook_answer_ms.p99, l.webhook_answer_ms.max
    );
    println!(
        "   webhook -> send      p50 {:>8.2} ms   p99 {:>8.2} ms   max {:>8.2} ms",
        l.webhook_to_send_ms.p50, l.webhook_to_send_ms.p99, l.webhook_to_send_ms.max
    );
    println!(
        "   posted {}, accepted {}, lost {}, duplicated {}; generator lag max {:.2} ms",
        l.posted, l.accepted, l.lost, l.duplicated, l.generator_max_lag_ms
    );
    println!();
    println!(
        "3. delivery: {} posted, {} accepted, {} rejected, {} retries, {} sends, {} lost, \
         {} duplicated, {} misrouted, {} unknown",
        d.posted,
        d.accepted,
        d.rejected,
        d.retries,
        d.sends,
        d.lost,
        d.duplicated,
        d.misrouted,
        d.unknown_sends
    );
    match r.peak_rss_mib {
        Some(mib) => println!("4. peak RSS {mib:.1} MiB ({})", r.peak_rss_note),
        None => println!("4. peak RSS unavailable (no /proc/self/status)"),
    }
    println!("5. first targets (2 cores)");
    for c in &r.targets {
        let verdict = match (c.met, c.not_judged) {
            (Some(true), _) => "met".to_string(),
            (Some(false), _) => "MISSED".to_string(),
            (None, why) => format!("not judged: {}", why.unwrap_or("")),
        };
        println!(
            "   {:<62} {:>8.1} {:<8} {verdict}",
            c.target, c.measured, c.unit
        );
    }
    println!();
    if r.ok {
        println!("OK: every accepted webhook produced exactly one send, to its customer");
    } else {
        println!("FAILED: see the delivery line");
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_generators_webhook_is_a_cloud_api_text_message() {
        let from = PhoneNumber::parse("+491510000057").unwrap();
        let body: Value = serde_json::from_slice(&text_message_body(
            &from,
            "Bench Customer",
            "bench-57",
            SENDER,
            "wamid.x",
        ))
        .unwrap();
        let value = &body["entry"][0]["changes"][0]["value"];
        let stamp = value["messages"][0]["timestamp"].clone();
        assert!(
            stamp.as_str().is_some_and(|t| t.parse::<i64>().is_ok()),
            "{stamp}"
        );
        assert_eq!(
            body,
            json!({
                "object": "whatsapp_business_account",
                "entry": [{"id": "sandbox-waba", "changes": [{"field": "messages", "value": {
                    "messaging_product": "whatsapp",
                    "metadata": {"display_phone_number": "15550000000", "phone_number_id": SENDER},
                    "contacts": [{"profile": {"name": "Bench Customer"}, "wa_id": "491510000057"}],
                    "messages": [{"from": "491510000057", "id": "wamid.x", "timestamp": stamp,
                                  "type": "text", "text": {"body": "bench-57"}}]
                }}]}]
            })
        );
    }

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
    fn percentiles_use_the_nearest_rank() {
        let values: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let p = Percentiles::of(values);
        assert_eq!((p.count, p.p50, p.p99, p.max), (100, 50.0, 99.0, 100.0));
        assert_eq!(Percentiles::of(Vec::new()).count, 0);
    }

    fn figures(
        duration_s: f64,
        per_s: f64,
        rate: u32,
        answer_p99: f64,
        send_p99: f64,
    ) -> (ThroughputReport, LatencyReport) {
        let p99 = |v: f64| Percentiles {
            count: 100,
            p50: v / 2.0,
            p99: v,
            max: v * 2.0,
        };
        let t = ThroughputReport {
            duration_s,
            warmup_s: 5.0,
            concurrency: 256,
            max_backlog: 2000,
            events_per_s: per_s,
            webhooks_accepted_per_s: per_s,
            webhook_answer_ms: p99(40.0),
            webhook_to_send_ms: p99(700.0),
            posted: 100,
            accepted: 100,
            lost: 0,
            duplicated: 0,
            drain_s: 0.1,
        };
        let l = LatencyReport {
            offered_rate: rate,
            duration_s: 30.0,
            webhook_answer_ms: p99(answer_p99),
            webhook_to_send_ms: p99(send_p99),
            generator_max_lag_ms: 1.0,
            posted: 100,
            accepted: 100,
            lost: 0,
            duplicated: 0,
            drain_s: 0.1,
        };
        (t, l)
    }

    fn verdicts(checks: &[TargetCheck]) -> Vec<Option<bool>> {
        checks.iter().map(|c| c.met).collect()
    }

    #[test]
    fn targets_are_judged_against_the_figures_of_a_run_made_as_they_are_stated() {
        let (t, l) = figures(60.0, 2888.3, 500, 17.2, 42.8);
        let checks = targets(&t, &l);
        assert_eq!(verdicts(&checks), [Some(true); 3]);
        assert_eq!(checks[0].measured, 2888.3);
        assert!(checks.iter().all(|c| c.not_judged.is_none()));

        let (t, l) = figures(60.0, 1999.9, 500, 20.0, 100.0);
        assert_eq!(verdicts(&targets(&t, &l)), [Some(false); 3]);

        // Nothing lost is part of the throughput target, however fast the run.
        let (mut t, l) = figures(60.0, 2500.0, 500, 5.0, 10.0);
        t.lost = 1;
        assert_eq!(
            verdicts(&targets(&t, &l)),
            [Some(false), Some(true), Some(true)]
        );
        let (t, mut l) = figures(60.0, 2500.0, 500, 5.0, 10.0);
        l.lost = 1;
        assert_eq!(
            verdicts(&targets(&t, &l)),
            [Some(true), Some(true), Some(false)]
        );
        l.lost = 0;
        // A phase with no answers at all meets no latency target.
        l.webhook_answer_ms = Percentiles::default();
        l.webhook_to_send_ms = Percentiles::default();
        assert_eq!(
            verdicts(&targets(&t, &l)),
            [Some(true), Some(false), Some(false)]
        );
    }

    #[test]
    fn targets_of_a_run_made_otherwise_are_not_judged() {
        let (t, l) = figures(4.0, 2500.0, 50, 5.0, 10.0);
        let checks = targets(&t, &l);
        assert_eq!(verdicts(&checks), [None; 3]);
        assert!(checks[0].not_judged.unwrap().contains("--duration"));
        assert!(checks[1].not_judged.unwrap().contains("--rate 500"));
        let (t, l) = figures(120.0, 2500.0, 400, 5.0, 10.0);
        assert_eq!(verdicts(&targets(&t, &l)), [Some(true), None, None]);
    }

    #[test]
    fn the_bench_workflow_parses() {
        let w = workflow::parse_workflow(Path::new("bench.yaml"), WORKFLOW).unwrap();
        assert_eq!(w.steps.len(), 1);
    }
}
