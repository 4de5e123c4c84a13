//! Group commit (`herald::db::batch`): callers that arrive while a batch runs share the next
//! statement, and a row the server refuses fails only its own caller.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use herald::{
    app::Role,
    db::batch::{Batched, Statement, one_row_each},
};
use sqlx::PgConnection;

use super::harness::{Options, spawn_app};

/// Inserts names into `batch_probe` (unique): the first batch sleeps, so that the callers that
/// arrive meanwhile gather into one batch of several rows. `calls` logs each statement's size.
#[derive(Clone, Default)]
struct InsertNames {
    calls: Arc<Mutex<Vec<usize>>>,
}

impl Statement for InsertNames {
    type Input = String;
    type Output = (String, i64);

    async fn run(
        &self,
        conn: &mut PgConnection,
        names: &[String],
    ) -> sqlx::Result<Vec<(String, i64)>> {
        self.calls.lock().unwrap().push(names.len());
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "WITH ins AS (
               INSERT INTO batch_probe (name) SELECT unnest($1::text[]) RETURNING name
             )
             SELECT name, (SELECT count(*) FROM unnest($1::text[]))
             FROM ins, LATERAL (SELECT pg_sleep(CASE WHEN name = 'slow' THEN 0.5 ELSE 0 END)) s",
        )
        .bind(names)
        .fetch_all(&mut *conn)
        .await?;
        let mut by_input = Vec::with_capacity(names.len());
        for name in names {
            match rows.iter().find(|(n, _)| n == name) {
                Some(row) => by_input.push(row.clone()),
                None => return Err(sqlx::Error::RowNotFound),
            }
        }
        one_row_each(by_input, names.len(), "batch_probe")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_the_server_refuses_fails_only_its_own_caller_in_a_shared_batch() {
    let app = spawn_app(Options {
        roles: vec![Role::Ingress],
        ..Default::default()
    })
    .await;
    sqlx::query("CREATE TABLE batch_probe (name text PRIMARY KEY, CHECK (name <> 'refused'))")
        .execute(&app.pool)
        .await
        .unwrap();
    let statement = InsertNames::default();
    let batched = Batched::new("test.batch_probe", app.pool.clone(), statement.clone());
    // The first caller's batch sleeps; the next five arrive meanwhile and share one batch, in
    // which 'refused' breaks the CHECK and 'twice' the primary key (it is named two times).
    let first = tokio::spawn({
        let b = batched.clone();
        async move { b.run("slow".to_string()).await }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let names = ["a", "refused", "b", "twice", "twice"];
    let results = futures::future::join_all(names.iter().map(|n| {
        let b = batched.clone();
        let n = n.to_string();
        async move { b.run(n).await }
    }))
    .await;
    let (slow, alone) = first.await.unwrap().expect("the first batch");
    assert_eq!(
        (slow.as_str(), alone),
        ("slow", 1),
        "the first caller ran alone"
    );

    // The good rows were stored and answered...
    for i in [0, 2] {
        let (name, _) = results[i].as_ref().expect("a good row of the shared batch");
        assert_eq!(name, names[i]);
    }
    // ...the refused one failed with the server's own error, for its caller only...
    let refused = results[1].as_ref().expect_err("the CHECK refuses it");
    assert!(
        matches!(&**refused, sqlx::Error::Database(e) if e.is_check_violation()),
        "{refused:?}"
    );
    // ...and of the two callers with one name, one stored it and the other was refused.
    let twice: Vec<bool> = results[3..].iter().map(Result::is_ok).collect();
    assert_eq!(twice.iter().filter(|ok| **ok).count(), 1, "{results:?}");
    let dup = results[3..].iter().find_map(|r| r.as_ref().err()).unwrap();
    assert!(
        matches!(&**dup, sqlx::Error::Database(e) if e.is_unique_violation()),
        "{dup:?}"
    );
    let stored: Vec<String> = sqlx::query_scalar("SELECT name FROM batch_probe ORDER BY name")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, ["a", "b", "slow", "twice"]);
    // The five shared one statement, which the server refused as a whole; then each row ran on
    // its own.
    assert_eq!(*statement.calls.lock().unwrap(), [1, 5, 1, 1, 1, 1, 1]);
    app.cleanup().await;
}
