//! Herald: an event-driven automation engine for WhatsApp.
//!
//! ```text
//! ingress (HTTP webhooks) -> bus (RabbitMQ events exchange) -> matcher (event -> runs)
//!   -> jobs queue -> worker (one step at a time) -> steps -> providers (Graph API, sandbox)
//! ```
//! PostgreSQL is the system of record; RabbitMQ carries events and jobs between roles.

pub mod config;
pub mod domain;
pub mod db;
pub mod ingress;
pub mod bus;
pub mod matcher;
pub mod workflow;
pub mod runs;
pub mod worker;
pub mod steps;
pub mod providers;
pub mod app;
pub mod cli;
pub mod telemetry;
