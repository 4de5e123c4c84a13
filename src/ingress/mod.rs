//! Ingress: HTTP in. Verifies, parses into domain events, stores them with their outbox rows in
//! one transaction, publishes with confirms, and only then answers 200. The only place webhook
//! routes are listed.

pub mod calls;
pub mod payload;
pub mod quarantine;
pub mod signature;
pub mod simulate;
pub mod store;
pub mod whatsapp;

use std::sync::Arc;

use axum::{
    Router,
    extract::DefaultBodyLimit,
    routing::{get, post},
};
use sqlx::PgPool;

use crate::{bus::Bus, config::Config};

#[derive(Clone)]
pub struct IngressState {
    pub pool: PgPool,
    /// Stores the messages of concurrent deliveries together (see `store::StoreMessages`).
    pub messages: crate::db::batch::Batched<store::StoreMessages>,
    pub bus: Bus,
    pub config: Arc<Config>,
}

pub fn router(state: IngressState) -> Router {
    let limit = state.config.max_body_bytes;
    Router::new()
        .route(
            "/webhooks/whatsapp",
            get(whatsapp::verify).post(whatsapp::receive),
        )
        .route("/webhooks/calls", post(calls::receive))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}
