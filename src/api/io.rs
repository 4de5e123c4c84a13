//! What handlers take and give: extractors and answers that keep the API's JSON error shape and
//! describe themselves to the OpenAPI document (aide's `OperationInput` / `OperationOutput`), so
//! an operation's parameters, body and answers, error statuses included, follow from its
//! handler's signature.

use std::marker::PhantomData;

use aide::{
    OperationInput, OperationOutput,
    generate::GenContext,
    openapi::{self, MediaType, Operation, RequestBody, SchemaObject},
    operation::{ParamLocation, add_parameters, parameters_from_schema, set_body},
};
use axum::{
    Json,
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Path, Query, Request},
    http::{StatusCode, request::Parts},
    response::{IntoResponse, Response},
};
use schemars::{JsonSchema, Schema, SchemaGenerator, generate::SchemaSettings};
use serde::{Serialize, de::DeserializeOwned};

/// An error answer's body.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "ApiError")]
pub struct ErrorBody {
    /// Stable, for programs: bad_request, invalid_query, invalid_body, invalid_phone, not_found,
    /// conflict, unauthorized, unavailable, ...
    pub error: String,
    /// For people.
    pub message: String,
}

/// One error status an operation can answer, and what it means in this API.
pub trait ErrorStatus {
    const STATUS: StatusCode;
    const MEANING: &'static str;
}

macro_rules! error_statuses {
    ($($(#[$doc:meta])* $name:ident = $status:ident, $meaning:literal;)*) => {$(
        $(#[$doc])*
        pub struct $name;
        impl ErrorStatus for $name {
            const STATUS: StatusCode = StatusCode::$status;
            const MEANING: &'static str = $meaning;
        }
    )*};
}

error_statuses! {
    /// 400: a query, path or body that cannot be read, or a value the operation refuses.
    BadRequest = BAD_REQUEST, "Bad Request: a query, path or body that cannot be read";
    /// 401: no or a wrong bearer token, or the API is off.
    Unauthorized = UNAUTHORIZED, "Unauthorized: send `Authorization: Bearer <HERALD_API_TOKEN>`";
    /// 404: no such resource.
    NotFound = NOT_FOUND, "Not Found";
    /// 409: the resource exists already, or is in a state that does not allow the change.
    Conflict = CONFLICT, "Conflict";
    /// 413: the body is larger than the server reads.
    PayloadTooLarge = PAYLOAD_TOO_LARGE, "Payload Too Large";
    /// 422: a body or value that does not make sense (an invalid phone number, an unknown field).
    Unprocessable = UNPROCESSABLE_ENTITY, "Unprocessable Entity: the request is well formed but invalid";
    /// 503: the database failed; the request may succeed later.
    Unavailable = SERVICE_UNAVAILABLE, "Service Unavailable: the database is unavailable; try again";
}

/// The error statuses of an operation: a tuple of [`ErrorStatus`] types.
pub trait ErrorStatuses {
    const LIST: &'static [(StatusCode, &'static str)];
}

macro_rules! error_status_tuples {
    ($(($($s:ident),+))*) => {$(
        impl<$($s: ErrorStatus),+> ErrorStatuses for ($($s,)+) {
            const LIST: &'static [(StatusCode, &'static str)] = &[$(($s::STATUS, $s::MEANING)),+];
        }
    )*};
}

error_status_tuples! {
    (A)
    (A, B)
    (A, B, C)
    (A, B, C, D)
    (A, B, C, D, E)
}

/// An error answer (`{"error": code, "message": text}`) whose status is one of `S`, e.g.
/// `ApiError<(NotFound, Unavailable)>`: the statuses the document gives an operation are the
/// ones its handler's type names. A debug build panics on any other status, so the tests
/// catch an answer the document does not list.
pub struct ApiError<S> {
    status: StatusCode,
    body: ErrorBody,
    statuses: PhantomData<fn() -> S>,
}

pub type ApiResult<T, S> = Result<T, ApiError<S>>;

