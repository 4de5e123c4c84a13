//! `GET /webhooks/whatsapp` (Meta's verification handshake) and `POST /webhooks/whatsapp`.

use std::collections::HashMap;

use axum::{
    Json,
    body::Bytes,
    extract::{Query, Request, State},
    http::{HeaderMap, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::{IngressState, payload, quarantine, signature, store};
use crate::bus::outbox;

pub async fn verify(
    State(state): State<IngressState>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let mode = query.get("hub.mode").map(String::as_str);
    let token = query.get("hub.verify_token").map(String::as_bytes);
    let challenge = query.get("hub.challenge");
    let expected = state.config.verify_token.as_ref();
    match (mode, token, challenge, expected) {
        (Some("subscribe"), Some(token), Some(challenge), Some(expected))
            if signature::equal(token, expected.expose().as_bytes()) =>
        {
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/plain")],
                challenge.clone(),
            )
                .into_response()
        }
        _ => (StatusCode::FORBIDDEN, "verification failed").into_response(),
    }
}

fn answer(status: StatusCode, outcome: &'static str, body: serde_json::Value) -> Response {
    metrics::counter!("herald_webhooks_total", "source" => "whatsapp", "outcome" => outcome)
        .increment(1);
    (status, Json(body)).into_response()
}

fn unavailable(what: &str, error: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %error, "{what}; answering 503 so that Meta delivers again");
    answer(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        json!({"error": "unavailable", "message": format!("{what}; deliver again later")}),
    )
}

/// PostgreSQL refused the data itself: the same body would fail the same way for ever, so it
/// is quarantined with the reason and answered 200 (Meta stops delivering it).
async fn refused_data(state: &IngressState, body: &[u8], error: &sqlx::Error) -> Response {
    match quarantine::keep_refused(&state.pool, "whatsapp", body, error).await {
        Ok((id, reason)) => answer(
            StatusCode::OK,
            "quarantined",
            json!({"status": "quarantined", "quarantine_id": id, "reason": reason}),
        ),
        Err(db) => unavailable("could not store the webhook", &db),
    }
}

fn bad_signature() -> Response {
    answer(
        StatusCode::UNAUTHORIZED,
        "bad_signature",
        json!({"error": "bad_signature", "message": "X-Hub-Signature-256 is missing or does not match the body"}),
    )
}

/// In front of [`receive`]: a POST without a well-formed `X-Hub-Signature-256` (or to a
/// process with no app secret) can never be verified, so it is refused with 401 before its
/// body is read; one announcing a body over the limit gets 413, unread too.
pub async fn signed_only(
    State(state): State<IngressState>,
    request: Request,
    next: Next,
) -> Response {
    let well_formed = request
        .headers()
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("sha256="))
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
    if !well_formed || state.config.app_secret.is_none() {
        tracing::warn!(
            present = request.headers().contains_key("x-hub-signature-256"),
            "webhook signature missing or malformed; refused before reading the body"
        );
        return bad_signature();
    }
    if let Some(refused) = super::server::too_large(request.headers(), state.config.max_body_bytes)
    {
        return refused;
    }
    next.run(request).await
}

pub async fn receive(
    State(state): State<IngressState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let sig = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok());
    let secret = state
        .config
        .app_secret
        .as_ref()
        .map(|s| s.expose().as_bytes());
    if !secret.is_some_and(|secret| signature::verify(secret, sig, &body)) {
        tracing::warn!(
            present = sig.is_some(),
            "webhook signature missing or wrong"
        );
        return bad_signature();
    }
    let parsed = match payload::parse(&body) {
        Ok(p) => p,
        Err(e) => {
            return match quarantine::keep(&state.pool, "whatsapp", &body, &e.to_string()).await {
                Ok(id) => answer(
                    StatusCode::OK,
                    "quarantined",
                    json!({"status": "quarantined", "quarantine_id": id, "reason": e.to_string()}),
                ),
                Err(db) => unavailable("could not store the webhook", &db),
            };
        }
    };
    let mut quarantine_id = None;
    if !parsed.problems.is_empty() {
        match quarantine::keep(&state.pool, "whatsapp", &body, &parsed.problems.join("; ")).await {
            Ok(id) => quarantine_id = Some(id),
            Err(db) => return unavailable("could not store the webhook", &db),
        }
    }
    let stored = match store::store_items(
        &state.pool,
        Some(&state.messages),
        &parsed.items,
        &state.config.opt_out_keywords,
    )
    .await
    {
        Ok(s) => s,
        Err(db) if crate::db::is_data_error(&db) => return refused_data(&state, &body, &db).await,
        Err(db) => return unavailable("could not store the events", &db),
    };
    if let Err(e) = outbox::flush(&state.bus, &state.pool, &stored.outbox).await {
        return unavailable("could not publish the events", &e);
    }
    tracing::info!(
        new_events = stored.new_events,
        duplicates = stored.duplicates,
        "webhook accepted"
    );
    answer(
        StatusCode::OK,
        if quarantine_id.is_some() {
            "partly_quarantined"
        } else {
            "accepted"
        },
        json!({
            "status": "accepted",
            "new_events": stored.new_events,
            "duplicates": stored.duplicates,
            "quarantine_id": quarantine_id,
        }),
    )
}
