//! Herald: an event-driven automation engine for WhatsApp.
//!
//! ```text
//! ingress (HTTP webhooks) -> bus (RabbitMQ events exchange) -> matcher (event -> runs)
//!   -> jobs queue -> worker (one step at a time) -> steps -> providers (Graph API, sandbox)
//! ```
//! PostgreSQL is the system of record; RabbitMQ carries events and jobs between roles.
//!
//! Modules are declared bottom-up: each imports only modules above it in this list
//! (`tests/module_graph.rs` keeps it so).

// Values and rules, no I/O.
pub mod domain;
pub mod expr;
pub mod failure;
pub mod config;
pub mod telemetry;
// Where roles meet: PostgreSQL and RabbitMQ.
pub mod db;
pub mod store;
pub mod bus;
// Outside APIs and the state the steps read.
pub mod providers;
pub mod templates;
pub mod contacts;
pub mod senders;
// Workflows and their runs.
pub mod steps;
pub mod workflow;
pub mod runs;
// The stages, in the order data flows.
pub mod ingress;
pub mod matcher;
pub mod worker;
pub mod dispatch;
pub mod schedules;
// The faces: the HTTP API, the process, the command line.
pub mod api;
pub mod app;
pub mod cli;

/// Herald's version, as the `herald` package states it (reported by the benchmark too).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
