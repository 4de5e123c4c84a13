//! `/api/v1/events`: the events Herald accepted, newest first.

use aide::axum::{ApiRouter, routing::get_with};
use axum::{Json, extract::State};
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{ApiError, ApiResult, ApiState, BadRequest, Unavailable, io::QueryParams};
use crate::domain::EventType;

#[derive(Debug, Serialize, JsonSchema, sqlx::FromRow)]
pub struct EventView {
    pub id: Uuid,
    #[serde(rename = "type")]
    #[schemars(with = "EventType")]
    pub event_type: String,
    pub sender_id: String,
    /// The customer's id, when the event is about one.
    pub subject: Option<String>,
    pub received_at: DateTime<Utc>,
    /// The event as published (CloudEvents 1.0 JSON).
    pub cloudevent: Value,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Only this event type.
    #[serde(rename = "type")]
    #[schemars(with = "Option<EventType>")]
    event_type: Option<String>,
    /// Only events about this customer (phone or id).
    customer: Option<String>,
    /// At most this many (default 50, at most 1000).
    limit: Option<i64>,
}

async fn list(
    State(s): State<ApiState>,
    QueryParams(q): QueryParams<ListQuery>,
) -> ApiResult<Json<Vec<EventView>>, (BadRequest, Unavailable)> {
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

pub(super) fn routes() -> ApiRouter<ApiState> {
    ApiRouter::new()
        .api_route(
            "/api/v1/events",
            get_with(list, |o| o.summary("Recent events, newest first")),
        )
        .with_path_items(|item| item.tag("events"))
}
