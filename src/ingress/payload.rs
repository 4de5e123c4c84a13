//! Ingress: parses a verified WhatsApp Cloud API webhook body into typed items. Pure: no I/O.
//! Whatever cannot be understood becomes a human-readable entry in [`Parsed::problems`]; only a
//! body that is not JSON or not a WhatsApp Business Account webhook at all is an error.

use std::collections::HashSet;
use std::fmt::Display;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};

/// Why a whole body is unusable.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("body is not valid JSON: {0}")]
    NotJson(String),
    #[error("not a WhatsApp Business Account webhook: {0}")]
    NotWhatsApp(String),
}

/// Everything understood in one webhook body, plus why the rest was not.
#[derive(Debug, Default)]
pub struct Parsed {
    /// Every understood item, in body order, deduplicated within the body.
    pub items: Vec<Item>,
    /// Reasons for parts that could not be understood, each prefixed with its JSON path,
    /// e.g. `entry[0].changes[1].value.messages[2]: missing id`.
    pub problems: Vec<String>,
}

/// One understood event of a webhook body.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Message(InboundMessage),
    Status(StatusUpdate),
    TemplateStatus(TemplateStatusUpdate),
    QualityUpdate(QualityUpdate),
}

/// A message a customer sent to one of our numbers (`value.messages[]`).
#[derive(Debug, Clone, PartialEq)]
pub struct InboundMessage {
    /// `metadata.phone_number_id`: our number that received the message.
    pub phone_number_id: String,
    pub display_phone_number: Option<String>,
    /// `messages[].id`.
    pub wamid: String,
    /// `from` (wa_id digits) or, for username users without a phone number, `from_user_id` (BSUID).
    pub customer_id: String,
    /// `"+"` followed by `from` when `from` is all digits.
    pub customer_phone: Option<String>,
    pub contact_name: Option<String>,
    pub timestamp: DateTime<Utc>,
    /// `text`, `button`, `button_reply`, `list_reply`, `nfm_reply`, `image`, `audio`, `voice`,
    /// `video`, `document`, `sticker`, `location`, `contacts`, `reaction`, `order`, `system`,
    /// `request_welcome` or `unsupported`.
    pub message_type: String,
    /// The fields a workflow reads as `trigger.*`.
    pub data: Map<String, Value>,
}

/// A delivery status of a message we sent (`value.statuses[]`).
#[derive(Debug, Clone, PartialEq)]
pub struct StatusUpdate {
    pub phone_number_id: String,
    /// `statuses[].id`: the wamid of our outgoing message.
    pub wamid: String,
    /// `sent`, `delivered`, `read`, `failed`, `played`, `deleted` or any other string, as received.
    pub status: String,
    pub timestamp: DateTime<Utc>,
    pub recipient_id: Option<String>,
    pub errors: Vec<GraphError>,
    /// The fields a workflow reads as `trigger.*`.
    pub data: Map<String, Value>,
}

/// An error object as Meta sends it in webhooks and in synchronous Graph API answers.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphError {
    pub code: i64,
    pub title: Option<String>,
    pub message: Option<String>,
    /// `error_data.details`.
    pub details: Option<String>,
}

/// A `message_template_status_update` change.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateStatusUpdate {
    /// `entry[].id`.
    pub waba_id: String,
    pub event: String,
    /// `message_template_id`, kept as a string whether it arrived as a number or a string.
    pub template_id: Option<String>,
    pub template_name: String,
    pub language: String,
    pub reason: Option<String>,
    pub category: Option<String>,
    /// The `value` object as received plus `waba_id`.
    pub data: Map<String, Value>,
}

/// A `phone_number_quality_update` change.
#[derive(Debug, Clone, PartialEq)]
pub struct QualityUpdate {
    /// `entry[].id`.
    pub waba_id: String,
    pub display_phone_number: String,
    pub event: String,
    pub current_limit: Option<String>,
    /// `entry[].time`.
    pub time: Option<DateTime<Utc>>,
    /// The `value` object as received plus `waba_id`.
    pub data: Map<String, Value>,
}

impl GraphError {
    /// Reads `{code, title, message, error_data: {details}}`; `None` without a usable `code`.
    pub fn from_json(v: &Value) -> Option<GraphError> {
        let obj = v.as_object()?;
        Some(GraphError {
            code: int_of(obj.get("code"))?,
            title: str_of(obj.get("title")),
            message: str_of(obj.get("message")),
            details: obj
                .get("error_data")
                .and_then(Value::as_object)
                .and_then(|d| str_of(d.get("details"))),
        })
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("code".into(), Value::from(self.code));
        m.insert("title".into(), opt(self.title.clone()));
        m.insert("message".into(), opt(self.message.clone()));
        m.insert("details".into(), opt(self.details.clone()));
        Value::Object(m)
    }
}

/// Parses a webhook body whose signature was already verified.
pub fn parse(body: &[u8]) -> Result<Parsed, PayloadError> {
    let mut root: Value =
        serde_json::from_slice(body).map_err(|e| PayloadError::NotJson(e.to_string()))?;
    // PostgreSQL keeps no NUL in text or jsonb: stored escaped, never refused.
    crate::domain::escape_nuls(&mut root);
    let Value::Object(root) = root else {
        return Err(PayloadError::NotWhatsApp(format!(
            "top level is {}, expected an object",
            kind(&root)
        )));
    };
    match root.get("object") {
        Some(Value::String(s)) if s == "whatsapp_business_account" => {}
        Some(Value::String(s)) => {
            return Err(PayloadError::NotWhatsApp(format!(
                "object is '{s}', expected 'whatsapp_business_account'"
            )));
        }
        Some(other) => {
            return Err(PayloadError::NotWhatsApp(format!(
                "object is {}, expected the string 'whatsapp_business_account'",
                kind(other)
            )));
        }
        None => return Err(PayloadError::NotWhatsApp("missing 'object'".into())),
    }
    let entries = match root.get("entry") {
        Some(Value::Array(entries)) => entries,
        Some(other) => {
            return Err(PayloadError::NotWhatsApp(format!(
                "'entry' is {}, expected an array",
                kind(other)
            )));
        }
        None => return Err(PayloadError::NotWhatsApp("missing 'entry' array".into())),
    };

    let mut c = Collector::default();
    for (i, entry) in entries.iter().enumerate() {
        c.entry(&format!("entry[{i}]"), entry);
    }
    Ok(c.parsed)
}

const MEDIA_TYPES: [&str; 6] = ["image", "audio", "voice", "video", "document", "sticker"];
const MEDIA_KEYS: [&str; 7] = [
    "id",
    "mime_type",
    "sha256",
    "caption",
    "filename",
    "animated",
    "voice",
];

/// Our number that a `messages` change is about, and the contacts it names.
struct Receiver<'a> {
    phone_number_id: String,
    display_phone_number: Option<String>,
    contacts: &'a [Value],
}

#[derive(Default)]
struct Collector {
    parsed: Parsed,
    seen_messages: HashSet<String>,
    seen_statuses: HashSet<(String, String)>,
}

impl Collector {
    fn problem(&mut self, path: &str, reason: impl Display) {
        self.parsed.problems.push(format!("{path}: {reason}"));
    }

    fn entry(&mut self, path: &str, entry: &Value) {
        let Some(entry) = entry.as_object() else {
            return self.problem(path, format_args!("is {}, expected an object", kind(entry)));
        };
        let waba_id = str_of(entry.get("id"));
        let time = entry.get("time").and_then(unix_time);
        let changes = match entry.get("changes") {
            Some(Value::Array(changes)) => changes,
            Some(other) => {
                return self.problem(
                    path,
                    format_args!("'changes' is {}, expected an array", kind(other)),
                );
            }
            None => return self.problem(path, "missing 'changes' array"),
        };
        for (i, change) in changes.iter().enumerate() {
            let path = format!("{path}.changes[{i}]");
            self.change(&path, change, waba_id.as_deref(), time);
        }
    }

