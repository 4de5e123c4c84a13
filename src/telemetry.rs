//! Logs (tracing to stderr, so that command output on stdout stays clean; JSON with HERALD_LOG_FORMAT=json) and metrics (Prometheus text at /metrics).

use std::{sync::OnceLock, time::Duration};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

pub fn init_logs(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,sqlx=warn,lapin=warn,hyper=warn,batch_aint_one=warn")
    });
    let registry = tracing_subscriber::registry().with(filter);
    let _ = if json {
        registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(std::io::stderr),
            )
            .try_init()
    } else {
        registry
            .with(fmt::layer().with_target(false).with_writer(std::io::stderr))
            .try_init()
    };
}

static METRICS: OnceLock<PrometheusHandle> = OnceLock::new();

/// How often the recorder's upkeep runs. Histogram samples are held one by one until upkeep
/// folds them into their buckets; without it they pile up until `/metrics` is scraped, which
/// may be never.
pub const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Runs `upkeep` every `every`, for the life of the process, on a thread of its own named
/// `name` (the recorder is process-wide; a tokio task would die with the runtime that first
/// used it).
fn keep_up(name: &str, upkeep: impl Fn() + Send + 'static, every: Duration) {
    let spawned = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            loop {
                std::thread::sleep(every);
                upkeep();
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "could not start the metrics upkeep; histograms drain only when scraped");
    }
}

/// The process-wide Prometheus recorder, installed on first use, with its upkeep running.
pub fn metrics() -> &'static PrometheusHandle {
    METRICS.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets(&[
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let handle = match builder.install_recorder() {
            Ok(handle) => handle,
            // Another recorder is installed (an embedding program): keep a detached one.
            Err(_) => PrometheusBuilder::new().build_recorder().handle(),
        };
        let upkept = handle.clone();
        keep_up("metrics-upkeep", move || upkept.run_upkeep(), UPKEEP_EVERY);
        handle
    })
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
        time::Instant,
    };

    use super::*;

    /// The crate shows no count of the samples it holds (a render drains them too, and
    /// publishes descriptions as upkeep does), so this shows that the upkeep runs by itself,
    /// with no render, and that the samples it folded are all counted.
    #[test]
    fn the_upkeep_runs_on_its_own_thread_without_a_scrape() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let histogram = metrics::histogram!("upkeep_test_seconds");
            for i in 0..100_000 {
                histogram.record(f64::from(i) / 1000.0);
            }
        });
        let runs = Arc::new(AtomicUsize::new(0));
        let (upkept, counted) = (handle.clone(), runs.clone());
        let upkeep = move || {
            upkept.run_upkeep();
            counted.fetch_add(1, Ordering::SeqCst);
        };
        keep_up("upkeep-test", upkeep, Duration::from_millis(10));
        let deadline = Instant::now() + Duration::from_secs(5);
        while runs.load(Ordering::SeqCst) < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            runs.load(Ordering::SeqCst) >= 3,
            "the upkeep ran {} times in 5 s",
            runs.load(Ordering::SeqCst)
        );
        let rendered = handle.render();
        assert!(
            rendered.contains("upkeep_test_seconds_count 100000"),
            "{rendered}"
        );
    }

    /// The thread the process-wide recorder starts, seen by its name.
    #[cfg(target_os = "linux")]
    #[test]
    fn installing_the_recorder_starts_its_upkeep_thread() {
        let _ = metrics();
        let names_now = || -> Vec<String> {
            std::fs::read_dir("/proc/self/task")
                .unwrap()
                .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
                .map(|name| name.trim().to_string())
                .collect()
        };
        // A new thread names itself once it runs: until then it has its parent's name.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut names = names_now();
        while !names.iter().any(|n| n == "metrics-upkeep") && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            names = names_now();
        }
        assert!(
            names.iter().any(|n| n == "metrics-upkeep"),
            "no metrics-upkeep thread among {names:?}"
        );
    }
}
