//! The sink: a stand-in for the Graph API that records every send.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use anyhow::Context;
use axum::{
    Router, body::Bytes, extract::State, response::IntoResponse, routing::post, serve::ListenerExt,
};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::MARKER;

pub(crate) struct SinkRecord {
    pub(crate) seq: Option<u64>,
    pub(crate) to: String,
    pub(crate) at: Instant,
}

pub(crate) struct Sink {
    records: Mutex<Vec<SinkRecord>>,
    count: AtomicU64,
    /// Credits of the throughput phase: one is taken per webhook and given back per send.
    pub(crate) credits: Semaphore,
}

impl Sink {
    pub(crate) fn new(max_backlog: usize) -> Self {
        Sink {
            records: Mutex::new(Vec::with_capacity(1 << 17)),
            count: AtomicU64::new(0),
            credits: Semaphore::new(max_backlog),
        }
    }

    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }

    pub(crate) fn snapshot(&self) -> Vec<SinkRecord> {
        let records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        records
            .iter()
            .map(|r| SinkRecord {
                seq: r.seq,
                to: r.to.clone(),
                at: r.at,
            })
            .collect()
    }
}

pub(crate) async fn start_sink(
    sink: Arc<Sink>,
    stop: CancellationToken,
) -> anyhow::Result<std::net::SocketAddr> {
    let router = Router::new()
        .route("/{phone_number_id}/messages", post(sink_send))
        .with_state(sink);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("bind the sink")?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
    });
    Ok(addr)
}

/// What the sink reads of a send: the recipient and the template's first parameter. Borrowed
/// from the body: the sink shares the machine with Herald and should cost it little.
#[derive(serde::Deserialize)]
struct SentMessage<'a> {
    #[serde(borrow, default)]
    to: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    template: Option<SentTemplate<'a>>,
}

#[derive(serde::Deserialize)]
struct SentTemplate<'a> {
    #[serde(borrow, default)]
    components: Vec<SentComponent<'a>>,
}

#[derive(serde::Deserialize)]
struct SentComponent<'a> {
    #[serde(borrow, default)]
    parameters: Vec<SentParameter<'a>>,
}

#[derive(serde::Deserialize)]
struct SentParameter<'a> {
    #[serde(borrow, default)]
    text: Option<std::borrow::Cow<'a, str>>,
}

/// `POST /{phone_number_id}/messages`: records the send and answers like the Cloud API.
async fn sink_send(State(sink): State<Arc<Sink>>, body: Bytes) -> impl IntoResponse {
    let at = Instant::now();
    let request: Option<SentMessage<'_>> = serde_json::from_slice(&body).ok();
    let to = request
        .as_ref()
        .and_then(|r| r.to.as_deref())
        .unwrap_or_default()
        .to_string();
    let seq = request
        .as_ref()
        .and_then(|r| r.template.as_ref())
        .and_then(|t| t.components.first())
        .and_then(|c| c.parameters.first())
        .and_then(|p| p.text.as_deref())
        .and_then(|t| t.strip_prefix(MARKER))
        .and_then(|n| n.parse::<u64>().ok());
    let quoted = serde_json::to_string(&to).unwrap_or_else(|_| "\"\"".into());
    let answer = format!(
        r#"{{"messaging_product":"whatsapp","contacts":[{{"input":{quoted},"wa_id":{quoted}}}],"messages":[{{"id":"wamid.{}"}}]}}"#,
        uuid::Uuid::new_v4().simple()
    );
    sink.records
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(SinkRecord { seq, to, at });
    sink.count.fetch_add(1, Ordering::AcqRel);
    sink.credits.add_permits(1);
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        answer,
    )
}
