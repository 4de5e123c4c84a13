//! The `herald-bench` program, run as a user runs it: briefly, at a low rate.

use std::{path::Path, process::Command};

fn herald_bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_herald-bench"))
}

/// The project's folder, where `herald-bench` is usually started.
fn project_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ is inside the project")
}

/// The benchmark itself, briefly and at a low rate: it must keep working from the project's
/// folder (whose templates.yaml does not list the bench's template) and find every webhook sent
/// once. The figures are not judged here; `herald-bench` prints them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn herald_bench_runs_a_short_pass_and_finds_every_webhook_sent_once() {
    let samples = std::env::temp_dir().join(format!(
        "herald-bench-samples-{}.txt",
        uuid::Uuid::now_v7().simple()
    ));
    let samples_arg = samples.display().to_string();
    let out = tokio::task::spawn_blocking(move || {
        herald_bench()
            .args([
                "--duration",
                "4s",
                "--latency-duration",
                "2s",
                "--rate",
                "50",
                "--concurrency",
                "8",
                "--json",
                "--latency-samples",
                &samples_arg,
            ])
            .env("RUST_LOG", "warn")
            .current_dir(project_dir())
            .output()
            .expect("run herald-bench")
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "herald-bench failed: {stderr}");
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("bench --json prints one JSON object");
    assert_eq!(report["ok"], true, "{report:#}");
    let delivery = &report["delivery"];
    assert!(delivery["accepted"].as_u64().unwrap() > 0, "{report:#}");
    assert_eq!(delivery["sends"], delivery["accepted"], "{report:#}");
    assert_eq!(delivery["lost"], 0);
    assert_eq!(delivery["duplicated"], 0);
    assert!(report["throughput"]["events_per_s"].as_f64().unwrap() > 0.0);
    // A 4 s run at 50/s is not made as the first targets are stated: listed, not judged.
    let targets = report["targets"].as_array().expect("targets");
    assert_eq!(targets.len(), 3, "{report:#}");
    assert!(
        targets
            .iter()
            .all(|t| t["met"].is_null() && t["not_judged"].is_string()),
        "{report:#}"
    );
    assert_eq!(
        targets[0]["measured"], report["throughput"]["events_per_s"],
        "{report:#}"
    );
    let checks = report["cpu_check_ms"].as_array().expect("cpu_check_ms");
    assert_eq!(checks.len(), 2);
    assert!(
        checks.iter().all(|c| c.as_f64().unwrap() > 0.0),
        "{report:#}"
    );
    // One line per webhook of the latency phase (2 s at 50/s): when it was due, its answer.
    let text = std::fs::read_to_string(&samples).expect("samples file");
    let _ = std::fs::remove_file(&samples);
    let lines: Vec<Vec<f64>> = text
        .lines()
        .map(|l| l.split(' ').map(|x| x.parse().unwrap()).collect())
        .collect();
    assert_eq!(
        lines.len() as u64,
        report["latency"]["posted"].as_u64().unwrap()
    );
    assert_eq!(lines.len(), 100);
    assert!(
        lines
            .iter()
            .all(|l| l.len() == 2 && l[0] >= 0.0 && l[1] > 0.0),
        "{text}"
    );
    assert!(
        lines.windows(2).all(|w| w[0][0] < w[1][0]),
        "in the order they were due"
    );
}

/// A `--latency-samples` file that cannot be written stops the bench at once, naming it, before
/// any database or run is made.
#[test]
fn herald_bench_refuses_an_unwritable_samples_file_before_it_starts() {
    let out = herald_bench()
        .args(["--latency-samples", "/nonexistent-herald-dir/samples.txt"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run herald-bench");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--latency-samples: cannot write /nonexistent-herald-dir/samples.txt"),
        "{stderr}"
    );
    assert!(!stderr.contains("phase 1/2"), "{stderr}");
}