    fn change(
        &mut self,
        path: &str,
        change: &Value,
        waba_id: Option<&str>,
        time: Option<DateTime<Utc>>,
    ) {
        let Some(change) = change.as_object() else {
            return self.problem(
                path,
                format_args!("is {}, expected an object", kind(change)),
            );
        };
        let field = match change.get("field") {
            Some(Value::String(f)) => f.as_str(),
            Some(other) => {
                return self.problem(
                    path,
                    format_args!("'field' is {}, expected a string", kind(other)),
                );
            }
            None => return self.problem(path, "missing 'field'"),
        };
        if !matches!(
            field,
            "messages" | "message_template_status_update" | "phone_number_quality_update"
        ) {
            return self.problem(path, format_args!("unsupported webhook field '{field}'"));
        }
        let value = match change.get("value") {
            Some(Value::Object(value)) => value,
            Some(other) => {
                return self.problem(
                    path,
                    format_args!(
                        "{field} change 'value' is {}, expected an object",
                        kind(other)
                    ),
                );
            }
            None => return self.problem(path, format_args!("{field} change without 'value'")),
        };
        let vpath = format!("{path}.value");
        match field {
            "messages" => self.messages_change(path, &vpath, value),
            other => {
                let Some(waba_id) = waba_id else {
                    return self.problem(path, format_args!("{other} change without entry id"));
                };
                let item = if other == "message_template_status_update" {
                    self.template_status(&vpath, value, waba_id)
                        .map(Item::TemplateStatus)
                } else {
                    self.quality_update(&vpath, value, waba_id, time)
                        .map(Item::QualityUpdate)
                };
                self.parsed.items.extend(item);
            }
        }
    }

    fn messages_change(&mut self, path: &str, vpath: &str, value: &Map<String, Value>) {
        let errors = value
            .get("errors")
            .filter(|e| !matches!(e, Value::Null) && !matches!(e, Value::Array(a) if a.is_empty()));
        if let Some(errors) = errors {
            self.problem(
                &format!("{vpath}.errors"),
                format_args!("webhook reports errors: {errors}"),
            );
        }
        let messages = self.array_at(vpath, value, "messages");
        let statuses = self.array_at(vpath, value, "statuses");
        if messages.is_empty() && statuses.is_empty() {
            if errors.is_none() {
                self.problem(
                    path,
                    "messages change carries no messages, statuses or errors",
                );
            }
            return;
        }
        let metadata = value.get("metadata").and_then(Value::as_object);
        let Some(phone_number_id) = metadata.and_then(|m| str_of(m.get("phone_number_id"))) else {
            return self.problem(path, "messages change without metadata.phone_number_id");
        };
        let contacts = match value.get("contacts") {
            Some(Value::Array(contacts)) => contacts.as_slice(),
            _ => &[],
        };
        let receiver = Receiver {
            phone_number_id,
            display_phone_number: metadata.and_then(|m| str_of(m.get("display_phone_number"))),
            contacts,
        };
        for (i, msg) in messages.iter().enumerate() {
            let mpath = format!("{vpath}.messages[{i}]");
            if let Some(m) = self.message(&mpath, msg, &receiver) {
                self.parsed.items.push(Item::Message(m));
            }
        }
        for (i, status) in statuses.iter().enumerate() {
            let spath = format!("{vpath}.statuses[{i}]");
            if let Some(s) = self.status(&spath, status, &receiver) {
                self.parsed.items.push(Item::Status(s));
            }
        }
    }

