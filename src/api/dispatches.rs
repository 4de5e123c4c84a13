//! `/api/v1/dispatches`: start a workflow for contacts, follow its progress, pause, resume,
//! cancel.

use axum::{
    Json,
    extract::{Path, Query, State, rejection::JsonRejection, rejection::QueryRejection},
    http::StatusCode,
};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{Api, ApiError, ApiResult, ApiState, Body, Op, schema};
use crate::{
    dispatch::{
        self, Action, CONTACT_STATES, Dispatch, DispatchContact, DispatchError, NewDispatch,
        Source, Target,
    },
    expr::Condition,
};

/// Start `workflow` for the numbers in `to`, or for every contact of `group`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDispatch {
    pub workflow: String,
    /// Phone numbers (E.164). One that is not E.164 is recorded as failed ("Invalid phone
    /// number"); the others go.
    #[serde(default)]
    pub to: Option<Vec<String>>,
    /// A group of contacts (instead of `to`).
    #[serde(default)]
    pub group: Option<String>,
    /// With `group`: only contacts for whom this CEL condition over `contact` is true.
    #[serde(default)]
    pub filter: Option<String>,
    /// Reachable as `{{ trigger.<key> }}` in every run.
    #[serde(default)]
    pub vars: Map<String, Value>,
    /// Runs started per second at most (default HERALD_DISPATCH_RATE).
    #[serde(default)]
    pub rate: Option<f64>,
    /// Our sender's phone_number_id (default HERALD_DEFAULT_SENDER).
    #[serde(default)]
    pub sender: Option<String>,
    /// Who started it, for the history.
    #[serde(default)]
    pub started_by: Option<String>,
}

