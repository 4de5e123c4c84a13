//! `POST /webhooks/calls`: a call-ended event from a telephony or voice-AI system. Authenticates
//! (bearer token or HMAC of the body), parses into a typed [`CallEnded`], records one `call.ended`
//! CloudEvent per `call_id` with the contact in one transaction, publishes, then answers 200.

use axum::{
    Json,
    body::Bytes,
    extract::{Request, State},
    http::{HeaderMap, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::{IngressState, signature};
use crate::{
    bus::outbox,
    config::Config,
    domain::{CloudEvent, EventType, PhoneNumber},
    store::events::{self, Recorded},
};

/// The header carrying `sha256=<hex>`: HMAC-SHA256 of the raw body with `HERALD_CALLS_SECRET`.
pub const SIGNATURE_HEADER: &str = "x-herald-signature-256";

/// A call-ended event as the edge accepts it. `data` is the body as it came (extra fields
/// included), with `customer_phone` normalised to E.164 and `customer_id` added.
#[derive(Debug, Clone, PartialEq)]
pub struct CallEnded {
    pub call_id: String,
    pub customer: PhoneNumber,
    pub customer_name: Option<String>,
    /// Our phone_number_id the follow-up goes out on, when the body names one.
    pub sender: Option<String>,
    pub ended_at: Option<DateTime<Utc>>,
    pub data: Map<String, Value>,
}

/// Why a body is not a call-ended event; `code()` is the `error` of the JSON answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidCall {
    #[error("The body is not JSON: {0}")]
    NotJson(String),
    #[error("The body must be a JSON object")]
    NotAnObject,
    #[error("`{0}` is required")]
    Missing(&'static str),
    #[error("`{field}` {expected}")]
    BadField {
        field: &'static str,
        expected: &'static str,
    },
    #[error(transparent)]
    InvalidPhone(#[from] crate::domain::InvalidPhoneNumber),
}

impl InvalidCall {
    pub fn code(&self) -> &'static str {
        match self {
            InvalidCall::NotJson(_) => "invalid_json",
            InvalidCall::NotAnObject => "invalid_body",
            InvalidCall::Missing(_) => "missing_field",
            InvalidCall::BadField { .. } => "invalid_field",
            InvalidCall::InvalidPhone(_) => "invalid_phone",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            InvalidCall::NotJson(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }
}

impl CallEnded {
    /// Parses a webhook body. Known fields are checked for their type; others are kept as sent.
    pub fn parse(body: &[u8]) -> Result<CallEnded, InvalidCall> {
        let mut value: Value =
            serde_json::from_slice(body).map_err(|e| InvalidCall::NotJson(e.to_string()))?;
        // PostgreSQL keeps no NUL in text or jsonb: stored escaped, never refused.
        crate::domain::escape_nuls(&mut value);
        let Value::Object(mut data) = value else {
            return Err(InvalidCall::NotAnObject);
        };
        let call_id = match data.get("call_id") {
            None | Some(Value::Null) => return Err(InvalidCall::Missing("call_id")),
            Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 200 => s.clone(),
            Some(Value::Number(n)) if n.is_u64() || n.is_i64() => n.to_string(),
            Some(_) => {
                return Err(InvalidCall::BadField {
                    field: "call_id",
                    expected: "must be a non-empty string of at most 200 characters",
                });
            }
        };
        let customer = match data.get("customer_phone") {
            None | Some(Value::Null) => return Err(InvalidCall::Missing("customer_phone")),
            Some(Value::String(s)) => PhoneNumber::parse(s)?,
            Some(other) => PhoneNumber::parse(&other.to_string())?,
        };
        let text = |field: &'static str| -> Result<Option<String>, InvalidCall> {
            match data.get(field) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(InvalidCall::BadField {
                    field,
                    expected: "must be a string",
                }),
            }
        };
        let customer_name = text("customer_name")?.filter(|n| !n.trim().is_empty());
        text("agent_name")?;
        text("outcome")?;
        let sender = match text("sender")? {
            None => None,
            Some(s) if !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_digit()) => {
                Some(s)
            }
            Some(_) => {
                return Err(InvalidCall::BadField {
                    field: "sender",
                    expected: "must be a phone_number_id (digits)",
                });
            }
        };
        match data.get("duration_seconds") {
            None | Some(Value::Null) => {}
            Some(Value::Number(n)) if n.as_f64().is_some_and(|d| d >= 0.0) => {}
            Some(_) => {
                return Err(InvalidCall::BadField {
                    field: "duration_seconds",
                    expected: "must be a number of seconds, 0 or more",
                });
            }
        }
        let ended_at = match text("ended_at")? {
            None => None,
            Some(s) => Some(
                DateTime::parse_from_rfc3339(&s)
                    .map_err(|_| InvalidCall::BadField {
                        field: "ended_at",
                        expected: "must be an RFC 3339 time, e.g. 2026-11-23T14:05:00Z",
                    })?
                    .with_timezone(&Utc),
            ),
        };
        data.insert("call_id".into(), json!(call_id));
        data.insert("customer_phone".into(), json!(customer.as_str()));
        data.insert("customer_id".into(), json!(customer.digits()));
        Ok(CallEnded {
            call_id,
            customer,
            customer_name,
            sender,
            ended_at,
            data,
        })
    }

    /// The `call.ended` CloudEvent: subject the customer's id, sender the body's or `default_sender`.
    pub fn to_event(&self, default_sender: &str) -> CloudEvent {
        let sender = self.sender.as_deref().unwrap_or(default_sender).to_string();
        CloudEvent::new(
            EventType::CallEnded,
            "/calls".into(),
            sender,
            Some(self.customer.digits().to_string()),
            self.ended_at.unwrap_or_else(Utc::now),
            Value::Object(self.data.clone()),
        )
    }

    /// The dedup key: one event per call.
    pub fn dedup_key(&self) -> String {
        format!("call:{}", self.call_id)
    }
}

/// Why a request was not let in.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Neither a token nor a secret is configured.
    NotConfigured,
    /// The token or signature is missing or wrong.
    BadCredentials,
}