    /// `value[key]` as a slice; absent or null is empty, any other non-array is a problem.
    fn array_at<'v>(
        &mut self,
        vpath: &str,
        value: &'v Map<String, Value>,
        key: &str,
    ) -> &'v [Value] {
        match value.get(key) {
            Some(Value::Array(a)) => a,
            None | Some(Value::Null) => &[],
            Some(other) => {
                self.problem(
                    &format!("{vpath}.{key}"),
                    format_args!("is {}, expected an array", kind(other)),
                );
                &[]
            }
        }
    }

    fn message(&mut self, path: &str, msg: &Value, rx: &Receiver<'_>) -> Option<InboundMessage> {
        let Some(msg) = msg.as_object() else {
            self.problem(path, format_args!("is {}, expected an object", kind(msg)));
            return None;
        };
        let Some(wamid) = str_of(msg.get("id")).filter(|s| !s.is_empty()) else {
            self.problem(path, "missing id");
            return None;
        };
        if self.seen_messages.contains(&wamid) {
            return None;
        }
        let from = str_of(msg.get("from")).filter(|s| !s.is_empty());
        let Some(customer_id) = from
            .clone()
            .or_else(|| str_of(msg.get("from_user_id")).filter(|s| !s.is_empty()))
        else {
            self.problem(path, "missing from and from_user_id");
            return None;
        };
        let Some(timestamp) = msg.get("timestamp").and_then(unix_time) else {
            self.problem(path, "missing or invalid timestamp");
            return None;
        };
        let customer_phone = from.as_deref().and_then(e164);
        let contact_name = contact_name(rx.contacts, &customer_id);

        let mut data = Map::new();
        let body = self.message_body(path, msg, &mut data);
        data.insert("customer_id".into(), Value::from(customer_id.clone()));
        data.insert("customer_phone".into(), opt(customer_phone.clone()));
        data.insert("contact_name".into(), opt(contact_name.clone()));
        data.insert("sender_id".into(), Value::from(rx.phone_number_id.clone()));
        data.insert(
            "sender_display_phone".into(),
            opt(rx.display_phone_number.clone()),
        );
        data.insert("message_id".into(), Value::from(wamid.clone()));
        data.insert("timestamp".into(), Value::from(rfc3339(timestamp)));
        data.insert(
            "message_type".into(),
            Value::from(body.message_type.clone()),
        );
        data.insert("text".into(), opt(body.text));
        if let Some(context) = msg.get("context").and_then(Value::as_object) {
            let mut reply_to = Map::new();
            for (from_key, to_key) in [("id", "message_id"), ("from", "from")] {
                if let Some(v) = context.get(from_key) {
                    reply_to.insert(to_key.into(), v.clone());
                }
            }
            if !reply_to.is_empty() {
                data.insert("reply_to".into(), Value::Object(reply_to));
            }
            for key in ["forwarded", "frequently_forwarded"] {
                if let Some(b) = context.get(key).and_then(Value::as_bool) {
                    data.insert(key.into(), Value::Bool(b));
                }
            }
        }
        for key in ["referral", "errors"] {
            if let Some(v) = msg.get(key) {
                data.insert(key.into(), v.clone());
            }
        }

        self.seen_messages.insert(wamid.clone());
        Some(InboundMessage {
            phone_number_id: rx.phone_number_id.clone(),
            display_phone_number: rx.display_phone_number.clone(),
            wamid,
            customer_id,
            customer_phone,
            contact_name,
            timestamp,
            message_type: body.message_type,
            data,
        })
    }

    /// Fills the type-specific trigger fields and returns the flattened type and visible text.
    fn message_body(
        &mut self,
        path: &str,
        msg: &Map<String, Value>,
        data: &mut Map<String, Value>,
    ) -> Body {
        let ty = msg.get("type").and_then(Value::as_str);
        let part = |key: &str| msg.get(key).and_then(Value::as_object);
        match ty {
            Some("text") => Body::new("text", part("text").and_then(|t| str_of(t.get("body")))),
            Some("button") => {
                let button = part("button");
                if let Some(p) = button.and_then(|b| str_of(b.get("payload"))) {
                    data.insert("button_payload".into(), Value::from(p));
                }
                Body::new("button", button.and_then(|b| str_of(b.get("text"))))
            }
            Some("interactive") => self.interactive(path, part("interactive"), data),
            Some(t) if MEDIA_TYPES.contains(&t) => {
                let mut media = Map::new();
                if let Some(m) = part(t) {
                    for key in MEDIA_KEYS {
                        if let Some(v) = m.get(key) {
                            media.insert(key.into(), v.clone());
                        }
                    }
                }
                let caption = str_of(media.get("caption"));
                if let Some(id) = media.get("id") {
                    data.insert("media_id".into(), id.clone());
                }
                if let Some(c) = &caption {
                    data.insert("caption".into(), Value::from(c.clone()));
                }
                data.insert("media".into(), Value::Object(media));
                Body::new(t, caption)
            }
            Some("location") => {
                let location = part("location");
                if let Some(l) = location {
                    data.insert("location".into(), Value::Object(l.clone()));
                }
                Body::new("location", location.and_then(|l| str_of(l.get("name"))))
            }
            Some("contacts") => {
                if let Some(c) = msg.get("contacts") {
                    data.insert("contacts".into(), c.clone());
                }
                Body::new("contacts", None)
            }
            Some("reaction") => {
                let mut reaction = Map::new();
                if let Some(r) = part("reaction") {
                    for key in ["message_id", "emoji"] {
                        if let Some(v) = r.get(key) {
                            reaction.insert(key.into(), v.clone());
                        }
                    }
                }
                let emoji = str_of(reaction.get("emoji"));
                data.insert("reaction".into(), Value::Object(reaction));
                Body::new("reaction", emoji)
            }
            Some(t @ ("order" | "system")) => {
                if let Some(v) = msg.get(t) {
                    data.insert(t.into(), v.clone());
                }
                Body::new(t, None)
            }
            Some(t @ ("request_welcome" | "unsupported")) => Body::new(t, None),
            Some(other) => {
                data.insert("original_type".into(), Value::from(other));
                Body::new("unsupported", None)
            }
            None => {
                data.insert(
                    "original_type".into(),
                    msg.get("type").cloned().unwrap_or(Value::Null),
                );
                Body::new("unsupported", None)
            }
        }
    }

    fn interactive(
        &mut self,
        path: &str,
        interactive: Option<&Map<String, Value>>,
        data: &mut Map<String, Value>,
    ) -> Body {
        let sub = interactive
            .and_then(|i| i.get("type"))
            .and_then(Value::as_str);
        let part = |key: &str| {
            interactive
                .and_then(|i| i.get(key))
                .and_then(Value::as_object)
        };
        match sub {
            Some(t @ ("button_reply" | "list_reply")) => {
                let reply = part(t);
                let field = |key: &str| reply.and_then(|r| str_of(r.get(key)));
                let title = field("title");
                data.insert("reply_id".into(), opt(field("id")));
                data.insert("reply_title".into(), opt(title.clone()));
                if t == "list_reply" {
                    data.insert("reply_description".into(), opt(field("description")));
                }
                Body::new(t, title)
            }
            Some("nfm_reply") => {
                let nfm = part("nfm_reply");
                let field = |key: &str| nfm.and_then(|n| str_of(n.get(key)));
                let body = field("body");
                let rpath = format!("{path}.interactive.nfm_reply.response_json");
                let (raw, response) = match nfm.and_then(|n| n.get("response_json")) {
                    Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
                        Ok(Value::Object(mut o)) => {
                            // The response's own JSON may spell a NUL too (`\u0000`).
                            crate::domain::escape_nuls_in(&mut o);
                            (Value::from(s.clone()), Some(o))
                        }
                        Ok(other) => {
                            self.problem(
                                &rpath,
                                format_args!("is {}, expected a JSON object", kind(&other)),
                            );
                            (Value::from(s.clone()), None)
                        }
                        Err(e) => {
                            self.problem(&rpath, format_args!("is not valid JSON: {e}"));
                            (Value::from(s.clone()), None)
                        }
                    },
                    Some(Value::Object(o)) => (
                        Value::from(Value::Object(o.clone()).to_string()),
                        Some(o.clone()),
                    ),
                    None | Some(Value::Null) => {
                        self.problem(&rpath, "missing");
                        (Value::Null, None)
                    }
                    Some(other) => {
                        self.problem(
                            &rpath,
                            format_args!("is {}, expected a JSON string", kind(other)),
                        );
                        (other.clone(), None)
                    }
                };
                let flow_token = response.as_ref().and_then(|r| str_of(r.get("flow_token")));
                let mut flow = Map::new();
                flow.insert("name".into(), opt(field("name")));
                flow.insert("body".into(), opt(body.clone()));
                flow.insert("response_json".into(), raw);
                flow.insert(
                    "response".into(),
                    response.map_or(Value::Null, Value::Object),
                );
                flow.insert("flow_token".into(), opt(flow_token));
                data.insert("flow".into(), Value::Object(flow));
                Body::new("nfm_reply", body)
            }
            other => {
                data.insert("original_type".into(), Value::from("interactive"));
                data.insert(
                    "original_subtype".into(),
                    other.map_or(Value::Null, Value::from),
                );
                Body::new("unsupported", None)
            }
        }
    }

    fn status(&mut self, path: &str, status: &Value, rx: &Receiver<'_>) -> Option<StatusUpdate> {
        let Some(st) = status.as_object() else {
            self.problem(
                path,
                format_args!("is {}, expected an object", kind(status)),
            );
            return None;
        };
        let Some(wamid) = str_of(st.get("id")).filter(|s| !s.is_empty()) else {
            self.problem(path, "missing id");
            return None;
        };
        let Some(state) = str_of(st.get("status")).filter(|s| !s.is_empty()) else {
            self.problem(path, "missing status");
            return None;
        };
        let key = (wamid, state);
        if self.seen_statuses.contains(&key) {
            return None;
        }
        let Some(timestamp) = st.get("timestamp").and_then(unix_time) else {
            self.problem(path, "missing or invalid timestamp");
            return None;
        };
        let recipient_id = str_of(st.get("recipient_id")).filter(|s| !s.is_empty());
        let mut errors = Vec::new();
        match st.get("errors") {
            None | Some(Value::Null) => {}
            Some(Value::Array(list)) => {
                for (i, e) in list.iter().enumerate() {
                    match GraphError::from_json(e) {
                        Some(e) => errors.push(e),
                        None => self.problem(
                            &format!("{path}.errors[{i}]"),
                            format_args!("not an error object with a code: {e}"),
                        ),
                    }
                }
            }
            Some(other) => self.problem(
                &format!("{path}.errors"),
                format_args!("is {}, expected an array", kind(other)),
            ),
        }

        let (wamid, state) = key.clone();
        let mut data = Map::new();
        data.insert("message_id".into(), Value::from(wamid.clone()));
        data.insert("status".into(), Value::from(state.clone()));
        data.insert("timestamp".into(), Value::from(rfc3339(timestamp)));
        data.insert("recipient_id".into(), opt(recipient_id.clone()));
        data.insert(
            "recipient_phone".into(),
            opt(recipient_id.as_deref().and_then(e164)),
        );
        data.insert("sender_id".into(), Value::from(rx.phone_number_id.clone()));
        data.insert(
            "errors".into(),
            Value::Array(errors.iter().map(GraphError::to_json).collect()),
        );
        for k in ["conversation", "pricing", "biz_opaque_callback_data"] {
            if let Some(v) = st.get(k) {
                data.insert(k.into(), v.clone());
            }
        }

        self.seen_statuses.insert(key);
        Some(StatusUpdate {
            phone_number_id: rx.phone_number_id.clone(),
            wamid,
            status: state,
            timestamp,
            recipient_id,
            errors,
            data,
        })
    }

    fn template_status(
        &mut self,
        vpath: &str,
        value: &Map<String, Value>,
        waba_id: &str,
    ) -> Option<TemplateStatusUpdate> {
        let event = self.required(vpath, value, "event");
        let template_name = self.required(vpath, value, "message_template_name");
        let language = self.required(vpath, value, "message_template_language");
        Some(TemplateStatusUpdate {
            waba_id: waba_id.to_owned(),
            event: event?,
            template_id: str_of(value.get("message_template_id")),
            template_name: template_name?,
            language: language?,
            reason: str_of(value.get("reason")),
            category: str_of(value.get("message_template_category")),
            data: with_waba_id(value, waba_id),
        })
    }

    fn quality_update(
        &mut self,
        vpath: &str,
        value: &Map<String, Value>,
        waba_id: &str,
        time: Option<DateTime<Utc>>,
    ) -> Option<QualityUpdate> {
        let display_phone_number = self.required(vpath, value, "display_phone_number");
        let event = self.required(vpath, value, "event");
        Some(QualityUpdate {
            waba_id: waba_id.to_owned(),
            display_phone_number: display_phone_number?,
            event: event?,
            current_limit: str_of(value.get("current_limit")),
            time,
            data: with_waba_id(value, waba_id),
        })
    }

    /// A non-empty string field; a problem when it is missing.
    fn required(&mut self, vpath: &str, value: &Map<String, Value>, key: &str) -> Option<String> {
        let found = str_of(value.get(key)).filter(|s| !s.is_empty());
        if found.is_none() {
            self.problem(vpath, format_args!("missing {key}"));
        }
        found
    }
}

/// The flattened message type and its human-visible text.
struct Body {
    message_type: String,
    text: Option<String>,
}

impl Body {
    fn new(message_type: &str, text: Option<String>) -> Body {
        Body {
            message_type: message_type.to_owned(),
            text,
        }
    }
}

/// `profile.name` of the contact whose `wa_id` or `user_id` is the customer; else of the only contact.
fn contact_name(contacts: &[Value], customer_id: &str) -> Option<String> {
    let name = |c: &Value| {
        c.get("profile")
            .and_then(|p| p.get("name"))
            .and_then(|n| str_of(Some(n)))
    };
    let matching = contacts.iter().find(|c| {
        ["wa_id", "user_id"]
            .iter()
            .any(|k| str_of(c.get(k)).as_deref() == Some(customer_id))
    });
    match (matching, contacts) {
        (Some(c), _) => name(c),
        (None, [only]) => name(only),
        (None, _) => None,
    }
}

