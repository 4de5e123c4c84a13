//! Stores: each table (or tight group of tables) has one module here that owns its SQL, reads
//! its rows into named structs and types its states as enums. Steps, stages and the API call
//! the stores; they write no SQL. Stores sit just above `db` and import nothing higher.

pub mod outbox;
pub mod events;
pub mod runs;
pub mod attempts;
pub mod messages;
pub mod fast_path;
pub mod timers;
pub mod dead_letters;
pub mod quarantine;
pub mod ai;
pub mod contacts;
pub mod dispatches;
pub mod erasure;
pub mod retention;
pub mod schedule_ticks;
pub mod sender_notices;
pub mod sender_pacing;
pub mod senders;
pub mod templates;