/// Lets a request in when its bearer token or its body signature matches the configuration.
pub fn authenticate(config: &Config, headers: &HeaderMap, body: &[u8]) -> Result<(), Refused> {
    if config.calls_token.is_none() && config.calls_secret.is_none() {
        return Err(Refused::NotConfigured);
    }
    if let Some(expected) = &config.calls_token
        && let Some(given) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        && signature::equal(given.trim().as_bytes(), expected.expose().as_bytes())
    {
        return Ok(());
    }
    if let Some(secret) = &config.calls_secret {
        let sig = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
        if signature::verify(secret.expose().as_bytes(), sig, body) {
            return Ok(());
        }
    }
    Err(Refused::BadCredentials)
}

fn answer(status: StatusCode, outcome: &'static str, body: Value) -> Response {
    metrics::counter!("herald_webhooks_total", "source" => "calls", "outcome" => outcome)
        .increment(1);
    (status, Json(body)).into_response()
}

fn unavailable(what: &str, error: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %error, "{what}; answering 503 so that the caller delivers again");
    answer(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        json!({"error": "unavailable", "message": format!("{what}; deliver again later")}),
    )
}

/// The 401 of a refused call webhook, logged.
fn refused(refusal: Refused, headers: &HeaderMap) -> Response {
    match refusal {
        Refused::NotConfigured => {
            tracing::warn!("call webhook refused: no HERALD_CALLS_TOKEN or HERALD_CALLS_SECRET");
            answer(
                StatusCode::UNAUTHORIZED,
                "not_configured",
                json!({"error": "not_configured", "message": "The call webhook is not configured: set HERALD_CALLS_TOKEN or HERALD_CALLS_SECRET"}),
            )
        }
        Refused::BadCredentials => {
            tracing::warn!(
                bearer = headers.contains_key(header::AUTHORIZATION),
                signature = headers.contains_key(SIGNATURE_HEADER),
                "call webhook token or signature missing or wrong"
            );
            answer(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                json!({"error": "unauthorized", "message": "Authorization: Bearer <HERALD_CALLS_TOKEN> or X-Herald-Signature-256 is missing or does not match"}),
            )
        }
    }
}

/// What the headers alone decide: `Ok` when the bearer token matches or a signature is there
/// to check against the body (then [`authenticate`] decides, once the body is read).
fn authenticate_headers(config: &Config, headers: &HeaderMap) -> Result<(), Refused> {
    match authenticate(config, headers, &[]) {
        Err(Refused::BadCredentials)
            if config.calls_secret.is_some() && headers.contains_key(SIGNATURE_HEADER) =>
        {
            Ok(())
        }
        decided => decided,
    }
}

/// In front of [`receive`]: a call that the headers cannot authenticate is refused with 401
/// before its body is read; one announcing a body over the limit gets 413, unread too.
pub async fn authenticated_only(
    State(state): State<IngressState>,
    request: Request,
    next: Next,
) -> Response {
    if let Err(refusal) = authenticate_headers(&state.config, request.headers()) {
        return refused(refusal, request.headers());
    }
    if let Some(too_large) =
        super::server::too_large(request.headers(), state.config.max_body_bytes)
    {
        return too_large;
    }
    next.run(request).await
}

