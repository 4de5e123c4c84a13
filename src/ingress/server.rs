//! The HTTP server of every role, with the limits on its doors (the webhooks and the API):
//! a header-read timeout (slow clients are cut off), a request timeout, a cap on the requests
//! handled at once (one more is refused at once with 503), and body limits per route
//! ([`too_large`] refuses by `Content-Length` before a byte of the body is read, [`limited`]
//! while it is read). Its own accept loop: `axum::serve` sets no header-read timeout.

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::Request,
    http::{HeaderMap, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    serve::Listener,
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::config::HttpLimits;

/// Whether a path is one of the doors (webhooks, API) that the concurrency limit counts; the
/// probes and `/metrics` are not, so that a saturated process still reports its health.
fn is_door(path: &str) -> bool {
    path.starts_with("/webhooks/") || path.starts_with("/api/")
}

/// `router` with the request timeout and the concurrency limit around it.
pub fn with_limits(router: Router, limits: HttpLimits) -> Router {
    let permits = Arc::new(Semaphore::new(limits.concurrency));
    router
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            let permits = permits.clone();
            async move {
                if !is_door(request.uri().path()) {
                    return next.run(request).await;
                }
                match permits.try_acquire_owned() {
                    Ok(_held) => next.run(request).await,
                    Err(_) => busy(),
                }
            }
        }))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            limits.request_timeout,
        ))
}

fn busy() -> Response {
    metrics::counter!("herald_http_refused_total", "reason" => "busy").increment(1);
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "1")],
        Json(json!({
            "error": "busy",
            "message": "too many requests at once (HERALD_HTTP_CONCURRENCY); try again shortly",
        })),
    )
        .into_response()
}

/// 413 when the request announces (`Content-Length`) a body longer than `limit`: refused
/// before any of it is read.
pub fn too_large(headers: &HeaderMap, limit: usize) -> Option<Response> {
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())?;
    (announced > limit as u64).then(|| payload_too_large(limit))
}

pub fn payload_too_large(limit: usize) -> Response {
    metrics::counter!("herald_http_refused_total", "reason" => "too_large").increment(1);
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        Json(json!({
            "error": "too_large",
            "message": format!("the body is larger than this route reads ({limit} bytes)"),
        })),
    )
        .into_response()
}

/// The request with its body cut at `limit` bytes while it is read: reading more fails, and
/// axum's body extractors answer that with 413 (announced lengths are refused earlier, by
/// [`too_large`]).
pub fn limited(request: Request, limit: usize) -> Request {
    request.map(|body| axum::body::Body::new(http_body_util::Limited::new(body, limit)))
}

/// Serves `router` (with [`with_limits`]) on `listener` until `shutdown`, then lets the open
/// connections finish the requests they carry.
pub async fn serve<L>(
    mut listener: L,
    router: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
) where
    L: Listener,
{
    let router = with_limits(router, limits);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let connections = TaskTracker::new();
    loop {
        let (io, _) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let service = TowerToHyperService::new(router.clone());
        let builder = builder.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
            let mut connection = std::pin::pin!(connection);
            let served = tokio::select! {
                served = connection.as_mut() => served,
                _ = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = served {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        });
    }
    connections.close();
    connections.wait().await;
}
