//! Stores: each table (or tight group of tables) has one module here that owns its SQL, reads
//! its rows into named structs and types its states as enums. Steps, stages and the API call
//! the stores; they write no SQL. Stores sit just above `db` and import nothing higher.

pub mod contacts;
pub mod dispatches;
pub mod erasure;
pub mod retention;
pub mod schedule_ticks;
pub mod sender_notices;
pub mod sender_pacing;
pub mod senders;
pub mod templates;