fn with_waba_id(value: &Map<String, Value>, waba_id: &str) -> Map<String, Value> {
    let mut data = value.clone();
    data.insert("waba_id".into(), Value::from(waba_id));
    data
}

/// A string, or a number rendered as a string (Meta sends some ids as numbers).
fn str_of(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// An integer, or a string holding one.
fn int_of(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Unix seconds as a string or a number; values above 10^11 are taken as milliseconds.
fn unix_time(v: &Value) -> Option<DateTime<Utc>> {
    let n = match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().and_then(float_to_i64))?,
        Value::String(s) => {
            let s = s.trim();
            s.parse::<i64>()
                .ok()
                .or_else(|| s.parse::<f64>().ok().and_then(float_to_i64))?
        }
        _ => return None,
    };
    if n > 100_000_000_000 {
        DateTime::from_timestamp_millis(n)
    } else {
        DateTime::from_timestamp(n, 0)
    }
}

fn float_to_i64(f: f64) -> Option<i64> {
    // The range check keeps the cast from saturating.
    (f.is_finite() && f.abs() < 9.0e15).then(|| f.trunc() as i64)
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// `"+"` + digits when `id` is a plain digit string.
fn e164(id: &str) -> Option<String> {
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())).then(|| format!("+{id}"))
}

fn opt(s: Option<String>) -> Value {
    s.map_or(Value::Null, Value::String)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TEXT: &[u8] = include_bytes!("../../tests/fixtures/whatsapp/01-inbound-text.json");
    const BUTTON: &[u8] =
        include_bytes!("../../tests/fixtures/whatsapp/03-template-quick-reply-button.json");
    const FLOW: &[u8] =
        include_bytes!("../../tests/fixtures/whatsapp/06-flow-completion-nfm-reply.json");
    const SENT: &[u8] = include_bytes!("../../tests/fixtures/whatsapp/08-status-sent.json");
    const FAILED: &[u8] =
        include_bytes!("../../tests/fixtures/whatsapp/10-status-failed-131047.json");
    const QUALITY: &[u8] =
        include_bytes!("../../tests/fixtures/whatsapp/12-phone-number-quality-update.json");
    const FIXTURES: [&[u8]; 6] = [TEXT, BUTTON, FLOW, SENT, FAILED, QUALITY];

    const PNID: &str = "113355779900224";
    const CUSTOMER: &str = "5511987650101";

    fn body(v: &Value) -> Vec<u8> {
        serde_json::to_vec(v).unwrap()
    }

    fn envelope(entries: Value) -> Value {
        json!({ "object": "whatsapp_business_account", "entry": entries })
    }

    /// A `messages` change value from our test number with one contact.
    fn messages_value(messages: Value) -> Value {
        json!({
            "messaging_product": "whatsapp",
            "metadata": { "display_phone_number": "15550104477", "phone_number_id": PNID },
            "contacts": [ { "profile": { "name": "Ana Souza" }, "wa_id": CUSTOMER } ],
            "messages": messages
        })
    }

    fn change_body(value: Value, field: &str) -> Vec<u8> {
        body(&envelope(json!([
            { "id": "210987654321098", "changes": [ { "value": value, "field": field } ] }
        ])))
    }

    fn messages_body(messages: Value) -> Vec<u8> {
        change_body(messages_value(messages), "messages")
    }

    fn parsed(body: &[u8]) -> Parsed {
        match parse(body) {
            Ok(p) => p,
            Err(e) => panic!("expected a parsed body, got {e}"),
        }
    }

    fn messages(p: &Parsed) -> Vec<&InboundMessage> {
        p.items
            .iter()
            .filter_map(|i| match i {
                Item::Message(m) => Some(m),
                _ => None,
            })
            .collect()
    }

    fn statuses(p: &Parsed) -> Vec<&StatusUpdate> {
        p.items
            .iter()
            .filter_map(|i| match i {
                Item::Status(s) => Some(s),
                _ => None,
            })
            .collect()
    }

    fn only_message_of(body: &[u8]) -> InboundMessage {
        let p = parsed(body);
        assert!(p.problems.is_empty(), "problems: {:?}", p.problems);
        match p.items.as_slice() {
            [Item::Message(m)] => m.clone(),
            other => panic!("expected one message, got {other:?}"),
        }
    }

    /// One synthetic message from the test customer with the given type-specific fields.
    fn only_message(ty: &str, fields: Value) -> InboundMessage {
        let mut msg = json!({
            "from": CUSTOMER, "id": "wamid.TEST1", "timestamp": "1795438800", "type": ty
        });
        if let (Some(m), Value::Object(f)) = (msg.as_object_mut(), fields) {
            m.extend(f);
        }
        only_message_of(&messages_body(json!([msg])))
    }

    fn nfm(response_json: Value) -> Value {
        json!({ "interactive": { "type": "nfm_reply", "nfm_reply": {
            "name": "flow", "body": "Sent", "response_json": response_json
        } } })
    }

    // ---- fixtures -------------------------------------------------------------------------

    #[test]
    fn text_message_with_emoji_keeps_the_unicode_text() {
        let m = only_message_of(TEXT);
        assert_eq!(m.phone_number_id, PNID);
        assert_eq!(m.display_phone_number.as_deref(), Some("15550104477"));
        assert_eq!(m.wamid, "wamid.HBgNSE9MRE9VVC1JTi1URVhULUFOQS0wMDE=");
        assert_eq!(m.customer_id, CUSTOMER);
        assert_eq!(m.customer_phone.as_deref(), Some("+5511987650101"));
        assert_eq!(m.contact_name.as_deref(), Some("Ana Souza"));
        assert_eq!(m.message_type, "text");
        assert_eq!(m.timestamp.timestamp(), 1_795_438_800);
        let text = "Hi! Can I move my appointment to Friday morning? \u{1F64F}";
        assert_eq!(m.data["text"], text);
        assert_eq!(m.data["customer_id"], CUSTOMER);
        assert_eq!(m.data["customer_phone"], "+5511987650101");
        assert_eq!(m.data["contact_name"], "Ana Souza");
        assert_eq!(m.data["sender_id"], PNID);
        assert_eq!(m.data["sender_display_phone"], "15550104477");
        assert_eq!(m.data["message_id"], m.wamid.as_str());
        assert_eq!(m.data["timestamp"], "2026-11-23T13:00:00Z");
        assert_eq!(m.data["message_type"], "text");
        assert!(!m.data.contains_key("reply_to"));
    }

    #[test]
    fn template_quick_reply_button_carries_payload_text_and_the_template_wamid() {
        let m = only_message_of(BUTTON);
        assert_eq!(m.message_type, "button");
        assert_eq!(m.data["text"], "Sim, me liguem");
        assert_eq!(m.data["button_payload"], "CALLBACK_YES");
        assert_eq!(
            m.data["reply_to"],
            json!({
                "message_id": "wamid.HBgNSE9MRE9VVC1PVVQtVEVNUExBVEUtQ0FMTEZPTExPV1VQLUFOQQ==",
                "from": "15550104477"
            })
        );
    }

    #[test]
    fn a_nul_in_a_flow_response_is_kept_escaped() {
        let raw = r#"{"flow_token": "t1", "comment": "a\u0000b", "k\u0000": 1}"#;
        let m = only_message("interactive", nfm(json!(raw)));
        assert_eq!(m.data["flow"]["response"]["comment"], "a\\u0000b");
        assert_eq!(m.data["flow"]["response"]["k\\u0000"], 1);
    }

    #[test]
    fn flow_completion_parses_response_json_and_exposes_the_flow_token() {
        let m = only_message_of(FLOW);
        assert_eq!(m.message_type, "nfm_reply");
        assert_eq!(m.contact_name.as_deref(), Some("Chloe Martin"));
        assert_eq!(m.data["text"], "Sent");
        let flow = &m.data["flow"];
        assert_eq!(flow["name"], "flow");
        assert_eq!(flow["body"], "Sent");
        assert_eq!(flow["flow_token"], "run_7f3a9c21.step_04.k2p9x");
        assert_eq!(flow["response"]["csat_score"], "4");
        assert_eq!(flow["response"]["would_recommend"], true);
        assert_eq!(
            flow["response"]["comment"],
            "Atendente foi ótima, mas a ligação caiu uma vez."
        );
        assert!(
            flow["response_json"]
                .as_str()
                .is_some_and(|s| s.starts_with('{'))
        );
        assert_eq!(
            m.data["reply_to"]["message_id"],
            "wamid.HBgNSE9MRE9VVC1PVVQtRkxPVy1DU0FULUNITE9F"
        );
    }

    #[test]
    fn sent_status_keeps_conversation_and_pricing_as_received() {
        let p = parsed(SENT);
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        let [Item::Status(s)] = p.items.as_slice() else {
            panic!("expected one status, got {:?}", p.items);
        };
        assert_eq!(s.phone_number_id, PNID);
        assert_eq!(
            s.wamid,
            "wamid.HBgNSE9MRE9VVC1PVVQtVEVYVC1SRU1JTkRFUi1BTkE="
        );
        assert_eq!(s.status, "sent");
        assert_eq!(s.timestamp.timestamp(), 1_795_439_200);
        assert_eq!(s.recipient_id.as_deref(), Some(CUSTOMER));
        assert!(s.errors.is_empty());
        assert_eq!(s.data["message_id"], s.wamid.as_str());
        assert_eq!(s.data["status"], "sent");
        assert_eq!(s.data["timestamp"], "2026-11-23T13:06:40Z");
        assert_eq!(s.data["recipient_id"], CUSTOMER);
        assert_eq!(s.data["recipient_phone"], "+5511987650101");
        assert_eq!(s.data["sender_id"], PNID);
        assert_eq!(s.data["errors"], json!([]));
        assert_eq!(s.data["conversation"]["origin"]["type"], "service");
        assert_eq!(s.data["pricing"]["pricing_model"], "CBP");
        assert!(!s.data.contains_key("biz_opaque_callback_data"));
    }

    #[test]
    fn failed_status_outside_the_window_carries_error_131047_with_details() {
        let p = parsed(FAILED);
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        let [Item::Status(s)] = p.items.as_slice() else {
            panic!("expected one status, got {:?}", p.items);
        };
        assert_eq!(s.status, "failed");
        let details = "Message failed to send because more than 24 hours have passed since the \
                       customer last replied to this number.";
        assert_eq!(
            s.errors,
            vec![GraphError {
                code: 131_047,
                title: Some("Re-engagement message".into()),
                message: Some("Re-engagement message".into()),
                details: Some(details.into()),
            }]
        );
        assert_eq!(
            s.data["errors"],
            json!([{
                "code": 131_047, "title": "Re-engagement message",
                "message": "Re-engagement message", "details": details
            }])
        );
        assert!(!s.data.contains_key("pricing"));
        assert!(!s.data.contains_key("conversation"));
    }

    #[test]
    fn flagged_quality_update_reads_event_limit_and_entry_time() {
        let p = parsed(QUALITY);
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        let [Item::QualityUpdate(q)] = p.items.as_slice() else {
            panic!("expected one quality update, got {:?}", p.items);
        };
        assert_eq!(q.waba_id, "210987654321098");
        assert_eq!(q.display_phone_number, "15550104477");
        assert_eq!(q.event, "FLAGGED");
        assert_eq!(q.current_limit.as_deref(), Some("TIER_10K"));
        assert_eq!(q.time.map(|t| t.timestamp()), Some(1_795_439_400));
        assert_eq!(q.data["event"], "FLAGGED");
        assert_eq!(q.data["waba_id"], "210987654321098");
    }

    #[test]
    fn graph_error_from_json_reads_title_message_and_details() {
        let v = json!({ "code": 131_051, "title": "Unsupported message type",
                        "error_data": { "details": "Message type is not currently supported" } });
        assert_eq!(
            GraphError::from_json(&v),
            Some(GraphError {
                code: 131_051,
                title: Some("Unsupported message type".into()),
                message: None,
                details: Some("Message type is not currently supported".into()),
            })
        );
        assert_eq!(GraphError::from_json(&json!({ "title": "no code" })), None);
        assert_eq!(GraphError::from_json(&json!([1, 2])), None);
    }

    // ---- message types --------------------------------------------------------------------

    #[test]
    fn image_with_caption_exposes_media_id_and_caption() {
        let m = only_message(
            "image",
            json!({ "image": { "caption": "my receipt", "mime_type": "image/jpeg",
                               "sha256": "abc=", "id": "1234567890", "url": "ignored" } }),
        );
        assert_eq!(m.message_type, "image");
        assert_eq!(m.data["text"], "my receipt");
        assert_eq!(m.data["caption"], "my receipt");
        assert_eq!(m.data["media_id"], "1234567890");
        assert_eq!(
            m.data["media"],
            json!({ "id": "1234567890", "mime_type": "image/jpeg", "sha256": "abc=",
                    "caption": "my receipt" })
        );
    }

    #[test]
    fn document_keeps_its_filename_in_media() {
        let m = only_message(
            "document",
            json!({ "document": { "filename": "invoice.pdf", "mime_type": "application/pdf",
                                  "sha256": "h", "id": "555" } }),
        );
        assert_eq!(m.message_type, "document");
        assert_eq!(m.data["media"]["filename"], "invoice.pdf");
        assert_eq!(m.data["media_id"], "555");
        assert_eq!(m.data["text"], Value::Null);
        assert!(!m.data.contains_key("caption"));
    }

    #[test]
    fn audio_voice_and_video_are_media_messages_of_their_own_type() {
        let audio = only_message(
            "audio",
            json!({ "audio": { "mime_type": "audio/ogg; codecs=opus", "sha256": "s",
                               "id": "a1", "voice": true } }),
        );
        assert_eq!(audio.message_type, "audio");
        assert_eq!(audio.data["media"]["voice"], true);
        assert_eq!(audio.data["media_id"], "a1");

        let voice = only_message(
            "voice",
            json!({ "voice": { "id": "v1", "mime_type": "audio/ogg" } }),
        );
        assert_eq!(voice.message_type, "voice");
        assert_eq!(
            voice.data["media"],
            json!({ "id": "v1", "mime_type": "audio/ogg" })
        );

        let video = only_message(
            "video",
            json!({ "video": { "id": "vid1", "mime_type": "video/mp4", "caption": "look" } }),
        );
        assert_eq!(video.message_type, "video");
        assert_eq!(video.data["text"], "look");
        assert_eq!(video.data["media_id"], "vid1");
    }

    #[test]
    fn animated_sticker_keeps_the_animated_flag() {
        let m = only_message(
            "sticker",
            json!({ "sticker": { "mime_type": "image/webp", "sha256": "s", "id": "st1",
                                 "animated": true } }),
        );
        assert_eq!(m.message_type, "sticker");
        assert_eq!(m.data["media"]["animated"], true);
        assert_eq!(m.data["media_id"], "st1");
        assert_eq!(m.data["text"], Value::Null);
    }

    #[test]
    fn location_is_kept_as_received_and_its_name_is_the_text() {
        let location = json!({ "latitude": -23.5505, "longitude": -46.6333,
                               "name": "Escritório", "address": "Av. Paulista, 1000" });
        let m = only_message("location", json!({ "location": location }));
        assert_eq!(m.message_type, "location");
        assert_eq!(m.data["location"], location);
        assert_eq!(m.data["text"], "Escritório");
    }

    #[test]
    fn shared_contacts_are_kept_as_received() {
        let cards = json!([{ "name": { "formatted_name": "Bruno Lima", "first_name": "Bruno" },
                             "phones": [ { "phone": "+55 21 99876-0404", "type": "CELL" } ] }]);
        let m = only_message("contacts", json!({ "contacts": cards }));
        assert_eq!(m.message_type, "contacts");
        assert_eq!(m.data["contacts"], cards);
        assert_eq!(m.data["text"], Value::Null);
        assert_eq!(m.contact_name.as_deref(), Some("Ana Souza"));
    }

    #[test]
    fn reaction_gives_the_reacted_message_and_the_emoji_as_text() {
        let m = only_message(
            "reaction",
            json!({ "reaction": { "message_id": "wamid.OUT1", "emoji": "\u{2764}\u{FE0F}" } }),
        );
        assert_eq!(m.message_type, "reaction");
        assert_eq!(
            m.data["reaction"],
            json!({ "message_id": "wamid.OUT1", "emoji": "\u{2764}\u{FE0F}" })
        );
        assert_eq!(m.data["text"], "\u{2764}\u{FE0F}");
    }

    #[test]
    fn button_reply_is_flattened_with_reply_id_and_title() {
        let m = only_message(
            "interactive",
            json!({ "interactive": { "type": "button_reply",
                                     "button_reply": { "id": "confirm", "title": "Confirmar" } },
                    "context": { "from": "15550104477", "id": "wamid.OUT2" } }),
        );
        assert_eq!(m.message_type, "button_reply");
        assert_eq!(m.data["reply_id"], "confirm");
        assert_eq!(m.data["reply_title"], "Confirmar");
        assert_eq!(m.data["text"], "Confirmar");
        assert!(!m.data.contains_key("reply_description"));
        assert_eq!(m.data["reply_to"]["message_id"], "wamid.OUT2");
    }

    #[test]
    fn list_reply_is_flattened_with_id_title_and_description() {
        let m = only_message(
            "interactive",
            json!({ "interactive": { "type": "list_reply", "list_reply": {
                "id": "slot_fri_am", "title": "Friday 9:00", "description": "Dr. Costa" } } }),
        );
        assert_eq!(m.message_type, "list_reply");
        assert_eq!(m.data["reply_id"], "slot_fri_am");
        assert_eq!(m.data["reply_title"], "Friday 9:00");
        assert_eq!(m.data["reply_description"], "Dr. Costa");
        assert_eq!(m.data["text"], "Friday 9:00");
    }

    #[test]
    fn nfm_reply_with_an_object_response_json_has_response_and_flow_token() {
        let raw = r#"{"flow_token":"run_1.step_2.n","answer":"yes"}"#;
        let m = only_message("interactive", nfm(json!(raw)));
        assert_eq!(m.message_type, "nfm_reply");
        assert_eq!(m.data["text"], "Sent");
        assert_eq!(
            m.data["flow"],
            json!({ "name": "flow", "body": "Sent", "response_json": raw,
                    "response": { "flow_token": "run_1.step_2.n", "answer": "yes" },
                    "flow_token": "run_1.step_2.n" })
        );
    }

    #[test]
    fn nfm_reply_with_a_non_object_response_json_is_an_item_and_a_problem() {
        let p = parsed(&messages_body(json!([{
            "from": CUSTOMER, "id": "wamid.NFM2", "timestamp": "1795438800",
            "type": "interactive", "interactive": nfm(json!("[1,2,3]"))["interactive"]
        }])));
        let [m] = messages(&p)[..] else {
            panic!("expected one message: {p:?}")
        };
        assert_eq!(m.message_type, "nfm_reply");
        assert_eq!(m.data["flow"]["response_json"], "[1,2,3]");
        assert_eq!(m.data["flow"]["response"], Value::Null);
        assert_eq!(m.data["flow"]["flow_token"], Value::Null);
        assert_eq!(
            p.problems,
            vec![
                "entry[0].changes[0].value.messages[0].interactive.nfm_reply.response_json: \
                 is an array, expected a JSON object"
            ]
        );
    }

    #[test]
    fn nfm_reply_with_invalid_response_json_is_an_item_and_a_problem() {
        let p = parsed(&messages_body(json!([{
            "from": CUSTOMER, "id": "wamid.NFM3", "timestamp": "1795438800",
            "type": "interactive", "interactive": nfm(json!("{\"flow_token\": "))["interactive"]
        }])));
        let [m] = messages(&p)[..] else {
            panic!("expected one message: {p:?}")
        };
        assert_eq!(m.data["flow"]["response"], Value::Null);
        assert_eq!(m.data["flow"]["response_json"], "{\"flow_token\": ");
        assert_eq!(p.problems.len(), 1);
        assert!(
            p.problems[0].contains("response_json: is not valid JSON"),
            "{:?}",
            p.problems
        );
    }

    #[test]
    fn order_and_system_messages_keep_their_objects_raw() {
        let order = json!({ "catalog_id": "cat1", "text": "please",
                            "product_items": [ { "product_retailer_id": "sku1", "quantity": 2,
                                                 "item_price": 9.9, "currency": "BRL" } ] });
        let m = only_message("order", json!({ "order": order }));
        assert_eq!(m.message_type, "order");
        assert_eq!(m.data["order"], order);

        let system = json!({ "body": "User changed number", "new_wa_id": "5511900000000",
                             "type": "user_changed_number" });
        let m = only_message("system", json!({ "system": system }));
        assert_eq!(m.message_type, "system");
        assert_eq!(m.data["system"], system);
    }

    #[test]
    fn request_welcome_is_its_own_type() {
        let m = only_message("request_welcome", json!({}));
        assert_eq!(m.message_type, "request_welcome");
        assert_eq!(m.data["text"], Value::Null);
        assert!(!m.data.contains_key("original_type"));
    }

    #[test]
    fn unsupported_message_is_an_item_carrying_its_errors() {
        let errors = json!([{ "code": 131_051, "title": "Unsupported message type",
                              "details": "Message type is not currently supported" }]);
        let m = only_message("unsupported", json!({ "errors": errors }));
        assert_eq!(m.message_type, "unsupported");
        assert_eq!(m.data["errors"], errors);
        assert!(!m.data.contains_key("original_type"));
    }

    #[test]
    fn unknown_hologram_type_becomes_unsupported_with_the_original_type() {
        let m = only_message("hologram", json!({ "hologram": { "depth": 3 } }));
        assert_eq!(m.message_type, "unsupported");
        assert_eq!(m.data["message_type"], "unsupported");
        assert_eq!(m.data["original_type"], "hologram");
        assert_eq!(m.data["text"], Value::Null);
    }

    #[test]
    fn unknown_interactive_sub_type_becomes_unsupported() {
        let m = only_message(
            "interactive",
            json!({ "interactive": { "type": "carousel_reply", "carousel_reply": {} } }),
        );
        assert_eq!(m.message_type, "unsupported");
        assert_eq!(m.data["original_type"], "interactive");
        assert_eq!(m.data["original_subtype"], "carousel_reply");
    }

    #[test]
    fn referral_and_forwarded_flags_are_exposed() {
        let referral = json!({ "source_url": "https://fb.me/ad", "source_type": "ad",
                               "source_id": "ad1", "headline": "Promo" });
        let m = only_message(
            "text",
            json!({ "text": { "body": "hi" }, "referral": referral,
                    "context": { "forwarded": true, "frequently_forwarded": false } }),
        );
        assert_eq!(m.data["referral"], referral);
        assert_eq!(m.data["forwarded"], true);
        assert_eq!(m.data["frequently_forwarded"], false);
        assert!(!m.data.contains_key("reply_to"));
    }

    // ---- batches, dedup, identities, timestamps --------------------------------------------

    #[test]
    fn batch_of_three_messages_and_two_statuses_over_two_entries_keeps_body_order() {
        let msg = |id: &str, text: &str| {
            json!({ "from": CUSTOMER, "id": id, "timestamp": "1795438800", "type": "text",
                    "text": { "body": text } })
        };
        let mut second = messages_value(json!([msg("wamid.M3", "three")]));
        second["metadata"]["phone_number_id"] = json!("999000111");
        second["statuses"] = json!([
            { "id": "wamid.O1", "status": "delivered", "timestamp": "1795438801",
              "recipient_id": CUSTOMER },
            { "id": "wamid.O1", "status": "read", "timestamp": "1795438802",
              "recipient_id": CUSTOMER }
        ]);
        let b = body(&envelope(json!([
            { "id": "waba1", "changes": [ { "field": "messages", "value":
                messages_value(json!([msg("wamid.M1", "one"), msg("wamid.M2", "two")])) } ] },
            { "id": "waba2", "changes": [ { "field": "messages", "value": second } ] }
        ])));
        let p = parsed(&b);
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        let order: Vec<String> = p
            .items
            .iter()
            .map(|i| match i {
                Item::Message(m) => format!("{}@{}", m.wamid, m.phone_number_id),
                Item::Status(s) => format!("{}:{}@{}", s.wamid, s.status, s.phone_number_id),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(
            order,
            [
                format!("wamid.M1@{PNID}"),
                format!("wamid.M2@{PNID}"),
                "wamid.M3@999000111".to_owned(),
                "wamid.O1:delivered@999000111".to_owned(),
                "wamid.O1:read@999000111".to_owned(),
            ]
        );
    }

    #[test]
    fn duplicate_wamid_within_a_body_is_emitted_once() {
        let msg = json!({ "from": CUSTOMER, "id": "wamid.DUP", "timestamp": "1795438800",
                          "type": "text", "text": { "body": "again" } });
        let b = body(&envelope(json!([
            { "id": "w", "changes": [ { "field": "messages",
                                         "value": messages_value(json!([msg, msg])) } ] },
            { "id": "w", "changes": [ { "field": "messages",
                                         "value": messages_value(json!([msg])) } ] }
        ])));
        let p = parsed(&b);
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        assert_eq!(p.items.len(), 1);
    }

    #[test]
    fn duplicate_status_of_the_same_kind_is_emitted_once() {
        let st = |status: &str| {
            json!({ "id": "wamid.O9", "status": status, "timestamp": "1795438800",
                    "recipient_id": CUSTOMER })
        };
        let mut value = messages_value(json!(null));
        value["statuses"] = json!([st("delivered"), st("delivered"), st("read")]);
        let p = parsed(&change_body(value, "messages"));
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        let kinds: Vec<&str> = statuses(&p).iter().map(|s| s.status.as_str()).collect();
        assert_eq!(kinds, ["delivered", "read"]);
    }

    #[test]
    fn timestamp_in_milliseconds_is_recognised() {
        let m = only_message_of(&messages_body(json!([{
            "from": CUSTOMER, "id": "wamid.MS", "timestamp": "1795438800123", "type": "text",
            "text": { "body": "ms" }
        }])));
        assert_eq!(m.timestamp.timestamp_millis(), 1_795_438_800_123);
        assert_eq!(m.data["timestamp"], "2026-11-23T13:00:00.123Z");
    }

    #[test]
    fn numeric_timestamp_is_accepted() {
        let m = only_message_of(&messages_body(json!([{
            "from": CUSTOMER, "id": "wamid.NUM", "timestamp": 1_795_438_800_i64, "type": "text",
            "text": { "body": "num" }
        }])));
        assert_eq!(m.timestamp.timestamp(), 1_795_438_800);
        assert_eq!(m.data["timestamp"], "2026-11-23T13:00:00Z");
    }

    #[test]
    fn username_user_without_from_is_identified_by_the_bsuid() {
        let mut value = messages_value(json!([{
            "from": "", "from_user_id": "US.13491208655302741918", "id": "wamid.BSUID",
            "timestamp": "1795438800", "type": "text", "text": { "body": "hello" }
        }]));
        value["contacts"] = json!([
            { "profile": { "name": "Someone Else" }, "wa_id": "5511000000000" },
            { "profile": { "name": "Nameless Fan" }, "user_id": "US.13491208655302741918" }
        ]);
        let m = only_message_of(&change_body(value, "messages"));
        assert_eq!(m.customer_id, "US.13491208655302741918");
        assert_eq!(m.customer_phone, None);
        assert_eq!(m.data["customer_phone"], Value::Null);
        assert_eq!(m.contact_name.as_deref(), Some("Nameless Fan"));
    }

    #[test]
    fn contact_name_falls_back_to_the_single_contact_and_is_null_when_ambiguous() {
        let mut value = messages_value(json!([{
            "from": "447700900311", "id": "wamid.C1", "timestamp": "1795438800",
            "type": "text", "text": { "body": "x" }
        }]));
        let m = only_message_of(&change_body(value.clone(), "messages"));
        assert_eq!(m.contact_name.as_deref(), Some("Ana Souza"));

        value["contacts"] = json!([
            { "profile": { "name": "A" }, "wa_id": "1" },
            { "profile": { "name": "B" }, "wa_id": "2" }
        ]);
        let m = only_message_of(&change_body(value, "messages"));
        assert_eq!(m.contact_name, None);
        assert_eq!(m.data["contact_name"], Value::Null);
    }

    #[test]
    fn message_without_id_is_a_problem_and_the_others_are_still_parsed() {
        let p = parsed(&messages_body(json!([
            { "from": CUSTOMER, "id": "wamid.OK1", "timestamp": "1795438800", "type": "text",
              "text": { "body": "a" } },
            { "from": CUSTOMER, "timestamp": "1795438800", "type": "text", "text": { "body": "b" } },
            { "from": CUSTOMER, "id": "wamid.OK2", "timestamp": "1795438800", "type": "text",
              "text": { "body": "c" } }
        ])));
        assert_eq!(
            p.problems,
            ["entry[0].changes[0].value.messages[1]: missing id"]
        );
        let ids: Vec<&str> = messages(&p).iter().map(|m| m.wamid.as_str()).collect();
        assert_eq!(ids, ["wamid.OK1", "wamid.OK2"]);
    }

    #[test]
    fn message_without_any_customer_id_or_timestamp_is_skipped_with_a_problem() {
        let p = parsed(&messages_body(json!([
            { "id": "wamid.NOFROM", "timestamp": "1795438800", "type": "text" },
            { "from": CUSTOMER, "id": "wamid.NOTS", "type": "text" },
            { "from": CUSTOMER, "id": "wamid.BADTS", "timestamp": "yesterday", "type": "text" }
        ])));
        assert!(p.items.is_empty());
        assert_eq!(
            p.problems,
            [
                "entry[0].changes[0].value.messages[0]: missing from and from_user_id",
                "entry[0].changes[0].value.messages[1]: missing or invalid timestamp",
                "entry[0].changes[0].value.messages[2]: missing or invalid timestamp",
            ]
        );
    }

    #[test]
    fn messages_change_without_phone_number_id_is_a_problem() {
        let mut value = messages_value(json!([{
            "from": CUSTOMER, "id": "wamid.X", "timestamp": "1795438800", "type": "text"
        }]));
        value["metadata"] = json!({ "display_phone_number": "15550104477" });
        let p = parsed(&change_body(value, "messages"));
        assert!(p.items.is_empty());
        assert_eq!(
            p.problems,
            ["entry[0].changes[0]: messages change without metadata.phone_number_id"]
        );
    }

    #[test]
    fn unknown_webhook_field_is_a_problem_naming_the_field() {
        let p = parsed(&change_body(json!({ "alert": "x" }), "account_alerts"));
        assert!(p.items.is_empty());
        assert_eq!(
            p.problems,
            ["entry[0].changes[0]: unsupported webhook field 'account_alerts'"]
        );
    }

    #[test]
    fn change_without_value_is_a_problem() {
        let b = body(&envelope(
            json!([{ "id": "w", "changes": [ { "field": "messages" } ] }]),
        ));
        let p = parsed(&b);
        assert!(p.items.is_empty());
        assert_eq!(
            p.problems,
            ["entry[0].changes[0]: messages change without 'value'"]
        );
    }

    #[test]
    fn errors_only_messages_change_is_a_problem_quoting_the_errors() {
        let mut value = messages_value(json!(null));
        value["errors"] =
            json!([{ "code": 0, "title": "We were unable to authenticate the app user" }]);
        let p = parsed(&change_body(value, "messages"));
        assert!(p.items.is_empty());
        assert_eq!(p.problems.len(), 1);
        assert!(p.problems[0].starts_with("entry[0].changes[0].value.errors: "));
        assert!(p.problems[0].contains("unable to authenticate the app user"));
    }

    #[test]
    fn empty_messages_change_is_a_problem() {
        let p = parsed(&change_body(messages_value(json!([])), "messages"));
        assert!(p.items.is_empty());
        assert_eq!(
            p.problems,
            ["entry[0].changes[0]: messages change carries no messages, statuses or errors"]
        );
    }

    #[test]
    fn template_status_update_keeps_a_numeric_template_id_as_a_string() {
        let value = json!({ "event": "PAUSED", "message_template_id": 1_689_556_908_129_832_i64,
                            "message_template_name": "order_confirmation",
                            "message_template_language": "en_US", "reason": null,
                            "message_template_category": "UTILITY",
                            "other_info": { "title": "FIRST_PAUSE", "description": "low quality" } });
        let p = parsed(&change_body(
            value.clone(),
            "message_template_status_update",
        ));
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        let [Item::TemplateStatus(t)] = p.items.as_slice() else {
            panic!("expected one template status, got {:?}", p.items);
        };
        assert_eq!(t.waba_id, "210987654321098");
        assert_eq!(t.event, "PAUSED");
        assert_eq!(t.template_id.as_deref(), Some("1689556908129832"));
        assert_eq!(t.template_name, "order_confirmation");
        assert_eq!(t.language, "en_US");
        assert_eq!(t.reason, None);
        assert_eq!(t.category.as_deref(), Some("UTILITY"));
        let mut expected = value.as_object().cloned().unwrap_or_default();
        expected.insert("waba_id".into(), json!("210987654321098"));
        assert_eq!(t.data, expected);
    }

    #[test]
    fn template_status_update_without_a_name_is_a_problem() {
        let value = json!({ "event": "APPROVED", "message_template_id": "42",
                            "message_template_language": "pt_BR", "reason": "NONE" });
        let p = parsed(&change_body(value, "message_template_status_update"));
        assert!(p.items.is_empty());
        assert_eq!(
            p.problems,
            ["entry[0].changes[0].value: missing message_template_name"]
        );
    }

    // ---- whole-body errors ----------------------------------------------------------------

    #[test]
    fn body_that_is_not_json_is_rejected_as_not_json() {
        assert!(matches!(parse(b"hello"), Err(PayloadError::NotJson(_))));
        assert!(matches!(parse(b""), Err(PayloadError::NotJson(_))));
        assert!(matches!(
            parse(&TEXT[..TEXT.len() / 2]),
            Err(PayloadError::NotJson(_))
        ));
    }

    #[test]
    fn non_utf8_bytes_are_rejected_as_not_json() {
        assert!(matches!(
            parse(b"\xff\xfe\x00{"),
            Err(PayloadError::NotJson(_))
        ));
        let b = b"{\"object\":\"whatsapp_business_account\",\"entry\":[\"\xc3\x28\"]}";
        assert!(matches!(parse(b), Err(PayloadError::NotJson(_))));
    }

    #[test]
    fn json_array_at_the_top_level_is_not_a_whatsapp_webhook() {
        let e = parse(b"[{\"object\":\"whatsapp_business_account\"}]").unwrap_err();
        assert_eq!(
            e.to_string(),
            "not a WhatsApp Business Account webhook: top level is an array, expected an object"
        );
    }

    #[test]
    fn other_object_kinds_and_missing_entry_are_not_whatsapp_webhooks() {
        for b in [
            &br#"{"object":"page","entry":[]}"#[..],
            br#"{"object":"instagram","entry":[]}"#,
            br#"{"object":5,"entry":[]}"#,
            br#"{"entry":[]}"#,
            br#"{"object":"whatsapp_business_account"}"#,
            br#"{"object":"whatsapp_business_account","entry":{}}"#,
        ] {
            assert!(
                matches!(parse(b), Err(PayloadError::NotWhatsApp(_))),
                "{}",
                String::from_utf8_lossy(b)
            );
        }
        let e = parse(br#"{"object":"page","entry":[]}"#).unwrap_err();
        assert!(e.to_string().contains("'page'"), "{e}");
    }

    #[test]
    fn empty_entry_array_parses_to_nothing() {
        let p = parsed(br#"{"object":"whatsapp_business_account","entry":[]}"#);
        assert!(p.items.is_empty() && p.problems.is_empty());
    }

    // ---- robustness -----------------------------------------------------------------------

    #[test]
    fn odd_shapes_become_problems_not_panics() {
        let b = body(&envelope(json!([
            null, 5, "x", [], {},
            { "id": [1], "changes": {} },
            { "id": "w", "changes": [ null, 1, [], {}, { "field": 7 },
                { "field": "messages", "value": [] },
                { "field": "messages", "value": { "messages": {}, "statuses": "s" } },
                { "field": "messages", "value": { "metadata": { "phone_number_id": 12 },
                    "contacts": "nope",
                    "messages": [ null, [], 3, { "id": 5, "from": 7, "timestamp": [],
                                                 "type": {} },
                                  { "id": "m", "from": 123, "timestamp": 1.5e9,
                                    "type": "interactive", "interactive": [] },
                                  { "id": "m2", "from": "1", "timestamp": "-5",
                                    "type": "image", "image": "x", "context": [] } ],
                    "statuses": [ null, { "id": "s", "status": 3, "timestamp": "1",
                                          "errors": [ 1, { "code": "x" } ] },
                                  { "id": "s", "status": "read", "timestamp": "1",
                                    "errors": { "code": 1 } } ] } },
                { "field": "message_template_status_update", "value": { "event": [] } },
                { "field": "phone_number_quality_update", "value": {} }
            ] }
        ])));
        let p = parsed(&b);
        assert!(!p.problems.is_empty());
        let ids: Vec<&str> = messages(&p).iter().map(|m| m.wamid.as_str()).collect();
        assert_eq!(ids, ["m", "m2"]);
        assert_eq!(messages(&p)[0].customer_phone.as_deref(), Some("+123"));
        assert_eq!(messages(&p)[0].message_type, "unsupported");
        assert_eq!(statuses(&p).len(), 2);
    }

    #[test]
    fn deeply_nested_junk_is_rejected_without_overflowing_the_stack() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(
            parse(deep.as_bytes()),
            Err(PayloadError::NotJson(_))
        ));
        let mut v = json!("leaf");
        for _ in 0..40 {
            v = json!({ "messages": [v], "value": "junk" });
        }
        let p = parsed(&change_body(v, "messages"));
        assert!(!p.problems.is_empty());
    }

    #[test]
    fn every_truncation_of_every_fixture_parses_or_errors_without_panicking() {
        for fixture in FIXTURES {
            for len in 0..fixture.len() {
                let _ = parse(&fixture[..len]);
            }
        }
    }

    /// Replaces each node of `v` in turn by each odd value and parses the result.
    fn mutate_everywhere(root: &Value, at: &mut Vec<PathStep>, node: &Value) {
        let odd = [
            Value::Null,
            json!(0),
            json!(-1),
            json!(1e300),
            json!(""),
            json!("x"),
            json!([]),
            json!([null]),
            json!({}),
            json!(true),
        ];
        for replacement in &odd {
            let mut copy = root.clone();
            if let Some(slot) = slot_at(&mut copy, at) {
                *slot = replacement.clone();
            }
            let _ = parse(&body(&copy));
        }
        match node {
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    at.push(PathStep::Index(i));
                    mutate_everywhere(root, at, child);
                    at.pop();
                }
            }
            Value::Object(map) => {
                for (k, child) in map {
                    at.push(PathStep::Key(k.clone()));
                    mutate_everywhere(root, at, child);
                    at.pop();
                }
            }
            _ => {}
        }
    }

    enum PathStep {
        Index(usize),
        Key(String),
    }

    fn slot_at<'v>(v: &'v mut Value, at: &[PathStep]) -> Option<&'v mut Value> {
        let mut cur = v;
        for step in at {
            cur = match step {
                PathStep::Index(i) => cur.get_mut(*i)?,
                PathStep::Key(k) => cur.get_mut(k.as_str())?,
            };
        }
        Some(cur)
    }

    #[test]
    fn replacing_any_node_of_any_fixture_with_an_odd_value_never_panics() {
        for fixture in FIXTURES {
            let root: Value = serde_json::from_slice(fixture).unwrap();
            mutate_everywhere(&root, &mut Vec::new(), &root);
        }
    }

    /// A small deterministic generator (xorshift) so the fuzz test needs no extra crate.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
            let i = usize::try_from(self.below(from.len() as u64)).unwrap_or(0);
            from.get(i).copied().unwrap_or("")
        }

        fn value(&mut self, depth: u32) -> Value {
            const KEYS: [&str; 24] = [
                "object",
                "entry",
                "id",
                "changes",
                "field",
                "value",
                "metadata",
                "phone_number_id",
                "messages",
                "statuses",
                "contacts",
                "from",
                "from_user_id",
                "timestamp",
                "type",
                "text",
                "body",
                "interactive",
                "nfm_reply",
                "response_json",
                "errors",
                "code",
                "status",
                "wa_id",
            ];
            const STRINGS: [&str; 16] = [
                "whatsapp_business_account",
                "messages",
                "message_template_status_update",
                "phone_number_quality_update",
                "text",
                "interactive",
                "nfm_reply",
                "button_reply",
                "image",
                "unsupported",
                "1795438800",
                "1795438800123",
                "{\"flow_token\":1}",
                "",
                "é\u{1F64F}",
                "(#1) x",
            ];
            let leaf = depth == 0 || self.below(3) == 0;
            match (leaf, self.below(7)) {
                (true, 0) => Value::Null,
                (true, 1) => Value::Bool(self.below(2) == 0),
                (true, 2) => json!(self.next() as i64),
                (true, 3) => {
                    json!(f64::from(u32::try_from(self.below(1 << 20)).unwrap_or(0)) / 7.0)
                }
                (true, _) => json!(self.pick(&STRINGS)),
                (false, 0..=2) => {
                    let n = self.below(4);
                    Value::Array((0..n).map(|_| self.value(depth - 1)).collect())
                }
                (false, _) => {
                    let n = self.below(6);
                    let mut m = Map::new();
                    for _ in 0..n {
                        let k = self.pick(&KEYS);
                        m.insert(k.to_owned(), self.value(depth - 1));
                    }
                    Value::Object(m)
                }
            }
        }
    }

    #[test]
    fn random_json_shapes_never_panic() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..3000 {
            let mut v = rng.value(7);
            if rng.below(4) != 0 {
                v = json!({ "object": "whatsapp_business_account", "entry": [
                    { "id": "w", "time": rng.value(1), "changes": [
                        { "field": rng.pick(&["messages", "phone_number_quality_update",
                                              "message_template_status_update", "x"]),
                          "value": v } ] } ] });
            }
            let _ = parse(&body(&v));
        }
    }
}
