//! `/api/v1/runs`: runs with filters, and one run with its steps and messages.

use aide::axum::{ApiRouter, routing::get_with};
use axum::{Json, extract::State};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::Deserialize;
use uuid::Uuid;

use super::{
    ApiError, ApiResult, ApiState, BadRequest, NotFound, Unavailable,
    io::{PathParams, QueryParams},
};
use crate::runs::{self, RunDetail, RunFilter, RunStatus, RunSummary};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Only this workflow's runs.
    workflow: Option<String>,
    /// Only runs in this status.
    #[serde(default)]
    #[schemars(schema_with = "status_schema")]
    status: Option<String>,
    /// The customer's phone (E.164) or id.
    customer: Option<String>,
    /// Only the runs of this dispatch.
    dispatch_id: Option<Uuid>,
    /// At most this many (default 50, at most 1000).
    limit: Option<i64>,
}

#[derive(Deserialize, JsonSchema)]
struct RunId {
    /// The run's id or a unique prefix of it.
    id: String,
}

/// The statuses a run can have, which `status` is checked against.
fn status_schema(_: &mut SchemaGenerator) -> Schema {
    let all: Vec<&str> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
    json_schema!({"type": "string", "enum": all})
}

async fn list(
    State(s): State<ApiState>,
    QueryParams(q): QueryParams<ListQuery>,
) -> ApiResult<Json<Vec<RunSummary>>, (BadRequest, Unavailable)> {
    let status = q
        .status
        .as_deref()
        .map(str::parse::<RunStatus>)
        .transpose()
        .map_err(ApiError::bad_request)?;
    let filter = RunFilter {
        workflow: q.workflow,
        status,
        customer: q.customer,
        dispatch_id: q.dispatch_id,
        limit: q.limit.unwrap_or(50).clamp(1, 1000),
    };
    runs::list(&s.pool, &filter)
        .await
        .map(Json)
        .map_err(ApiError::internal)
}

async fn show(
    State(s): State<ApiState>,
    PathParams(RunId { id }): PathParams<RunId>,
) -> ApiResult<Json<RunDetail>, (BadRequest, NotFound, Unavailable)> {
    match runs::show(&s.pool, &id).await {
        Ok(Some(run)) => Ok(Json(run)),
        Ok(None) => Err(ApiError::not_found(format!("run '{id}' not found"))),
        Err(e) if e.to_string().contains("more than one run") => {
            Err(ApiError::bad_request(e.to_string()))
        }
        Err(e) => Err(ApiError::internal(format!("{e:#}"))),
    }
}

pub(super) fn routes() -> ApiRouter<ApiState> {
    ApiRouter::new()
        .api_route(
            "/api/v1/runs",
            get_with(list, |o| o.summary("The newest runs, filtered")),
        )
        .api_route(
            "/api/v1/runs/{id}",
            get_with(show, |o| {
                o.summary("One run with its trigger, every step attempt and every message it sent")
            }),
        )
        .with_path_items(|item| item.tag("runs"))
}