impl<S: ErrorStatuses> ApiError<S> {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        debug_assert!(
            S::LIST.iter().any(|(s, _)| *s == status),
            "status {status} ({code}) is not among the statuses the operation documents: {:?}",
            S::LIST.iter().map(|(s, _)| s.as_u16()).collect::<Vec<_>>()
        );
        ApiError {
            status,
            body: ErrorBody {
                error: code.to_string(),
                message: message.into(),
            },
            statuses: PhantomData,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// The database failed: logged here, answered as 503 without the cause.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(error = %error, "API request failed");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the database is unavailable; try again",
        )
    }
}

impl<S> std::fmt::Debug for ApiError<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiError")
            .field("status", &self.status)
            .field("body", &self.body)
            .finish()
    }
}

impl<S> IntoResponse for ApiError<S> {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

impl<S: ErrorStatuses> OperationOutput for ApiError<S> {
    type Inner = ErrorBody;

    fn operation_response(
        ctx: &mut GenContext,
        operation: &mut Operation,
    ) -> Option<openapi::Response> {
        Json::<ErrorBody>::operation_response(ctx, operation)
    }

    fn inferred_responses(
        ctx: &mut GenContext,
        operation: &mut Operation,
    ) -> Vec<(Option<openapi::StatusCode>, openapi::Response)> {
        let Some(answer) = Self::operation_response(ctx, operation) else {
            return Vec::new();
        };
        S::LIST
            .iter()
            .map(|(status, meaning)| {
                let mut answer = answer.clone();
                answer.description = (*meaning).to_string();
                (Some(openapi::StatusCode::Code(status.as_u16())), answer)
            })
            .collect()
    }
}

/// A 201 answer with the created resource as JSON.
pub struct Created<T>(pub T);

impl<T: Serialize> IntoResponse for Created<T> {
    fn into_response(self) -> Response {
        (StatusCode::CREATED, Json(self.0)).into_response()
    }
}

impl<T: JsonSchema> OperationOutput for Created<T> {
    type Inner = T;

    fn operation_response(
        ctx: &mut GenContext,
        operation: &mut Operation,
    ) -> Option<openapi::Response> {
        Json::<T>::operation_response(ctx, operation)
    }

    fn inferred_responses(
        ctx: &mut GenContext,
        operation: &mut Operation,
    ) -> Vec<(Option<openapi::StatusCode>, openapi::Response)> {
        Self::operation_response(ctx, operation)
            .map(|answer| vec![(Some(openapi::StatusCode::Code(201)), answer)])
            .unwrap_or_default()
    }
}

/// The generator of the answers' schemas, which go to `#/components/schemas`: they describe
/// what the server writes (serde's Serialize side, where an `Option` field is always present,
/// maybe `null`).
pub(super) fn answer_schemas() -> SchemaGenerator {
    SchemaSettings::draft2020_12()
        .with(|s| {
            s.definitions_path = "#/components/schemas/".into();
            s.contract = schemars::generate::Contract::Serialize;
            s.meta_schema = None;
        })
        .into_generator()
}

/// The schema of a request's `T` as serde reads it (the Deserialize side: an `Option` or
/// `#[serde(default)]` field may be left out), inlined where it is used so it never meets an
/// answer's schema of the same name.
fn request_schema<T: JsonSchema>() -> Schema {
    let mut generator = SchemaSettings::draft2020_12()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .into_generator();
    let schema = generator.subschema_for::<T>();
    assert!(
        generator.definitions().is_empty(),
        "{} refers to itself; request schemas are inlined",
        T::schema_name()
    );
    schema
}

fn add_request_parameters<T: JsonSchema>(
    ctx: &mut GenContext,
    operation: &mut Operation,
    location: ParamLocation,
) {
    let params = parameters_from_schema(ctx, request_schema::<T>(), location);
    add_parameters(ctx, operation, params);
}

/// A JSON body read as `T`; one that does not read (not JSON, wrong shape, unknown field) or
/// holds a NUL character, which PostgreSQL cannot store, answers 422 `invalid_body`.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError<(Unprocessable,)>;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let invalid = |message: String| {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", message)
        };
        let (parts, body) = request.into_parts();
        let bytes = Bytes::from_request(Request::from_parts(parts.clone(), body), state)
            .await
            .map_err(|r| invalid(r.body_text()))?;
        let request = Request::from_parts(parts, axum::body::Body::from(bytes.clone()));
        let Json(value) = Json::<T>::from_request(request, state)
            .await
            .map_err(|r| invalid(r.body_text()))?;
        if holds_nul(&bytes) {
            return Err(invalid(
                "text in the body cannot contain the NUL character (\\u0000)".into(),
            ));
        }
        Ok(JsonBody(value))
    }
}

