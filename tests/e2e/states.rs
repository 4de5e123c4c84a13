//! Every state column's CHECK constraint allows exactly the values of the enum the stores
//! write it with: a value the code writes is never refused, and no other value is stored.

use std::collections::BTreeSet;

use herald::store::{
    attempts::AttemptState,
    messages::MessageStatus,
    outbox::Destination,
    runs::{Resume, RunStatus},
    senders::SenderStatus,
};

use super::harness::{Options, spawn_app};

/// The values a CHECK constraint allows, read from its definition (`col IN ('a', 'b')`, which
/// PostgreSQL keeps as `col = ANY (ARRAY['a'::text, 'b'::text])`).
async fn allowed(pool: &sqlx::PgPool, constraint: &str) -> BTreeSet<String> {
    let def: String = sqlx::query_scalar(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = $1 AND contype = 'c'",
    )
    .bind(constraint)
    .fetch_one(pool)
    .await
    .unwrap_or_else(|e| panic!("constraint {constraint}: {e}"));
    def.split('\'')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

fn set<'a>(values: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    values.into_iter().map(str::to_string).collect()
}

#[tokio::test]
async fn each_state_column_allows_exactly_its_enums_values() {
    let app = spawn_app(Options::default()).await;
    let cases = [
        (
            "runs_status_check",
            set(RunStatus::ALL.map(RunStatus::as_str)),
        ),
        (
            "step_attempts_state_check",
            set(AttemptState::ALL.map(AttemptState::as_str)),
        ),
        (
            "outbound_messages_status_check",
            set(MessageStatus::ALL.map(MessageStatus::as_str)),
        ),
        ("timers_kind_check", set(Resume::ALL.map(Resume::as_str))),
        (
            "outbox_destination_check",
            set(Destination::ALL.map(Destination::as_str)),
        ),
        (
            "senders_status_check",
            set(SenderStatus::ALL.map(SenderStatus::as_str)),
        ),
    ];
    for (constraint, expected) in cases {
        assert_eq!(
            allowed(&app.pool, constraint).await,
            expected,
            "{constraint}"
        );
    }
    // And the constraint holds: a value no enum has is refused.
    let refused = sqlx::query(
        "INSERT INTO timers (run_id, step_index, kind, due_at) VALUES (gen_random_uuid(), 0, 'nap', now())",
    )
    .execute(&app.pool)
    .await
    .expect_err("an unknown timer kind is refused");
    assert!(
        refused.to_string().contains("timers_kind_check"),
        "{refused}"
    );
    app.cleanup().await;
}
