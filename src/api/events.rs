//! `/api/v1/events`: the events Herald accepted, newest first.

use axum::{
    Json,
    extract::{Query, State, rejection::QueryRejection},
};
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{Api, ApiError, ApiResult, ApiState, Body, Op, schema};
use crate::domain::EventType;

#[derive(Debug, Serialize, JsonSchema, sqlx::FromRow)]
pub struct EventView {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub event_type: String,
    pub sender_id: String,
    /// The customer's id, when the event is about one.
    pub subject: Option<String>,
    pub received_at: DateTime<Utc>,
    /// The event as published (CloudEvents 1.0 JSON).
    pub cloudevent: Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[serde(rename = "type")]
    event_type: Option<String>,
    customer: Option<String>,
    limit: Option<i64>,
}

async fn list(
    State(s): State<ApiState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<EventView>>> {
    let Query(q) = query?;
    let event_type = match q.event_type.as_deref() {
        None => None,
        Some(t) => Some(
            t.parse::<EventType>()
                .map_err(|e| ApiError::bad_request(e.to_string()))?,
        ),
    };
    sqlx::query_as(
        "SELECT id, type AS event_type, sender_id, subject, received_at, cloudevent FROM events
         WHERE ($1::text IS NULL OR type = $1) AND ($2::text IS NULL OR subject = ltrim($2, '+'))
         ORDER BY received_at DESC, id DESC LIMIT $3",
    )
    .bind(event_type.map(|t| t.as_str()))
    .bind(q.customer)
    .bind(q.limit.unwrap_or(50).clamp(1, 1000))
    .fetch_all(&s.pool)
    .await
    .map(Json)
    .map_err(ApiError::internal)
}

pub(super) fn routes(api: Api) -> Api {
    api.op(
        Op {
            method: "get",
            path: "/api/v1/events",
            summary: "Recent events, newest first",
            tag: "events",
            params: &[
                (
                    "type",
                    "query",
                    "only this event type (e.g. whatsapp.message_received)",
                ),
                (
                    "customer",
                    "query",
                    "only events about this customer (phone or id)",
                ),
                (
                    "limit",
                    "query",
                    "at most this many (default 50, at most 1000)",
                ),
            ],
            body: Body::None,
            ok: (200, schema::<Vec<EventView>>),
            errors: &[400],
        },
        list,
    )
}
