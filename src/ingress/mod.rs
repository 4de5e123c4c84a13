//! Ingress: HTTP in. Verifies, parses into domain events, stores them with their outbox rows in
//! one transaction, publishes with confirms, and only then answers 200. The only place webhook
//! routes are listed.

pub mod calls;
pub mod payload;
pub mod quarantine;
pub mod server;
pub mod signature;
pub mod simulate;
pub mod store;
pub mod whatsapp;

use std::sync::Arc;

use axum::{
    Router,
    extract::DefaultBodyLimit,
    handler::Handler,
    middleware,
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

/// The webhook routes. Each POST is refused before its body is read when it lacks the headers
/// that authenticate it (401) or announces a body over `HERALD_MAX_BODY_BYTES` (413); a body
/// that turns out longer while it is read gets 413 too.
pub fn router(state: IngressState) -> Router {
    let limit = state.config.max_body_bytes;
    let signed = middleware::from_fn_with_state(state.clone(), whatsapp::signed_only);
    let authenticated = middleware::from_fn_with_state(state.clone(), calls::authenticated_only);
    Router::new()
        .route(
            "/webhooks/whatsapp",
            get(whatsapp::verify).post(whatsapp::receive.layer(signed)),
        )
        .route("/webhooks/calls", post(calls::receive.layer(authenticated)))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}