pub async fn receive(
    State(state): State<IngressState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(refusal) = authenticate(&state.config, &headers, &body) {
        return refused(refusal, &headers);
    }
    let call = match CallEnded::parse(&body) {
        Ok(call) => call,
        Err(e) => {
            return answer(
                e.status(),
                "invalid",
                json!({"error": e.code(), "message": e.to_string()}),
            );
        }
    };
    let event = call.to_event(&state.config.calls_sender);
    let recorded = match store(&state.pool, &call, &event).await {
        Ok(r) => r,
        Err(e) if crate::db::is_data_error(&e) => {
            // The same body would fail the same way for ever: keep it, answer 200.
            return match super::quarantine::keep_refused(&state.pool, "calls", &body, &e).await {
                Ok((id, reason)) => answer(
                    StatusCode::OK,
                    "quarantined",
                    json!({"status": "quarantined", "quarantine_id": id, "reason": reason}),
                ),
                Err(db) => unavailable("could not store the call", &db),
            };
        }
        Err(e) => return unavailable("could not store the call", &e),
    };
    let pending: Vec<_> = recorded.outbox().into_iter().cloned().collect();
    if let Err(e) = outbox::flush(&state.bus, &state.pool, &pending).await {
        return unavailable("could not publish the call", &e);
    }
    let (event_id, duplicate) = match &recorded {
        Recorded::New(_) => (event.id, false),
        Recorded::Duplicate { event_id, .. } => (*event_id, true),
    };
    tracing::info!(call_id = %call.call_id, event_id = %event_id, duplicate, "call accepted");
    answer(
        StatusCode::OK,
        if duplicate { "duplicate" } else { "accepted" },
        json!({"status": "accepted", "event_id": event_id, "duplicate": duplicate}),
    )
}

