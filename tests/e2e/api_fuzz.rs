//! schemathesis against the running API: it reads the served OpenAPI document, generates
//! requests from it (valid ones and ones the document rules out) and checks every answer
//! against it. schemathesis comes from PyPI into `.venv/` (scripts/setup-dev.sh, pinned there).
//! To explore further than the suite does: `HERALD_FUZZ_EXAMPLES=200 HERALD_FUZZ_SEED=7 cargo
//! test --test e2e api_fuzz`.

use std::{path::PathBuf, process::Stdio, time::Duration};

use serde_json::{Value, json};

use super::{
    dispatch::{API_TOKEN, SEND_ONE, api, app_with},
    harness::{eventually, text_body},
};

/// Examples per operation and phase (HERALD_FUZZ_EXAMPLES): about a thousand requests in all,
/// some seconds.
const MAX_EXAMPLES: &str = "25";
/// The run is killed and the test fails past this.
const TIME_LIMIT: Duration = Duration::from_secs(300);
/// A fixed seed (HERALD_FUZZ_SEED) keeps the test repeatable.
const SEED: &str = "20261206";

/// What every answer must satisfy. `positive_data_acceptance` is left out: the document types
/// a phone number or a group name as a plain string (the E.164 and name rules are in code),
/// so a valid-by-schema "abc" is rightly refused with 422.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
response_headers_conformance,response_schema_conformance,negative_data_rejection,\
missing_required_header,unsupported_method,ignored_auth";

const WELCOME: &str = r#"
name: welcome
trigger:
  event: whatsapp.message_received
steps:
  - send_template:
      id: greet
      template: welcome_message
      language: en_US
"#;

/// `.venv/bin/schemathesis`, or None (the test is skipped) when it is missing outside CI.
fn schemathesis() -> Option<PathBuf> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/schemathesis");
    if path.is_file() {
        return Some(path);
    }
    let message = format!(
        "{} is missing: run scripts/setup-dev.sh to install schemathesis",
        path.display()
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{message}");
    }
    eprintln!("skipped: {message}");
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schemathesis_finds_no_server_error_and_no_answer_the_document_does_not_describe() {
    let Some(schemathesis) = schemathesis() else {
        return;
    };
    let app = app_with(vec![WELCOME, SEND_ONE], vec![]).await;
    // Something for the lists to show: a run, a contact in a group, a dispatch.
    let response = app
        .post_webhook(&text_body("+4915112345678", "hello", "wamid.fuzz1"))
        .await;
    assert_eq!(response.status(), 200);
    eventually("the run finished", || async {
        app.count("SELECT count(*) FROM runs WHERE finished_at IS NOT NULL")
            .await
            == 1
    })
    .await;
    let (status, _) = api(
        &app,
        "POST",
        "/api/v1/contacts",
        Some(json!({"phone": "+4915199990001", "name": "Ana", "groups": ["vip"]})),
    )
    .await;
    assert_eq!(status, 201);
    let (status, _) = api(
        &app,
        "POST",
        "/api/v1/dispatches",
        Some(json!({"workflow": "announce", "to": ["+4915112345670"], "rate": 0.1})),
    )
    .await;
    assert_eq!(status, 201);

    let document: Value = app
        .http
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let operations: usize = document["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum();
    let examples = std::env::var("HERALD_FUZZ_EXAMPLES").unwrap_or(MAX_EXAMPLES.into());
    let seed = std::env::var("HERALD_FUZZ_SEED").unwrap_or(SEED.into());

    let work_dir = std::env::temp_dir().join(format!("herald-schemathesis-{}", app.addr.port()));
    std::fs::create_dir_all(&work_dir).unwrap();
    let run = tokio::process::Command::new(&schemathesis)
        .current_dir(&work_dir)
        .args(["run", &app.url("/api/v1/openapi.json")])
        .args(["--url", &app.url("")])
        .args(["--header", &format!("Authorization: Bearer {API_TOKEN}")])
        .args(["--checks", CHECKS])
        .args(["--max-examples", &examples])
        .args(["--seed", &seed])
        .args(["--workers", "1"])
        .args(["--request-timeout", "10"])
        .args(["--generation-database", "none"])
        .arg("--no-color")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(TIME_LIMIT, run)
        .await
        .unwrap_or_else(|_| panic!("schemathesis did not finish within {TIME_LIMIT:?}"))
        .expect("start schemathesis");
    let _ = std::fs::remove_dir_all(&work_dir);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "schemathesis found problems ({}):\n{stdout}\n{stderr}",
        output.status
    );
    // It did test every operation of the document.
    assert!(
        stdout.contains(&format!("Tested: {operations}\n")),
        "schemathesis did not test the {operations} operations:\n{stdout}"
    );
    app.cleanup().await;
}