/// Whether a JSON text that reads holds a NUL in a string or a key (JSON writes it `\u0000`).
fn holds_nul(json: &[u8]) -> bool {
    fn walk(value: &serde_json::Value) -> bool {
        match value {
            serde_json::Value::String(s) => s.contains('\0'),
            serde_json::Value::Array(items) => items.iter().any(walk),
            serde_json::Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || walk(v)),
            _ => false,
        }
    }
    json.windows(6).any(|w| w == b"\\u0000")
        && serde_json::from_slice::<serde_json::Value>(json).is_ok_and(|v| walk(&v))
}

/// Whether a URI part holds a percent-encoded NUL, which no text column can store.
fn holds_encoded_nul(text: &str) -> bool {
    text.contains("%00")
}

impl<T: JsonSchema> OperationInput for JsonBody<T> {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        let mut schema = request_schema::<T>();
        let description = schema
            .get("description")
            .and_then(|d| d.as_str())
            .map(String::from);
        schema.insert("title".into(), T::schema_name().into());
        let body = RequestBody {
            description,
            content: [(
                "application/json".to_string(),
                MediaType {
                    schema: Some(SchemaObject {
                        json_schema: schema,
                        example: None,
                        external_docs: None,
                    }),
                    ..Default::default()
                },
            )]
            .into_iter()
            .collect(),
            required: true,
            extensions: Default::default(),
        };
        set_body(ctx, operation, body);
    }

    fn inferred_early_responses(
        ctx: &mut GenContext,
        operation: &mut Operation,
    ) -> Vec<(Option<openapi::StatusCode>, openapi::Response)> {
        ApiError::<(Unprocessable,)>::inferred_responses(ctx, operation)
    }
}

/// Query parameters read as the fields of `T`; a query that does not read, or holds a NUL
/// character, answers 400 `invalid_query`.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError<(BadRequest,)>;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if parts.uri.query().is_some_and(holds_encoded_nul) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                "a query value cannot contain the NUL character (%00)",
            ));
        }
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(QueryParams(value)),
            Err(r) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                r.body_text(),
            )),
        }
    }
}

impl<T: JsonSchema> OperationInput for QueryParams<T> {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        add_request_parameters::<T>(ctx, operation, ParamLocation::Query);
    }

    fn inferred_early_responses(
        ctx: &mut GenContext,
        operation: &mut Operation,
    ) -> Vec<(Option<openapi::StatusCode>, openapi::Response)> {
        ApiError::<(BadRequest,)>::inferred_responses(ctx, operation)
    }
}

/// Path segments read as the fields of `T` (named as in the route); a segment that does not
/// read (not UTF-8) or holds a NUL character answers 400 `invalid_path`.
pub struct PathParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathParams<T> {
    type Rejection = ApiError<(BadRequest,)>;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if holds_encoded_nul(parts.uri.path()) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_path",
                "a path segment cannot contain the NUL character (%00)",
            ));
        }
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(PathParams(value)),
            Err(r) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_path",
                r.body_text(),
            )),
        }
    }
}