impl From<DispatchError> for ApiError {
    fn from(e: DispatchError) -> Self {
        let status = match &e {
            DispatchError::NotFound(_) => StatusCode::NOT_FOUND,
            DispatchError::Conflict { .. } => StatusCode::CONFLICT,
            DispatchError::Db(db) => return ApiError::internal(db),
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

async fn create(
    State(s): State<ApiState>,
    body: Result<Json<CreateDispatch>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Dispatch>)> {
    let Json(req) = body?;
    let target = match (req.to, req.group) {
        (Some(to), None) => {
            if req.filter.is_some() {
                return Err(ApiError::bad_request("`filter` goes with `group`"));
            }
            Target::To(to)
        }
        (None, Some(group)) => Target::Group {
            name: group,
            filter: match req.filter.as_deref() {
                None => None,
                Some(f) => Some(Condition::parse(f).map_err(|reason| {
                    ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "bad_filter",
                        format!("filter: {reason}"),
                    )
                })?),
            },
        },
        _ => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "bad_target",
                "give exactly one of `to` (a list of E.164 numbers) or `group`",
            ));
        }
    };
    let created = dispatch::create(
        &s.pool,
        &s.workflows,
        &s.defaults,
        NewDispatch {
            workflow: req.workflow,
            target,
            vars: req.vars,
            rate: req.rate,
            sender: req.sender,
            source: Source::Api,
            started_by: req.started_by,
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<i64>,
}

async fn list(
    State(s): State<ApiState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<Dispatch>>> {
    let Query(q) = query?;
    Ok(Json(
        dispatch::list(&s.pool, q.limit.unwrap_or(20).clamp(1, 200)).await?,
    ))
}

fn dispatch_id(raw: &str) -> ApiResult<Uuid> {
    raw.parse()
        .map_err(|_| ApiError::not_found(format!("dispatch '{raw}' not found")))
}

async fn show(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<Json<Dispatch>> {
    let id = dispatch_id(&id)?;
    dispatch::show(&s.pool, id)
        .await?
        .map(Json)
        .ok_or_else(|| DispatchError::NotFound(id).into())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ContactsQuery {
    state: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

async fn contacts(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    query: Result<Query<ContactsQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<DispatchContact>>> {
    let id = dispatch_id(&id)?;
    let Query(q) = query?;
    if let Some(state) = &q.state
        && !CONTACT_STATES.contains(&state.as_str())
    {
        return Err(ApiError::bad_request(format!(
            "unknown state '{state}' (one of {})",
            CONTACT_STATES.join(", ")
        )));
    }
    if dispatch::show(&s.pool, id).await?.is_none() {
        return Err(DispatchError::NotFound(id).into());
    }
    Ok(Json(
        dispatch::contacts(
            &s.pool,
            id,
            q.state.as_deref(),
            q.limit.unwrap_or(100).clamp(1, 10_000),
            q.offset.unwrap_or(0).max(0),
        )
        .await?,
    ))
}

async fn act(s: &ApiState, id: &str, action: Action) -> ApiResult<Json<Dispatch>> {
    Ok(Json(
        dispatch::act(&s.pool, dispatch_id(id)?, action).await?,
    ))
}

async fn pause(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<Json<Dispatch>> {
    act(&s, &id, Action::Pause).await
}

async fn resume(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<Json<Dispatch>> {
    act(&s, &id, Action::Resume).await
}

async fn cancel(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<Json<Dispatch>> {
    act(&s, &id, Action::Cancel).await
}

const ID: &[(&str, &str, &str)] = &[("id", "path", "the dispatch's id")];

pub(super) fn routes(api: Api) -> Api {
    api.op(
        Op {
            method: "post",
            path: "/api/v1/dispatches",
            summary: "Start a workflow for contacts: one run each, paced by the rate",
            tag: "dispatches",
            params: &[],
            body: Body::Json(schema::<CreateDispatch>),
            ok: (201, schema::<Dispatch>),
            errors: &[422],
        },
        create,
    )
    .op(
        Op {
            method: "get",
            path: "/api/v1/dispatches",
            summary: "The newest dispatches with their progress",
            tag: "dispatches",
            params: &[("limit", "query", "at most this many (default 20)")],
            body: Body::None,
            ok: (200, schema::<Vec<Dispatch>>),
            errors: &[400],
        },
        list,
    )
    .op(
        Op {
            method: "get",
            path: "/api/v1/dispatches/{id}",
            summary: "One dispatch: status and progress",
            tag: "dispatches",
            params: ID,
            body: Body::None,
            ok: (200, schema::<Dispatch>),
            errors: &[404],
        },
        show,
    )
    .op(
        Op {
            method: "get",
            path: "/api/v1/dispatches/{id}/contacts",
            summary: "The dispatch's contacts with their state, run and error",
            tag: "dispatches",
            params: &[
                ("id", "path", "the dispatch's id"),
                (
                    "state",
                    "query",
                    "pending, running, waiting, completed, failed, skipped_opted_out or cancelled",
                ),
                ("limit", "query", "at most this many (default 100)"),
                ("offset", "query", "skip this many"),
            ],
            body: Body::None,
            ok: (200, schema::<Vec<DispatchContact>>),
            errors: &[400, 404],
        },
        contacts,
    )
    .op(
        Op {
            method: "post",
            path: "/api/v1/dispatches/{id}/pause",
            summary: "Start no new runs until resumed (runs under way go on)",
            tag: "dispatches",
            params: ID,
            body: Body::None,
            ok: (200, schema::<Dispatch>),
            errors: &[404, 409],
        },
        pause,
    )
    .op(
        Op {
            method: "post",
            path: "/api/v1/dispatches/{id}/resume",
            summary: "Resume a paused dispatch",
            tag: "dispatches",
            params: ID,
            body: Body::None,
            ok: (200, schema::<Dispatch>),
            errors: &[404, 409],
        },
        resume,
    )
    .op(
        Op {
            method: "post",
            path: "/api/v1/dispatches/{id}/cancel",
            summary: "Start no new runs and cancel the runs still queued, sleeping or waiting",
            tag: "dispatches",
            params: ID,
            body: Body::None,
            ok: (200, schema::<Dispatch>),
            errors: &[404, 409],
        },
        cancel,
    )
}
