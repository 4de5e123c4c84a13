//! Retention and erasure against real PostgreSQL and RabbitMQ: one sweep deletes backdated
//! history and keeps fresh rows and what is still in use; a retention under 7 days is refused
//! at start; erasing a contact leaves no trace of its number or texts in any table while the
//! counts stay; an unknown contact is a 404 and a CLI error.

use std::{process::Command, time::Duration};

use herald::{schedules::retention, store::retention::Table};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::harness::{Options, TestApp, eventually, spawn_app, text_body};

const API_TOKEN: &str = "herald-sandbox-api-token";
const NINETY_DAYS: Duration = Duration::from_secs(90 * 86_400);

const REPLY: &str = r#"
name: reply
trigger:
  event: whatsapp.message_received
  filter: 'trigger.text != "wait"'
steps:
  - send_text:
      text: "You said: {{ trigger.text }}"
"#;

const SLEEPER: &str = r#"
name: sleeper
trigger:
  event: whatsapp.message_received
  filter: 'trigger.text == "wait"'
steps:
  - delay:
      duration: 1h
  - send_text:
      text: "later"
"#;

fn herald(app: &TestApp) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_herald"));
    c.env("HERALD_DATABASE_URL", &app.vars["HERALD_DATABASE_URL"]);
    c
}

