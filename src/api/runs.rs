//! `/api/v1/runs`: runs with filters, and one run with its steps and messages.

use axum::{
    Json,
    extract::{Path, Query, State, rejection::QueryRejection},
};
use serde::Deserialize;
use uuid::Uuid;

use super::{Api, ApiError, ApiResult, ApiState, Body, Op, schema};
use crate::runs::{self, RunDetail, RunFilter, RunSummary};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    workflow: Option<String>,
    status: Option<String>,
    customer: Option<String>,
    dispatch_id: Option<Uuid>,
    limit: Option<i64>,
}

const STATUSES: [&str; 8] = [
    "queued",
    "running",
    "sleeping",
    "waiting",
    "retrying",
    "completed",
    "failed",
    "cancelled",
];

async fn list(
    State(s): State<ApiState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<RunSummary>>> {
    let Query(q) = query?;
    if let Some(status) = &q.status
        && !STATUSES.contains(&status.as_str())
    {
        return Err(ApiError::bad_request(format!(
            "unknown status '{status}' (one of {})",
            STATUSES.join(", ")
        )));
    }
    let filter = RunFilter {
        workflow: q.workflow,
        status: q.status,
        customer: q.customer,
        dispatch_id: q.dispatch_id,
        limit: q.limit.unwrap_or(50).clamp(1, 1000),
    };
    runs::list(&s.pool, &filter)
        .await
        .map(Json)
        .map_err(ApiError::internal)
}

async fn show(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<Json<RunDetail>> {
    match runs::show(&s.pool, &id).await {
        Ok(Some(run)) => Ok(Json(run)),
        Ok(None) => Err(ApiError::not_found(format!("run '{id}' not found"))),
        Err(e) if e.to_string().contains("more than one run") => {
            Err(ApiError::bad_request(e.to_string()))
        }
        Err(e) => Err(ApiError::internal(format!("{e:#}"))),
    }
}

pub(super) fn routes(api: Api) -> Api {
    api.op(
        Op {
            method: "get",
            path: "/api/v1/runs",
            summary: "The newest runs, filtered",
            tag: "runs",
            params: &[
                ("workflow", "query", "only this workflow's runs"),
                (
                    "status",
                    "query",
                    "queued, running, sleeping, waiting, retrying, completed, failed or cancelled",
                ),
                ("customer", "query", "the customer's phone (E.164) or id"),
                ("dispatch_id", "query", "only the runs of this dispatch"),
                (
                    "limit",
                    "query",
                    "at most this many (default 50, at most 1000)",
                ),
            ],
            body: Body::None,
            ok: (200, schema::<Vec<RunSummary>>),
            errors: &[400],
        },
        list,
    )
    .op(
        Op {
            method: "get",
            path: "/api/v1/runs/{id}",
            summary: "One run with its trigger, every step attempt and every message it sent",
            tag: "runs",
            params: &[("id", "path", "the run's id or a unique prefix of it")],
            body: Body::None,
            ok: (200, schema::<RunDetail>),
            errors: &[400, 404],
        },
        show,
    )
}
