//! `/api/v1/dispatches`: start a workflow for contacts, follow its progress, pause, resume,
//! cancel.

use aide::axum::{
    ApiRouter,
    routing::{get_with, post_with},
};
use axum::{Json, extract::State, http::StatusCode};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{
    ApiError, ApiResult, ApiState, BadRequest, Conflict, NotFound, Unavailable, Unprocessable,
    io::{Created, ErrorStatuses, JsonBody, PathParams, QueryParams},
};
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
    #[schemars(length(min = 1))]
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
    #[schemars(range(min = 0.01, max = 1000.0))]
    pub rate: Option<f64>,
    /// Our sender's phone_number_id (default HERALD_DEFAULT_SENDER).
    #[serde(default)]
    pub sender: Option<String>,
    /// Who started it, for the history.
    #[serde(default)]
    pub started_by: Option<String>,
}

impl<S: ErrorStatuses> From<DispatchError> for ApiError<S> {
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
    JsonBody(req): JsonBody<CreateDispatch>,
) -> ApiResult<Created<Dispatch>, (BadRequest, Unprocessable, Unavailable)> {
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
    Ok(Created(created))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// At most this many (default 20, at most 200).
    limit: Option<i64>,
}

async fn list(
    State(s): State<ApiState>,
    QueryParams(q): QueryParams<ListQuery>,
) -> ApiResult<Json<Vec<Dispatch>>, (Unavailable,)> {
    Ok(Json(
        dispatch::list(&s.pool, q.limit.unwrap_or(20).clamp(1, 200)).await?,
    ))
}

#[derive(Deserialize, JsonSchema)]
struct DispatchId {
    /// The dispatch's id.
    id: String,
}

/// A dispatch id that is not a UUID names no dispatch.
fn dispatch_id<S: ErrorStatuses>(raw: &str) -> ApiResult<Uuid, S> {
    raw.parse()
        .map_err(|_| ApiError::not_found(format!("dispatch '{raw}' not found")))
}

async fn show(
    State(s): State<ApiState>,
    PathParams(DispatchId { id }): PathParams<DispatchId>,
) -> ApiResult<Json<Dispatch>, (NotFound, Unavailable)> {
    let id = dispatch_id(&id)?;
    dispatch::show(&s.pool, id)
        .await?
        .map(Json)
        .ok_or_else(|| DispatchError::NotFound(id).into())
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ContactsQuery {
    /// Only contacts in this state.
    #[serde(default)]
    #[schemars(schema_with = "state_schema")]
    state: Option<String>,
    /// At most this many (default 100, at most 10000).
    limit: Option<i64>,
    /// Skip this many.
    offset: Option<i64>,
}

fn state_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string", "enum": CONTACT_STATES})
}

async fn contacts(
    State(s): State<ApiState>,
    PathParams(DispatchId { id }): PathParams<DispatchId>,
    QueryParams(q): QueryParams<ContactsQuery>,
) -> ApiResult<Json<Vec<DispatchContact>>, (BadRequest, NotFound, Unavailable)> {
    let id = dispatch_id(&id)?;
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

/// What pausing, resuming or cancelling a dispatch can answer.
type Acted = ApiResult<Json<Dispatch>, (NotFound, Conflict, Unavailable)>;

async fn act(s: &ApiState, id: &str, action: Action) -> Acted {
    Ok(Json(
        dispatch::act(&s.pool, dispatch_id(id)?, action).await?,
    ))
}

async fn pause(State(s): State<ApiState>, PathParams(p): PathParams<DispatchId>) -> Acted {
    act(&s, &p.id, Action::Pause).await
}

async fn resume(State(s): State<ApiState>, PathParams(p): PathParams<DispatchId>) -> Acted {
    act(&s, &p.id, Action::Resume).await
}

async fn cancel(State(s): State<ApiState>, PathParams(p): PathParams<DispatchId>) -> Acted {
    act(&s, &p.id, Action::Cancel).await
}

pub(super) fn routes() -> ApiRouter<ApiState> {
    ApiRouter::new()
        .api_route(
            "/api/v1/dispatches",
            post_with(create, |o| {
                o.summary("Start a workflow for contacts: one run each, paced by the rate")
            })
            .get_with(list, |o| {
                o.summary("The newest dispatches with their progress")
            }),
        )
        .api_route(
            "/api/v1/dispatches/{id}",
            get_with(show, |o| o.summary("One dispatch: status and progress")),
        )
        .api_route(
            "/api/v1/dispatches/{id}/contacts",
            get_with(contacts, |o| {
                o.summary("The dispatch's contacts with their state, run and error")
            }),
        )
        .api_route(
            "/api/v1/dispatches/{id}/pause",
            post_with(pause, |o| {
                o.summary("Start no new runs until resumed (runs under way go on)")
            }),
        )
        .api_route(
            "/api/v1/dispatches/{id}/resume",
            post_with(resume, |o| o.summary("Resume a paused dispatch")),
        )
        .api_route(
            "/api/v1/dispatches/{id}/cancel",
            post_with(cancel, |o| {
                o.summary("Start no new runs and cancel the runs still queued, sleeping or waiting")
            }),
        )
        .with_path_items(|item| item.tag("dispatches"))
}