async fn exec(app: &TestApp, sql: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(&app.pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn message(app: &TestApp, from: &str, text: &str, wamid: &str) {
    let r = app.post_webhook(&text_body(from, text, wamid)).await;
    assert_eq!(r.status(), 200, "webhook of {wamid}");
}

/// One sweep, retried while another sweep (the app's own, at start) holds the lock.
async fn sweep_once(app: &TestApp) -> retention::Sweep {
    let token = CancellationToken::new();
    for _ in 0..100 {
        let swept = retention::sweep(&app.pool, NINETY_DAYS, chrono::Utc::now(), &token)
            .await
            .expect("sweep");
        if let Some(s) = swept {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the retention lock stayed taken");
}

async fn last_vacuum_of(app: &TestApp, table: &str) -> bool {
    sqlx::query_scalar::<_, bool>(
        "SELECT last_vacuum IS NOT NULL FROM pg_stat_user_tables WHERE relname = $1",
    )
    .bind(table)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sweep_deletes_old_history_and_keeps_fresh_rows_and_unfinished_runs() {
    let app = spawn_app(Options {
        workflows: vec![REPLY, SLEEPER],
        ..Options::default()
    })
    .await;
    message(&app, "+4915122220001", "hello", "wamid.ret-old").await;
    message(&app, "+4915122220002", "wait", "wamid.ret-sleeping").await;
    eventually("the old run completed and the other sleeps", || async {
        app.count("SELECT count(*) FROM runs WHERE status = 'completed'")
            .await
            == 1
            && app.count("SELECT count(*) FROM timers").await == 1
    })
    .await;
    // Everything so far is 100 days old; AI history, quarantine and notices too.
    exec(
        &app,
        "UPDATE events SET received_at = now() - interval '100 days';
         UPDATE runs SET created_at = now() - interval '100 days',
           finished_at = CASE WHEN finished_at IS NOT NULL THEN now() - interval '100 days' END;
         UPDATE step_attempts SET started_at = now() - interval '100 days';
         UPDATE outbound_messages SET created_at = now() - interval '100 days';
         INSERT INTO ai_conversations (id, assistant, customer, created_at) VALUES
           ('00000000-0000-0000-0000-00000000000a', 'a', 'old', now() - interval '100 days'),
           ('00000000-0000-0000-0000-00000000000b', 'a', 'kept', now() - interval '100 days');
         INSERT INTO ai_messages (conversation_id, role, content, created_at) VALUES
           ('00000000-0000-0000-0000-00000000000a', 'user', 'old question', now() - interval '100 days'),
           ('00000000-0000-0000-0000-00000000000b', 'user', 'old too', now() - interval '100 days'),
           ('00000000-0000-0000-0000-00000000000b', 'user', 'fresh question', now());
         INSERT INTO quarantine (id, source, body, reason, received_at) VALUES
           (gen_random_uuid(), 'whatsapp', '\\x7b7d', 'old', now() - interval '100 days'),
           (gen_random_uuid(), 'whatsapp', '\\x7b7d', 'fresh', now());
         INSERT INTO sender_notices (sender_id, kind, reason, created_at, sent_at) VALUES
           ('1', 'quality_dropped', 'old and sent', now() - interval '100 days', now() - interval '100 days'),
           ('1', 'quality_dropped', 'fresh and sent', now(), now());",
    )
    .await;
    message(&app, "+4915122220003", "fresh", "wamid.ret-fresh").await;
    eventually("the fresh run completed", || async {
        app.count("SELECT count(*) FROM runs WHERE status = 'completed'")
            .await
            == 2
    })
    .await;

    let sweep = sweep_once(&app).await;
    assert!(sweep.complete, "{sweep:?}");
    assert_eq!(sweep.deleted.get(&Table::Runs), Some(&1), "{sweep:?}");
    // The old message and the two conversation_started events; the sleeping run's event stays.
    assert_eq!(sweep.deleted.get(&Table::Events), Some(&3), "{sweep:?}");
    assert_eq!(sweep.deleted.get(&Table::OutboundMessages), Some(&1));
    assert!(sweep.deleted.get(&Table::StepAttempts) >= Some(&1));
    assert_eq!(sweep.deleted.get(&Table::AiMessages), Some(&2));
    assert_eq!(sweep.deleted.get(&Table::AiConversations), Some(&1));
    assert_eq!(sweep.deleted.get(&Table::Quarantine), Some(&1));
    assert_eq!(sweep.deleted.get(&Table::SenderNotices), Some(&1));

    let rows = |sql: &'static str| app.count(sql);
    assert_eq!(
        rows("SELECT count(*) FROM runs WHERE workflow = 'sleeper' AND finished_at IS NULL").await,
        1,
        "an unfinished run stays, however old"
    );
    assert_eq!(
        rows("SELECT count(*) FROM timers").await,
        1,
        "its timer too"
    );
    assert_eq!(
        rows("SELECT count(*) FROM events WHERE dedup_key LIKE '%ret-sleeping%'").await,
        1,
        "and the event it refers to"
    );
    assert_eq!(
        rows("SELECT count(*) FROM events WHERE dedup_key LIKE '%ret-old%'").await,
        0
    );
    assert_eq!(
        rows("SELECT count(*) FROM runs WHERE status = 'completed'").await,
        1,
        "the fresh run stays"
    );
    assert_eq!(
        rows("SELECT count(*) FROM outbound_messages").await,
        1,
        "its message too"
    );
    assert!(
        rows("SELECT count(*) FROM events WHERE received_at > now() - interval '1 day'").await >= 1
    );
    assert!(rows("SELECT count(*) FROM step_attempts").await >= 2);
    assert_eq!(
        rows("SELECT count(*) FROM ai_messages WHERE content = 'fresh question'").await,
        1
    );
    assert_eq!(
        rows("SELECT count(*) FROM ai_conversations").await,
        1,
        "a conversation with a fresh message stays"
    );
    assert_eq!(rows("SELECT count(*) FROM quarantine").await, 1);
    assert_eq!(rows("SELECT count(*) FROM sender_notices").await, 1);

    // The swept tables and the churn tables were vacuumed; the deletions are counted.
    eventually("the swept tables were vacuumed", || async {
        last_vacuum_of(&app, "runs").await && last_vacuum_of(&app, "events").await
    })
    .await;
    let mut vacuumed = false;
    for _ in 0..100 {
        vacuumed = retention::vacuum_churn(&app.pool).await.expect("vacuum");
        if vacuumed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(vacuumed, "the retention lock stayed taken");
    eventually("the outbox was vacuumed", || async {
        last_vacuum_of(&app, "outbox").await && last_vacuum_of(&app, "timers").await
    })
    .await;
    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("herald_retention_deleted_total{table=\"runs\"}")),
        "{metrics}"
    );

    let again = sweep_once(&app).await;
    assert_eq!(again.total(), 0, "a second sweep finds nothing: {again:?}");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retention_under_the_seven_days_of_dedup_is_refused_at_start() {
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("serve")
        .env("HERALD_RETENTION", "3d")
        .env("HERALD_SANDBOX", "true")
        .env("HERALD_LISTEN", "127.0.0.1:0")
        // Nothing listens here: were the value accepted, start would fail on another error.
        .env(
            "HERALD_DATABASE_URL",
            "postgres://postgres@127.0.0.1:1/none",
        )
        .output()
        .expect("run herald serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("HERALD_RETENTION (--retention): '3d' is shorter than 7d"),
        "{stderr}"
    );
    let help = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--help"])
        .output()
        .expect("herald serve --help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--retention") && help.contains("HERALD_RETENTION"),
        "{help}"
    );
}

/// Every table and text-like column of the public schema, and how many rows of it contain
/// `needle`.
async fn traces(app: &TestApp, needle: &str) -> Vec<(String, String, i64)> {
    let columns: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text, data_type::text
           FROM information_schema.columns
          WHERE table_schema = 'public' AND table_name <> '_sqlx_migrations'
            AND data_type IN ('text', 'jsonb', 'bytea', 'ARRAY', 'character varying')",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert!(columns.len() > 30, "{columns:?}");
    let mut found = Vec::new();
    for (table, column, kind) in columns {
        let test = if kind == "bytea" {
            format!("position(convert_to($1, 'UTF8') IN \"{column}\") > 0")
        } else {
            format!("strpos(\"{column}\"::text, $1) > 0")
        };
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM \"{table}\" WHERE {test}"
        )))
        .bind(needle)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        if n > 0 {
            found.push((table, column, n));
        }
    }
    found
}

const COUNTED: [&str; 9] = [
    "events",
    "runs",
    "step_attempts",
    "outbound_messages",
    "ai_conversations",
    "ai_messages",
    "quarantine",
    "dispatch_contacts",
    "dispatches",
];

async fn counts(app: &TestApp) -> Vec<(&'static str, i64)> {
    let mut out = Vec::new();
    for t in COUNTED {
        out.push((t, app.count(&format!("SELECT count(*) FROM {t}")).await));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasing_a_contact_leaves_no_trace_of_its_number_or_texts_and_keeps_the_counts() {
    let app = spawn_app(Options {
        workflows: vec![REPLY],
        ..Options::default()
    })
    .await;
    let (ana, bo) = ("+4915177770001", "+4915177770002");
    message(&app, ana, "my secret text", "wamid.erase-ana-1").await;
    message(&app, ana, "another private line", "wamid.erase-ana-2").await;
    message(&app, bo, "bo stays here", "wamid.erase-bo").await;
    eventually("three runs sent their replies", || async {
        app.count("SELECT count(*) FROM runs WHERE status = 'completed'")
            .await
            == 3
            && app.count("SELECT count(*) FROM outbound_messages").await == 3
    })
    .await;
    // What other stages would have stored about Ana: AI history, a quarantined body, a
    // dispatch to her.
    exec(
        &app,
        "INSERT INTO ai_conversations (id, assistant, customer) VALUES
           ('00000000-0000-0000-0000-0000000000a1', 'helper', '+4915177770001');
         INSERT INTO ai_messages (conversation_id, role, content) VALUES
           ('00000000-0000-0000-0000-0000000000a1', 'user', 'my secret text'),
           ('00000000-0000-0000-0000-0000000000a1', 'assistant', 'noted, Ana');
         INSERT INTO quarantine (id, source, body, reason) VALUES
           (gen_random_uuid(), 'whatsapp',
            convert_to('{\"wa_id\": \"4915177770001\", \"text\": \"my secret text\"}', 'UTF8'),
            'unknown field');
         INSERT INTO dispatches (id, workflow, sender_id, event_type, source, target, rate, status)
           VALUES ('00000000-0000-0000-0000-0000000000d1', 'reply', '1', 'manual', 'api',
                   '{\"to\": [\"+4915177770001\", \"+4915177770002\"]}', 1, 'completed');
         INSERT INTO dispatch_contacts (dispatch_id, position, raw, phone, customer_id, state)
           VALUES ('00000000-0000-0000-0000-0000000000d1', 0, '+4915177770001',
                   '+4915177770001', '4915177770001', 'started'),
                  ('00000000-0000-0000-0000-0000000000d1', 1, '+4915177770002',
                   '+4915177770002', '4915177770002', 'started');",
    )
    .await;
    for needle in ["4915177770001", "my secret text", "another private line"] {
        assert!(
            !traces(&app, needle).await.is_empty(),
            "{needle} is stored before"
        );
    }
    let before = counts(&app).await;

    let r = app
        .http
        .delete(app.url("/api/v1/contacts/+4915177770001"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["phone"], ana, "{body}");
    let erased = &body["erased"];
    assert_eq!(erased["contacts"], 1, "{body}");
    assert_eq!(erased["runs"], 2, "{body}");
    assert_eq!(erased["outbound_messages"], 2, "{body}");
    assert!(erased["events"].as_u64() >= Some(3), "{body}");
    assert!(erased["step_attempts"].as_u64() >= Some(2), "{body}");
    assert_eq!(erased["ai_conversations"], 1, "{body}");
    assert_eq!(erased["ai_messages"], 2, "{body}");
    assert_eq!(erased["quarantine"], 1, "{body}");
    assert_eq!(erased["dispatch_contacts"], 1, "{body}");
    assert_eq!(erased["dispatches"], 1, "{body}");
    assert_eq!(erased["conversations"], 1, "{body}");

    for needle in ["4915177770001", "my secret text", "another private line"] {
        let left = traces(&app, needle).await;
        assert!(left.is_empty(), "{needle} is still in {left:?}");
    }
    assert_eq!(
        counts(&app).await,
        before,
        "rows stay; only their data went"
    );
    assert!(
        !traces(&app, "4915177770002").await.is_empty()
            && !traces(&app, "bo stays here").await.is_empty(),
        "another contact's data stays"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM runs WHERE context = '{\"erased\": true}'")
            .await,
        2
    );

    // The CLI: a table of what was erased (and JSON), the same erasure.
    let out = herald(&app)
        .args(["contacts", "erase", bo])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with(&format!("erased {bo}")), "{stdout}");
    let runs_line = stdout
        .lines()
        .find(|l| l.starts_with("runs "))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert_eq!(
        runs_line.split_whitespace().collect::<Vec<_>>(),
        ["runs", "1"]
    );
    assert!(traces(&app, "4915177770002").await.is_empty());
    assert!(traces(&app, "bo stays here").await.is_empty());
    assert_eq!(counts(&app).await, before);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasing_an_unknown_contact_is_a_404_and_a_cli_error() {
    let app = spawn_app(Options::default()).await;
    let r = app
        .http
        .delete(app.url("/api/v1/contacts/+4915199990099"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "not_found", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("+4915199990099"),
        "{body}"
    );
    let out = herald(&app)
        .args(["contacts", "erase", "+4915199990099", "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("No contact +4915199990099"), "{stderr}");
    assert!(out.stdout.is_empty());
    app.cleanup().await;
}
