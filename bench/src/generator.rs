//! The load generator: signed webhooks, closed loop (throughput) or open loop (latency).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use axum::body::Bytes;
use herald::{
    domain::PhoneNumber,
    ingress::{signature, simulate::text_message_body},
};

use crate::{
    APP_SECRET, BenchArgs, CUSTOMERS, DRAIN_LIMIT, MARKER, MAX_ATTEMPTS, SENDER, report::ms,
    sink::Sink,
};

pub(crate) struct Generator {
    http: reqwest::Client,
    url: reqwest::Url,
    run_id: String,
    customers: Vec<PhoneNumber>,
    pub(crate) accepted: AtomicU64,
}

/// One webhook as the generator saw it.
pub(crate) struct Post {
    pub(crate) seq: u64,
    /// When the event was due: the schedule (fixed rate) or the first attempt's start.
    pub(crate) origin: Instant,
    /// HTTP round trip of the first attempt.
    pub(crate) answer: Option<Duration>,
    pub(crate) accepted_at: Option<Instant>,
    pub(crate) attempts: u32,
}

pub(crate) fn customer_digits(seq: u64) -> String {
    format!("49151{:07}", seq % CUSTOMERS)
}

impl Generator {
    pub(crate) fn new(url: String, run_id: &str) -> anyhow::Result<Self> {
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

pub(crate) struct SustainedRun {
    pub(crate) posts: Vec<Post>,
    pub(crate) next_seq: u64,
    pub(crate) window_start: Instant,
    pub(crate) window_end: Instant,
    pub(crate) window: Duration,
    pub(crate) drain: Duration,
}

/// Closed loop: `concurrency` posters, each posting as soon as its last webhook was answered and
/// the pipeline's backlog (accepted, not yet sent) is below `max_backlog`.
pub(crate) async fn throughput_phase(
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

pub(crate) struct LatencyRun {
    pub(crate) posts: Vec<Post>,
    pub(crate) end_seq: u64,
    pub(crate) max_lag: Duration,
    pub(crate) drain: Duration,
}

/// Open loop: event `i` is started at `start + i / rate`, whether or not earlier ones finished.
pub(crate) async fn latency_phase(
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
