//! The HTTP API `/api/v1`: JSON over HTTP with bearer-token auth, for integrators and operators.
//! Its OpenAPI 3.1 document is generated from the handlers' types with aide: an operation's
//! parameters and body come from its extractors, its answers from its return type, error
//! statuses included (`ApiResult<Json<Contact>, (NotFound, Unavailable)>`, see `io`). It is
//! served at `/api/v1/openapi.json` and committed as `openapi.json`; tests keep the file equal
//! to the code and the running API true to the document.
//!
//! aide rather than utoipa: the bodies are the stores' own types (`Contact`, `Dispatch`,
//! `RunDetail`, ...), which derive schemars' `JsonSchema` as the workflow schema does; aide 0.16
//! builds on schemars 1 and axum 0.8, while utoipa would need a second derive on each of them.

mod contacts;
mod dispatches;
mod events;
mod io;
mod runs;
mod workflows;

use std::sync::Arc;

use aide::{
    OperationOutput,
    axum::ApiRouter,
    generate::in_context,
    openapi::{
        Info, OpenApi, Parameter, ParameterSchemaOrContent, ReferenceOr, SecurityScheme, Server,
    },
};
use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Request, State},
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::Value;
use sqlx::PgPool;

use crate::{config::Config, dispatch::Defaults, workflow::SharedWorkflows};

pub use io::{
    ApiError, ApiResult, BadRequest, Conflict, ErrorBody, NotFound, PayloadTooLarge, Unauthorized,
    Unavailable, Unprocessable,
};

#[derive(Clone)]
pub struct ApiState {
    pub pool: PgPool,
    pub workflows: SharedWorkflows,
    pub config: Arc<Config>,
    pub defaults: Defaults,
}

/// The operations (without their bearer check) and the OpenAPI document that describes them.
fn api() -> (Router<ApiState>, OpenApi) {
    aide::generate::reset_context();
    in_context(|ctx| ctx.schema = io::answer_schemas());
    // Two sources naming the same status (a handler's 400 and its query's) describe the same
    // JSON error; anything else is a mistake in a handler's description.
    aide::generate::on_error(|e| {
        if !matches!(e, aide::Error::InferredResponseConflict(_)) {
            panic!("the OpenAPI document: {e}");
        }
    });
    let mut document = OpenApi {
        info: Info {
            title: "Herald API".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: Some(
                "Workflows, runs, dispatches, contacts and events. Every request needs \
                 `Authorization: Bearer <HERALD_API_TOKEN>`. Errors are JSON: \
                 {\"error\": code, \"message\": text}."
                    .into(),
            ),
            ..Info::default()
        },
        servers: vec![Server {
            url: "/".into(),
            ..Server::default()
        }],
        ..OpenApi::default()
    };
    let router = ApiRouter::new()
        .merge(workflows::routes())
        .merge(runs::routes())
        .merge(dispatches::routes())
        .merge(contacts::routes())
        .merge(events::routes())
        .with_path_items(|mut item| {
            for (_, operation) in aide::util::iter_operations_mut(item.inner_mut()) {
                // What `authorize` answers, in front of every operation.
                let answers = in_context(|ctx| {
                    ApiError::<(Unauthorized,)>::inferred_responses(ctx, operation)
                });
                let responses = operation.responses.get_or_insert_with(Default::default);
                for (status, answer) in answers {
                    if let Some(status) = status {
                        responses
                            .responses
                            .insert(status, ReferenceOr::Item(answer));
                    }
                }
            }
            item
        })
        .finish_api_with(&mut document, |doc| {
            doc.security_scheme(
                "bearer",
                SecurityScheme::Http {
                    scheme: "bearer".into(),
                    bearer_format: None,
                    description: Some("HERALD_API_TOKEN".into()),
                    extensions: Default::default(),
                },
            )
            .security_requirement("bearer")
        });
    finish(&mut document);
    (router, document)
}