/// Records the event and, when it is new, keeps the contact: one transaction.
async fn store(
    pool: &sqlx::PgPool,
    call: &CallEnded,
    event: &CloudEvent,
) -> sqlx::Result<Recorded> {
    let mut tx = pool.begin().await?;
    let recorded = events::record(&mut tx, event, &call.dedup_key()).await?;
    if recorded.is_new() {
        crate::store::contacts::seen(
            &mut tx,
            &call.customer,
            call.customer_name.as_deref(),
            event.time,
        )
        .await?;
    }
    tx.commit().await?;
    Ok(recorded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Result<CallEnded, InvalidCall> {
        CallEnded::parse(&serde_json::to_vec(&v).unwrap())
    }

    #[test]
    fn a_nul_in_a_call_field_is_kept_escaped() {
        let call = parse(json!({
            "call_id": "c-\u{0}1", "customer_phone": "+4915112345678",
            "customer_name": "A\u{0}na", "notes": {"k\u{0}": "v\u{0}"}
        }))
        .unwrap();
        assert_eq!(call.call_id, "c-\\u00001");
        assert_eq!(call.customer_name.as_deref(), Some("A\\u0000na"));
        assert_eq!(call.data["notes"], json!({"k\\u0000": "v\\u0000"}));
    }

    #[test]
    fn a_call_keeps_every_field_and_gains_the_customer_id() {
        let call = parse(json!({
            "call_id": "c-1", "customer_phone": "+4915112345678", "customer_name": "Ana",
            "agent_name": "Bruno", "outcome": "booked", "duration_seconds": 125,
            "ended_at": "2026-11-23T14:05:00+01:00", "location": {"city": "Berlin"}
        }))
        .unwrap();
        assert_eq!(call.call_id, "c-1");
        assert_eq!(call.customer.as_str(), "+4915112345678");
        assert_eq!(call.customer_name.as_deref(), Some("Ana"));
        assert_eq!(
            call.ended_at.unwrap().to_rfc3339(),
            "2026-11-23T13:05:00+00:00"
        );
        assert_eq!(call.data["customer_id"], "4915112345678");
        assert_eq!(call.data["location"], json!({"city": "Berlin"}));
        assert_eq!(call.data["duration_seconds"], 125);
        let event = call.to_event("100000000000001");
        assert_eq!(event.event_type, EventType::CallEnded);
        assert_eq!(event.subject.as_deref(), Some("4915112345678"));
        assert_eq!(event.senderid, "100000000000001");
        assert_eq!(call.dedup_key(), "call:c-1");
    }

    #[test]
    fn the_body_sender_wins_over_the_default() {
        let call = parse(
            json!({"call_id": 42, "customer_phone": "+16505551234", "sender": "113355779900224"}),
        )
        .unwrap();
        assert_eq!(call.call_id, "42");
        assert_eq!(call.to_event("1").senderid, "113355779900224");
    }

    #[test]
    fn bad_bodies_are_refused_with_a_code_and_a_reason() {
        let cases = [
            (
                &b"not json"[..],
                "invalid_json",
                StatusCode::BAD_REQUEST,
                "not JSON",
            ),
            (
                b"[1]",
                "invalid_body",
                StatusCode::UNPROCESSABLE_ENTITY,
                "object",
            ),
            (
                br#"{"customer_phone":"+4915112345678"}"#,
                "missing_field",
                StatusCode::UNPROCESSABLE_ENTITY,
                "`call_id` is required",
            ),
            (
                br#"{"call_id":"c"}"#,
                "missing_field",
                StatusCode::UNPROCESSABLE_ENTITY,
                "`customer_phone` is required",
            ),
            (
                br#"{"call_id":"c","customer_phone":"015112345678"}"#,
                "invalid_phone",
                StatusCode::UNPROCESSABLE_ENTITY,
                "+[country code][number]",
            ),
            (
                br#"{"call_id":"","customer_phone":"+4915112345678"}"#,
                "invalid_field",
                StatusCode::UNPROCESSABLE_ENTITY,
                "call_id",
            ),
            (
                br#"{"call_id":"c","customer_phone":"+4915112345678","outcome":3}"#,
                "invalid_field",
                StatusCode::UNPROCESSABLE_ENTITY,
                "`outcome` must be a string",
            ),
            (
                br#"{"call_id":"c","customer_phone":"+4915112345678","duration_seconds":-1}"#,
                "invalid_field",
                StatusCode::UNPROCESSABLE_ENTITY,
                "duration_seconds",
            ),
            (
                br#"{"call_id":"c","customer_phone":"+4915112345678","ended_at":"yesterday"}"#,
                "invalid_field",
                StatusCode::UNPROCESSABLE_ENTITY,
                "RFC 3339",
            ),
            (
                br#"{"call_id":"c","customer_phone":"+4915112345678","sender":"abc"}"#,
                "invalid_field",
                StatusCode::UNPROCESSABLE_ENTITY,
                "phone_number_id",
            ),
        ];
        for (body, code, status, message) in cases {
            let err = CallEnded::parse(body).unwrap_err();
            assert_eq!(err.code(), code, "{}", String::from_utf8_lossy(body));
            assert_eq!(err.status(), status);
            assert!(err.to_string().contains(message), "{err}");
        }
    }

    fn config(vars: &[(&str, &str)]) -> Config {
        let vars: std::collections::HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| vars.get(k).cloned()).unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn a_token_or_a_signature_lets_a_call_in() {
        let c = config(&[
            ("HERALD_CALLS_TOKEN", "tok"),
            ("HERALD_CALLS_SECRET", "sec"),
        ]);
        let body = b"{}";
        let sig = signature::sign(b"sec", body);
        assert_eq!(
            authenticate(&c, &headers(&[("authorization", "Bearer tok")]), body),
            Ok(())
        );
        assert_eq!(
            authenticate(&c, &headers(&[(SIGNATURE_HEADER, &sig)]), body),
            Ok(())
        );
        for bad in [
            headers(&[]),
            headers(&[("authorization", "Bearer nope")]),
            headers(&[("authorization", "tok")]),
            headers(&[(SIGNATURE_HEADER, &signature::sign(b"other", body))]),
        ] {
            assert_eq!(authenticate(&c, &bad, body), Err(Refused::BadCredentials));
        }
    }

    #[test]
    fn outside_the_sandbox_an_unconfigured_webhook_refuses_everything() {
        let live = config(&[("WHATSAPP_ACCESS_TOKEN", "t"), ("WHATSAPP_APP_SECRET", "s")]);
        let h = headers(&[("authorization", "Bearer herald-sandbox-calls-token")]);
        assert_eq!(authenticate(&live, &h, b"{}"), Err(Refused::NotConfigured));
        let bare = config(&[]);
        assert_eq!(
            authenticate(&bare, &h, b"{}"),
            Err(Refused::NotConfigured),
            "no access token is not the sandbox"
        );
        let sandbox = config(&[("HERALD_SANDBOX", "true")]);
        assert_eq!(authenticate(&sandbox, &h, b"{}"), Ok(()));
    }
}
