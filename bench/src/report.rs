//! Figures: the exactly-once check, percentiles, the first targets, and the report.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use herald::{domain::PhoneNumber, ingress::simulate::text_message_body};
use serde::Serialize;
use serde_json::Value;

use crate::{SENDER, generator::Post};

pub(crate) struct Seen {
    pub(crate) sends: u64,
    pub(crate) first: Instant,
    pub(crate) misrouted: bool,
}

pub(crate) struct Check {
    pub(crate) posted: u64,
    pub(crate) accepted: u64,
    pub(crate) rejected: u64,
    pub(crate) retries: u64,
    pub(crate) lost: u64,
    pub(crate) duplicated: u64,
    pub(crate) misrouted: u64,
    pub(crate) latencies: Percentiles,
}

pub(crate) fn check(posts: &[Post], by_seq: &HashMap<u64, Seen>) -> Check {
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

pub(crate) fn answer_latencies(posts: &[Post]) -> Percentiles {
    Percentiles::of(posts.iter().filter_map(|p| p.answer).collect())
}

pub(crate) fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

#[derive(Debug, Default, Serialize)]
pub(crate) struct Percentiles {
    pub(crate) count: usize,
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles, in milliseconds.
    pub(crate) fn of(mut values: Vec<Duration>) -> Self {
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
pub(crate) struct Report {
    pub(crate) machine: Machine,
    /// [`cpu_check`] before the first phase and after the last.
    pub(crate) cpu_check_ms: [f64; 2],
    /// The first targets, each judged against this run's figures.
    pub(crate) targets: Vec<TargetCheck>,
    pub(crate) throughput: ThroughputReport,
    pub(crate) latency: LatencyReport,
    pub(crate) delivery: DeliveryReport,
    pub(crate) peak_rss_mib: Option<f64>,
    pub(crate) peak_rss_note: &'static str,
    pub(crate) ok: bool,
}

/// One first target: what it asks, what this run measured and whether it was met. `met` is
/// `None` when the run was not made the way the target is stated (a shorter throughput phase,
/// another offered rate), so the figure says nothing about it.
#[derive(Debug, Serialize)]
pub(crate) struct TargetCheck {
    pub(crate) target: &'static str,
    pub(crate) measured: f64,
    pub(crate) unit: &'static str,
    pub(crate) met: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) not_judged: Option<&'static str>,
}

/// The first targets on the 2-core machine: at least 2,000 events/s end to end, sustained for
/// 60 s with nothing lost; webhook p99 under 20 ms and webhook-to-send p99 under 100 ms at 500
/// events/s offered.
pub(crate) fn targets(t: &ThroughputReport, l: &LatencyReport) -> Vec<TargetCheck> {
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
pub(crate) struct Machine {
    pub(crate) herald_version: &'static str,
    pub(crate) cores: usize,
    pub(crate) cpu_model: Option<String>,
    pub(crate) date: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct ThroughputReport {
    pub(crate) duration_s: f64,
    pub(crate) warmup_s: f64,
    pub(crate) concurrency: usize,
    pub(crate) max_backlog: usize,
    /// Sends the sink received per second over the window after the warm-up.
    pub(crate) events_per_s: f64,
    pub(crate) webhooks_accepted_per_s: f64,
    pub(crate) webhook_answer_ms: Percentiles,
    pub(crate) webhook_to_send_ms: Percentiles,
    pub(crate) posted: u64,
    pub(crate) accepted: u64,
    pub(crate) lost: u64,
    pub(crate) duplicated: u64,
    pub(crate) drain_s: f64,
}

#[derive(Debug, Serialize)]
pub(crate) struct LatencyReport {
    pub(crate) offered_rate: u32,
    pub(crate) duration_s: f64,
    pub(crate) webhook_answer_ms: Percentiles,
    /// From the time the webhook was due by the schedule to the sink receiving the send.
    pub(crate) webhook_to_send_ms: Percentiles,
    pub(crate) generator_max_lag_ms: f64,
    pub(crate) posted: u64,
    pub(crate) accepted: u64,
    pub(crate) lost: u64,
    pub(crate) duplicated: u64,
    pub(crate) drain_s: f64,
}

#[derive(Debug, Serialize)]
pub(crate) struct DeliveryReport {
    pub(crate) posted: u64,
    pub(crate) accepted: u64,
    /// Webhooks Herald never answered 2xx, after all attempts (reported, not a failure).
    pub(crate) rejected: u64,
    pub(crate) retries: u64,
    pub(crate) sends: u64,
    /// Accepted webhooks that produced no send.
    pub(crate) lost: u64,
    /// Sends beyond the first for one webhook.
    pub(crate) duplicated: u64,
    /// Webhooks whose send went to another number than the customer's.
    pub(crate) misrouted: u64,
    /// Sends the sink could not join to a posted webhook.
    pub(crate) unknown_sends: u64,
}

/// How fast one core is now: the time a fixed piece of work takes (20,000 JSON round trips of
/// a webhook-sized body). A shared machine's speed changes with its neighbours' load; two runs'
/// figures compare only at similar speeds.
pub(crate) fn cpu_check() -> Duration {
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

pub(crate) fn machine() -> Machine {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        });
    Machine {
        herald_version: herald::VERSION,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model,
        date: chrono::Utc::now()
            .format("%Y-%m-%d %H:%M:%S UTC")
            .to_string(),
    }
}

/// VmHWM (peak resident set) of this process, in KiB.
pub(crate) fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub(crate) fn print_report(r: &Report) {
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
    use super::*;

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
}