/// What aide leaves to the caller: operation ids (`get_runs_id`, from method and path), no
/// `null` in a query parameter (a query string cannot say null; aide strips it from `type`
/// only), responses in status order, and a description on every response.
fn finish(document: &mut OpenApi) {
    for (path, item) in document.paths.iter_mut().flat_map(|p| p.paths.iter_mut()) {
        let ReferenceOr::Item(item) = item else {
            continue;
        };
        for (method, operation) in aide::util::iter_operations_mut(item) {
            for parameter in &mut operation.parameters {
                if let ReferenceOr::Item(Parameter::Query { parameter_data, .. }) = parameter
                    && let ParameterSchemaOrContent::Schema(schema) = &mut parameter_data.format
                    && let Some(schema) = schema.json_schema.as_object_mut()
                {
                    if let Some(Value::Array(values)) = schema.get_mut("enum") {
                        values.retain(|v| !v.is_null());
                    }
                    if schema.get("default").is_some_and(Value::is_null) {
                        schema.remove("default");
                    }
                }
            }
            operation.operation_id = Some(format!(
                "{method}_{}",
                path.trim_start_matches("/api/v1/")
                    .replace(['/', '{', '}'], "_")
                    .trim_end_matches('_')
            ));
            let Some(responses) = operation.responses.as_mut() else {
                continue;
            };
            responses.responses.sort_keys();
            for (status, answer) in responses.responses.iter_mut() {
                if let (ReferenceOr::Item(answer), aide::openapi::StatusCode::Code(code)) =
                    (answer, status)
                    && answer.description.is_empty()
                {
                    answer.description = StatusCode::from_u16(*code)
                        .ok()
                        .and_then(|s| s.canonical_reason())
                        .unwrap_or("success")
                        .to_string();
                }
            }
        }
    }
}

/// The OpenAPI document of the API, as served at `/api/v1/openapi.json`.
pub fn document() -> OpenApi {
    api().1
}

/// The document as the committed `openapi.json` holds it: pretty, with a final newline.
pub fn document_json() -> String {
    let mut text = serde_json::to_string_pretty(&document()).expect("the document serialises");
    text.push('\n');
    text
}

/// The largest body of an API request but a CSV import, in bytes.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The route whose body is a whole CSV file: its limit is `HERALD_MAX_IMPORT_BYTES`.
const IMPORT_PATH: &str = "/api/v1/contacts/import";

/// The `/api/v1` router: the operations behind bearer auth (checked before a body is read),
/// each body within its route's limit, and the OpenAPI document.
pub fn router(state: ApiState) -> Router {
    let (operations, document) = api();
    let document = Bytes::from(serde_json::to_vec(&document).expect("the document serialises"));
    let protected = operations
        .layer(middleware::from_fn_with_state(state.clone(), limit_body))
        // The limits are limit_body's, not axum's default of 2 MB.
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state);
    Router::new()
        .route(
            "/api/v1/openapi.json",
            get(move || {
                let document = document.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], document) }
            }),
        )
        .route(
            "/api/v1/{*rest}",
            axum::routing::any(|| async {
                ApiError::<(NotFound,)>::not_found("no such route; see /api/v1/openapi.json")
            }),
        )
        .merge(protected)
}

/// Holds a request's body to its route's limit: [`MAX_BODY_BYTES`], or
/// `HERALD_MAX_IMPORT_BYTES` for a CSV import; over it, 413.
async fn limit_body(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let limit = if request.uri().path() == IMPORT_PATH {
        state.config.http.max_import_bytes
    } else {
        MAX_BODY_BYTES
    };
    if let Some(refused) = crate::ingress::server::too_large(request.headers(), limit) {
        return refused;
    }
    next.run(crate::ingress::server::limited(request, limit))
        .await
}

/// `/healthz`: alive while every consumer started on `bus` still runs; a stopped one (the
/// matcher's or the workers') takes no more events or jobs, and only a restart brings it back,
/// so the answer is 503 naming it.
pub fn healthz(bus: &crate::bus::Bus) -> Response {
    let stopped = bus.stopped_consumers();
    if stopped.is_empty() {
        return axum::Json(serde_json::json!({"status": "ok"})).into_response();
    }
    tracing::error!(consumers = ?stopped, "a consumer stopped; answering 503 on /healthz");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(serde_json::json!({"status": "unhealthy", "stopped_consumers": stopped})),
    )
        .into_response()
}

