//! `/api/v1/events`: the events Herald accepted, newest first.

use aide::axum::{ApiRouter, routing::get_with};
use axum::{Json, extract::State};
use schemars::JsonSchema;
use serde::Deserialize;

use super::{ApiError, ApiResult, ApiState, BadRequest, Unavailable, io::QueryParams};
use crate::domain::EventType;

pub use crate::store::events::EventView;

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
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    crate::store::events::list(&s.pool, event_type, q.customer.as_deref(), limit)
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
