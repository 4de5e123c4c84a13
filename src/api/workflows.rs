//! `/api/v1/workflows`: the loaded workflows, and validation of a workflow file.

use aide::axum::{
    ApiRouter,
    routing::{get_with, post_with},
};
use axum::{Json, extract::State, http::StatusCode};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    ApiError, ApiResult, ApiState, BadRequest, NotFound,
    io::{Body, PathParams, Yaml},
};
use crate::workflow::{self, Workflow};

#[derive(Deserialize, JsonSchema)]
struct WorkflowName {
    /// The workflow's name.
    name: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct WorkflowView {
    pub name: String,
    pub description: Option<String>,
    pub enabled: bool,
    /// The file it was loaded from.
    pub file: String,
    /// event, filter, cron, timezone, missed, for_each as written.
    pub trigger: Value,
    pub steps: Vec<StepView>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct StepView {
    pub id: String,
    #[serde(rename = "type")]
    pub step_type: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ValidationView {
    pub valid: bool,
    /// The workflow's name when it is valid.
    pub name: Option<String>,
    pub errors: Vec<ValidationError>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ValidationError {
    pub line: Option<u64>,
    pub message: String,
}

fn view(w: &Workflow) -> WorkflowView {
    let t = &w.trigger;
    WorkflowView {
        name: w.name.clone(),
        description: w.description.clone(),
        enabled: w.enabled,
        file: w.file.display().to_string(),
        trigger: serde_json::json!({
            "event": t.event,
            "filter": t.filter.as_ref().map(|f| f.source()),
            "cron": t.cron.clone().map(String::from),
            "timezone": t.timezone.map(String::from),
            "missed": t.cron.as_ref().map(|_| t.missed),
            "for_each": t.for_each.as_ref().map(|f| serde_json::json!({
                "group": f.group, "filter": f.filter.as_ref().map(|c| c.source()), "rate": f.rate,
            })),
        }),
        steps: w
            .steps
            .iter()
            .map(|s| StepView {
                id: s.id.clone(),
                step_type: s.kind.type_name().to_string(),
            })
            .collect(),
    }
}

async fn list(State(s): State<ApiState>) -> Json<Vec<WorkflowView>> {
    Json(s.workflows.all().iter().map(view).collect())
}

async fn show(
    State(s): State<ApiState>,
    PathParams(WorkflowName { name }): PathParams<WorkflowName>,
) -> ApiResult<Json<WorkflowView>, (NotFound,)> {
    s.workflows
        .get(&name)
        .map(|w| Json(view(w)))
        .ok_or_else(|| ApiError::not_found(format!("workflow '{name}' not found")))
}

async fn validate(
    State(s): State<ApiState>,
    Body(body, ..): Body<Yaml>,
) -> ApiResult<Json<ValidationView>, (BadRequest,)> {
    let body = std::str::from_utf8(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!("the workflow file is not UTF-8: {e}"),
        )
    })?;
    let catalog = crate::templates::catalog::Catalog::load(&s.config.templates_file)
        .ok()
        .flatten();
    let file = std::path::Path::new("request.yaml");
    Ok(
        match workflow::parse_workflow_with(file, body, catalog.as_ref()) {
            Ok(w) => Json(ValidationView {
                valid: true,
                name: Some(w.name),
                errors: Vec::new(),
            }),
            Err(errors) => Json(ValidationView {
                valid: false,
                name: None,
                errors: errors
                    .into_iter()
                    .map(|e| ValidationError {
                        line: e.line,
                        message: e.reason,
                    })
                    .collect(),
            }),
        },
    )
}

pub(super) fn routes() -> ApiRouter<ApiState> {
    ApiRouter::new()
        .api_route(
            "/api/v1/workflows",
            get_with(list, |o| o.summary("The loaded workflows")),
        )
        .api_route(
            "/api/v1/workflows/{name}",
            get_with(show, |o| o.summary("One workflow with its trigger and steps")),
        )
        .api_route(
            "/api/v1/workflows/validate",
            post_with(validate, |o| {
                o.summary(
                    "Check a workflow file (YAML in the body) the way `herald workflows validate` does",
                )
            }),
        )
        .with_path_items(|item| item.tag("workflows"))
}
