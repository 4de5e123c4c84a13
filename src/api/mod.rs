//! The HTTP API `/api/v1`: JSON over HTTP with bearer-token auth, for integrators and operators.
//! Every route is added together with its OpenAPI description (`Api::op`), so the document at
//! `/api/v1/openapi.json` lists exactly the routes there are; a test checks real answers
//! against the documented schemas.

mod contacts;
mod dispatches;
mod events;
mod runs;
mod workflows;

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Request, State},
    handler::Handler,
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{MethodRouter, delete, get, patch, post},
};
use schemars::{JsonSchema, Schema, SchemaGenerator, generate::SchemaSettings};
use serde::Serialize;
use serde_json::{Map, Value, json};
use sqlx::PgPool;

use crate::{config::Config, dispatch::Defaults, workflow::SharedWorkflows};

#[derive(Clone)]
pub struct ApiState {
    pub pool: PgPool,
    pub workflows: SharedWorkflows,
    pub config: Arc<Config>,
    pub defaults: Defaults,
}

/// An error answer: `{"error": code, "message": ...}` with a stable code.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ApiError {
    #[serde(skip)]
    #[schemars(skip)]
    status: StatusCode,
    /// Stable, for programs: bad_request, invalid_phone, not_found, conflict, unauthorized, ...
    pub error: String,
    /// For people.
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            error: code.to_string(),
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(error = %error, "API request failed");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the database is unavailable; try again",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self)).into_response()
    }
}

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(r: axum::extract::rejection::JsonRejection) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            r.body_text(),
        )
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(r: axum::extract::rejection::QueryRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_query", r.body_text())
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// One documented operation.
pub struct Op {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub tag: &'static str,
    /// Query or path parameters: (name, in, description).
    pub params: &'static [(&'static str, &'static str, &'static str)],
    /// The JSON request body's schema, or a media type and description for other bodies.
    pub body: Body,
    /// The success status and the schema of its JSON body.
    pub ok: (u16, fn(&mut SchemaGenerator) -> Schema),
    /// Error statuses this operation answers besides 401.
    pub errors: &'static [u16],
}

pub enum Body {
    None,
    Json(fn(&mut SchemaGenerator) -> Schema),
    Text(&'static str, &'static str),
}

/// The schema of `T` (a reference into `components/schemas`).
pub fn schema<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<T>()
}

/// Routes and their documentation, built together.
pub struct Api {
    router: Router<ApiState>,
    ops: Vec<Op>,
}

impl Api {
    fn new() -> Self {
        Api {
            router: Router::new(),
            ops: Vec::new(),
        }
    }

    /// Adds a route and its documentation.
    fn op<H, T>(mut self, op: Op, handler: H) -> Self
    where
        H: Handler<T, ApiState>,
        T: 'static,
    {
        let method: MethodRouter<ApiState> = match op.method {
            "get" => get(handler),
            "post" => post(handler),
            "patch" => patch(handler),
            "delete" => delete(handler),
            other => panic!("unsupported method {other}"),
        };
        self.router = self.router.route(op.path, method);
        self.ops.push(op);
        self
    }

    /// The OpenAPI 3.1 document of these routes.
    pub fn openapi(&self) -> Value {
        let mut generator = SchemaSettings::draft2020_12()
            .with(|s| {
                s.definitions_path = "/components/schemas".into();
                s.meta_schema = None;
                s.contract = schemars::generate::Contract::Serialize;
            })
            .into_generator();
        let error = schema::<ApiError>(&mut generator);
        let mut paths = Map::new();
        for op in &self.ops {
            let mut responses = Map::new();
            let ok = (op.ok.1)(&mut generator);
            responses.insert(
                op.ok.0.to_string(),
                json!({"description": "success", "content": {"application/json": {"schema": ok}}}),
            );
            for status in op.errors.iter().chain(&[401]) {
                responses.insert(
                    status.to_string(),
                    json!({"description": reason(*status), "content": {"application/json": {"schema": error}}}),
                );
            }
            let mut operation = json!({
                "summary": op.summary,
                "tags": [op.tag],
                "operationId": format!("{}_{}", op.method, op.path.trim_start_matches("/api/v1/").replace(['/', '{', '}'], "_").trim_end_matches('_')),
                "responses": responses,
                "parameters": op.params.iter().map(|(name, place, description)| json!({
                    "name": name, "in": place, "description": description,
                    "required": *place == "path", "schema": {"type": "string"},
                })).collect::<Vec<_>>(),
            });
            match &op.body {
                Body::None => {}
                Body::Json(s) => {
                    operation["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": s(&mut generator)}}});
                }
                Body::Text(media, description) => {
                    operation["requestBody"] = json!({"required": true, "description": description, "content": {*media: {"schema": {"type": "string"}}}});
                }
            }
            let entry = paths
                .entry(op.path.to_string())
                .or_insert_with(|| json!({}));
            entry[op.method] = operation;
        }
        json!({
            "openapi": "3.1.0",
            "info": {
                "title": "Herald API",
                "version": env!("CARGO_PKG_VERSION"),
                "description": "Workflows, runs, dispatches, contacts and events. Every request needs `Authorization: Bearer <HERALD_API_TOKEN>`. Errors are JSON: {\"error\": code, \"message\": text}.",
            },
            "servers": [{"url": "/"}],
            "security": [{"bearer": []}],
            "paths": paths,
            "components": {
                "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
                "schemas": generator.take_definitions(true),
            },
        })
    }
}

fn reason(status: u16) -> &'static str {
    StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("error")
}

/// Every operation of the API.
pub fn api() -> Api {
    let api = Api::new();
    let api = workflows::routes(api);
    let api = runs::routes(api);
    let api = dispatches::routes(api);
    let api = contacts::routes(api);
    events::routes(api)
}

/// The `/api/v1` router: the operations behind bearer auth, and the OpenAPI document.
pub fn router(state: ApiState) -> Router {
    let api = api();
    let document = Arc::new(api.openapi());
    let protected = api
        .router
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state);
    Router::new()
        .route(
            "/api/v1/openapi.json",
            get(move || {
                let d = document.clone();
                async move { Json((*d).clone()) }
            }),
        )
        .route(
            "/api/v1/{*rest}",
            axum::routing::any(|| async {
                ApiError::not_found("no such route; see /api/v1/openapi.json")
            }),
        )
        .merge(protected)
}

async fn authorize(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let Some(expected) = &state.config.api_token else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the API is off: set HERALD_API_TOKEN",
        )
        .into_response();
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(token)
            if crate::ingress::signature::equal(
                token.trim().as_bytes(),
                expected.expose().as_bytes(),
            ) =>
        {
            next.run(request).await
        }
        _ => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send Authorization: Bearer <HERALD_API_TOKEN>",
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_lists_every_operation_with_its_schemas() {
        let api = api();
        let doc = api.openapi();
        for op in &api.ops {
            let entry = &doc["paths"][op.path][op.method];
            assert!(entry.is_object(), "{} {} undocumented", op.method, op.path);
            assert!(entry["responses"][op.ok.0.to_string()].is_object());
        }
        // Every $ref points at a component.
        let text = doc.to_string();
        for part in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = &part[..part.find('"').unwrap()];
            assert!(
                doc["components"]["schemas"][name].is_object(),
                "missing component {name}"
            );
        }
    }
}