impl<T: JsonSchema> OperationInput for PathParams<T> {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        add_request_parameters::<T>(ctx, operation, ParamLocation::Path);
    }

    fn inferred_early_responses(
        ctx: &mut GenContext,
        operation: &mut Operation,
    ) -> Vec<(Option<openapi::StatusCode>, openapi::Response)> {
        ApiError::<(BadRequest,)>::inferred_responses(ctx, operation)
    }
}

/// A body's media type, for the document.
pub trait Media {
    const TYPE: &'static str;
    const DESCRIPTION: &'static str;
    /// The schema of the body's content as the media type reads it.
    fn schema() -> Schema;
}

/// A workflow file.
pub struct Yaml;

impl Media for Yaml {
    const TYPE: &'static str = "application/yaml";
    const DESCRIPTION: &'static str =
        "the workflow file: any YAML document, judged against the workflow schema";

    fn schema() -> Schema {
        // Any YAML reads: one that is not a workflow is answered with its errors, not refused.
        schemars::json_schema!({})
    }
}

/// A CSV file.
pub struct Csv;

impl Media for Csv {
    const TYPE: &'static str = "text/csv";
    const DESCRIPTION: &'static str = "the CSV file";

    fn schema() -> Schema {
        schemars::json_schema!({"type": "string"})
    }
}

/// A body of the media type `M`, as bytes (the `Content-Type` header is not checked). It may be
/// left out: no body is an empty file, which the handler judges like any other. One that cannot
/// be read answers 413 when it is too large, else 400 `invalid_body`.
pub struct Body<M>(pub Bytes, pub PhantomData<M>);

impl<S: Send + Sync, M> FromRequest<S> for Body<M> {
    type Rejection = ApiError<(BadRequest, PayloadTooLarge)>;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Bytes::from_request(request, state).await {
            Ok(bytes) => Ok(Body(bytes, PhantomData)),
            Err(r) => {
                let status = r.status();
                let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
                    "too_large"
                } else {
                    "invalid_body"
                };
                Err(ApiError::new(status, code, r.body_text()))
            }
        }
    }
}

impl<M: Media> OperationInput for Body<M> {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        let body = RequestBody {
            description: Some(M::DESCRIPTION.to_string()),
            content: [(
                M::TYPE.to_string(),
                MediaType {
                    schema: Some(SchemaObject {
                        json_schema: M::schema(),
                        example: None,
                        external_docs: None,
                    }),
                    ..Default::default()
                },
            )]
            .into_iter()
            .collect(),
            required: false,
            extensions: Default::default(),
        };
        set_body(ctx, operation, body);
    }

    fn inferred_early_responses(
        ctx: &mut GenContext,
        operation: &mut Operation,
    ) -> Vec<(Option<openapi::StatusCode>, openapi::Response)> {
        ApiError::<(BadRequest, PayloadTooLarge)>::inferred_responses(ctx, operation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nul_anywhere_in_a_json_text_is_found_and_an_escaped_backslash_is_not_one() {
        assert!(holds_nul(br#"{"name": "a\u0000b"}"#));
        assert!(holds_nul(br#"{"fields": {"k\u0000": 1}}"#));
        assert!(holds_nul(br#"{"vars": [[{"x": "\u0000"}]]}"#));
        assert!(!holds_nul(br#"{"name": "a\\u0000b"}"#));
        assert!(!holds_nul(br#"{"name": "plain"}"#));
    }

    #[test]
    fn a_status_outside_an_operation_s_list_is_caught_in_debug_builds() {
        let allowed = std::panic::catch_unwind(|| {
            ApiError::<(NotFound, Unavailable)>::not_found("no such thing")
        });
        assert!(allowed.is_ok());
        if cfg!(debug_assertions) {
            let outside = std::panic::catch_unwind(|| {
                ApiError::<(NotFound, Unavailable)>::bad_request("not listed")
            });
            assert!(outside.is_err(), "a 400 passed as (NotFound, Unavailable)");
        }
    }
}