async fn authorize(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let Some(expected) = &state.config.api_token else {
        return ApiError::<(Unauthorized,)>::new(
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
        _ => ApiError::<(Unauthorized,)>::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send Authorization: Bearer <HERALD_API_TOKEN>",
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn document_value() -> Value {
        serde_json::to_value(document()).unwrap()
    }

    /// `UPDATE_OPENAPI=1 cargo test --lib api::` writes the file instead.
    #[test]
    fn the_committed_openapi_json_is_what_the_code_generates() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");
        let generated = document_json();
        if std::env::var_os("UPDATE_OPENAPI").is_some_and(|v| v == "1") {
            std::fs::write(path, &generated).expect("write openapi.json");
            return;
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "openapi.json differs from the document the code generates; regenerate it with \
             `UPDATE_OPENAPI=1 cargo test --lib api::` and commit it"
        );
    }

    #[test]
    fn every_reference_in_the_document_points_at_a_component() {
        let doc = document_value();
        let text = doc.to_string();
        let mut refs = 0;
        for part in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = &part[..part.find('"').unwrap()];
            assert!(
                doc["components"]["schemas"][name].is_object(),
                "missing component {name}"
            );
            refs += 1;
        }
        assert!(refs > 10, "only {refs} references");
    }

    #[test]
    fn an_operation_answers_the_statuses_its_handler_s_types_name() {
        let doc = document_value();
        let statuses = |method: &str, path: &str| -> Vec<String> {
            doc["paths"][path][method]["responses"]
                .as_object()
                .unwrap_or_else(|| panic!("{method} {path} undocumented"))
                .keys()
                .cloned()
                .collect()
        };
        // Path (400), handler (404, 422 from ContactsError, 503), bearer check (401).
        assert_eq!(
            statuses("get", "/api/v1/contacts/{contact}"),
            ["200", "400", "401", "404", "422", "503"]
        );
        // The JSON body's 422, the handler's 201, 409, 422 and 503.
        assert_eq!(
            statuses("post", "/api/v1/contacts"),
            ["201", "401", "409", "422", "503"]
        );
        // No database, no error of its own.
        assert_eq!(statuses("get", "/api/v1/workflows"), ["200", "401"]);
        let error = &doc["paths"]["/api/v1/runs/{id}"]["get"]["responses"]["404"];
        assert_eq!(
            error["content"]["application/json"]["schema"],
            json!({"$ref": "#/components/schemas/ApiError"})
        );
    }

    #[test]
    fn every_operation_needs_the_bearer_token() {
        let doc = document_value();
        assert_eq!(doc["security"], json!([{"bearer": []}]));
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                assert!(
                    operation["responses"]["401"].is_object(),
                    "{method} {path} does not list 401"
                );
            }
        }
    }

    #[test]
    fn requests_are_described_as_serde_reads_them_and_answers_as_it_writes_them() {
        let doc = document_value();
        let parameters = doc["paths"]["/api/v1/runs"]["get"]["parameters"]
            .as_array()
            .unwrap();
        let status = parameters.iter().find(|p| p["name"] == "status").unwrap();
        // An Option query field may be left out, and is never null.
        assert_eq!(status["in"], "query");
        assert_ne!(status["required"], true);
        assert_eq!(status["schema"]["type"], "string");
        let id = &doc["paths"]["/api/v1/runs/{id}"]["get"]["parameters"][0];
        assert_eq!(
            (&id["name"], &id["in"], &id["required"]),
            (&json!("id"), &json!("path"), &json!(true))
        );
        // A `#[serde(default)]` body field may be left out...
        let body = &doc["paths"]["/api/v1/contacts"]["post"]["requestBody"]["content"]["application/json"]
            ["schema"];
        assert_eq!(body["required"], json!(["phone"]));
        // ...while an answer's Option field is always written, maybe null.
        let contact = &doc["components"]["schemas"]["Contact"];
        assert!(
            contact["required"]
                .as_array()
                .unwrap()
                .contains(&json!("last_seen_at"))
        );
    }
}
