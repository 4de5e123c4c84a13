//! `herald simulate message|call-ended`: posts the webhook a WhatsApp or call system would send
//! to a running Herald.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::json;

use super::{output, parse_key_value};
use crate::{
    config::{Config, SANDBOX_PHONE_NUMBER_ID},
    domain::PhoneNumber,
    ingress::{signature, simulate::text_message_body},
};

#[derive(Subcommand, Debug)]
pub enum SimulateCommand {
    /// Post a signed WhatsApp text message webhook to Herald.
    Message(SimulateMessage),
    /// Post a call-ended event to Herald's call webhook (with the configured token or secret).
    #[command(name = "call-ended")]
    CallEnded(SimulateCallEnded),
}

#[derive(Args, Debug)]
pub struct SimulateMessage {
    /// The customer's phone number (E.164).
    #[arg(long)]
    pub from: String,
    #[arg(long)]
    pub text: String,
    /// The customer's profile name.
    #[arg(long, default_value = "Sandbox Customer")]
    pub name: String,
    /// Our sender's phone_number_id.
    #[arg(long, default_value = SANDBOX_PHONE_NUMBER_ID)]
    pub sender: String,
    /// The message id (wamid); repeat one to simulate a duplicate delivery.
    #[arg(long)]
    pub wamid: Option<String>,
    /// Herald's base URL (default: http://HERALD_LISTEN).
    #[arg(long)]
    pub url: Option<String>,
}

#[derive(Args, Debug)]
pub struct SimulateCallEnded {
    /// The customer's phone number (E.164).
    #[arg(long)]
    pub phone: String,
    /// The call's outcome (e.g. booked, no_answer, callback_requested).
    #[arg(long)]
    pub outcome: String,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub agent: Option<String>,
    #[arg(long)]
    pub duration: Option<u64>,
    /// The call id; repeat one to simulate a duplicate delivery.
    #[arg(long = "call-id")]
    pub call_id: Option<String>,
    /// Our sender's phone_number_id (default: HERALD_CALLS_SENDER).
    #[arg(long)]
    pub sender: Option<String>,
    /// An extra field, `key=value` (repeatable): reachable as `trigger.key`.
    #[arg(long = "field", value_parser = parse_key_value)]
    pub fields: Vec<(String, String)>,
    /// Herald's base URL (default: http://HERALD_LISTEN).
    #[arg(long)]
    pub url: Option<String>,
}

/// The call webhook's body for `herald simulate call-ended`.
pub fn call_ended_body(c: &SimulateCallEnded, phone: &PhoneNumber) -> serde_json::Value {
    let mut body = serde_json::Map::new();
    for (k, v) in &c.fields {
        body.insert(k.clone(), json!(v));
    }
    let call_id = c
        .call_id
        .clone()
        .unwrap_or_else(|| format!("call-simulated-{}", uuid::Uuid::now_v7().simple()));
    body.insert("call_id".into(), json!(call_id));
    body.insert("customer_phone".into(), json!(phone.as_str()));
    body.insert("outcome".into(), json!(c.outcome));
    body.insert("ended_at".into(), json!(chrono::Utc::now().to_rfc3339()));
    for (key, value) in [
        ("customer_name", &c.name),
        ("agent_name", &c.agent),
        ("sender", &c.sender),
    ] {
        if let Some(v) = value {
            body.insert(key.into(), json!(v));
        }
    }
    if let Some(d) = c.duration {
        body.insert("duration_seconds".into(), json!(d));
    }
    serde_json::Value::Object(body)
}

pub(super) async fn command(
    config: &Config,
    cmd: SimulateCommand,
    json: bool,
) -> anyhow::Result<()> {
    match cmd {
        SimulateCommand::Message(m) => simulate_message(config, m, json).await,
        SimulateCommand::CallEnded(c) => simulate_call_ended(config, c, json).await,
    }
}

async fn simulate_message(config: &Config, m: SimulateMessage, json: bool) -> anyhow::Result<()> {
    let from = PhoneNumber::parse(&m.from)?;
    let wamid = m
        .wamid
        .unwrap_or_else(|| format!("wamid.simulated.{}", uuid::Uuid::now_v7().simple()));
    let body = text_message_body(&from, &m.name, &m.text, &m.sender, &wamid);
    let secret = config.require_app_secret("`herald simulate` signs the webhook with it")?;
    let sig = signature::sign(secret.expose().as_bytes(), &body);
    let base = m.url.unwrap_or_else(|| format!("http://{}", config.listen));
    let url = format!("{}/webhooks/whatsapp", base.trim_end_matches('/'));
    let response = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .header("x-hub-signature-256", sig)
        .body(body)
        .send()
        .await
        .with_context(|| format!("post to {url}: is `herald serve` running?"))?;
    print_answer(response, ("wamid", &wamid), json).await
}

async fn simulate_call_ended(
    config: &Config,
    c: SimulateCallEnded,
    json: bool,
) -> anyhow::Result<()> {
    let phone = PhoneNumber::parse(&c.phone)?;
    let body = call_ended_body(&c, &phone);
    let call_id = body["call_id"].as_str().unwrap_or_default().to_string();
    let body = serde_json::to_vec(&body)?;
    let base = c
        .url
        .clone()
        .unwrap_or_else(|| format!("http://{}", config.listen));
    let url = format!("{}/webhooks/calls", base.trim_end_matches('/'));
    let mut request = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json");
    if let Some(secret) = &config.calls_secret {
        request = request.header(
            crate::ingress::calls::SIGNATURE_HEADER,
            signature::sign(secret.expose().as_bytes(), &body),
        );
    } else if let Some(token) = &config.calls_token {
        request = request.bearer_auth(token.expose());
    } else {
        bail!(
            "set HERALD_CALLS_TOKEN or HERALD_CALLS_SECRET (the call webhook refuses calls without)"
        );
    }
    let response = request
        .body(body)
        .send()
        .await
        .with_context(|| format!("post to {url}: is `herald serve` running?"))?;
    print_answer(response, ("call_id", &call_id), json).await
}

/// Prints Herald's answer and the id the webhook carried (`name: id`, or one JSON object); fails
/// unless Herald answered 2xx.
async fn print_answer(
    response: reqwest::Response,
    (name, id): (&str, &str),
    json: bool,
) -> anyhow::Result<()> {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if json {
        let answer = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        output::json(&json!({"status": status.as_u16(), "answer": answer, name: id}))?;
    } else {
        println!("{status} {text}");
        println!("{name}: {id}");
    }
    if !status.is_success() {
        bail!("Herald answered {status}");
    }
    Ok(())
}
