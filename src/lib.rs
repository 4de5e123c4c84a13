//! Herald: an event-driven automation engine for WhatsApp.
//!
//! ```text
//! ingress (HTTP webhooks) -> bus (RabbitMQ events exchange) -> matcher (event -> runs)
//!   -> jobs queue -> worker (one step at a time) -> steps -> providers (Graph API, sandbox)
//! ```
//! PostgreSQL is the system of record; RabbitMQ carries events and jobs between roles.

pub mod api;
pub mod app;
pub mod bench;
pub mod bus;
pub mod cli;
pub mod config;
pub mod contacts;
pub mod db;
pub mod dispatch;
pub mod domain;
pub mod events;
pub mod ingress;
pub mod matcher;
pub mod providers;
pub mod runs;
pub mod schedules;
pub mod senders;
pub mod steps;
pub mod telemetry;
pub mod templates;
pub mod worker;
pub mod workflow;
