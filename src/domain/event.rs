use std::{fmt, str::FromStr};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The event types Herald knows. A workflow trigger names one of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub enum EventType {
    #[serde(rename = "whatsapp.message_received")]
    MessageReceived,
    #[serde(rename = "whatsapp.conversation_started")]
    ConversationStarted,
    #[serde(rename = "whatsapp.flow_completed")]
    FlowCompleted,
    #[serde(rename = "whatsapp.message_status")]
    MessageStatus,
    #[serde(rename = "whatsapp.window_closing")]
    WindowClosing,
    #[serde(rename = "whatsapp.template_status")]
    TemplateStatus,
    #[serde(rename = "whatsapp.quality_changed")]
    QualityChanged,
    #[serde(rename = "call.ended")]
    CallEnded,
    #[serde(rename = "schedule")]
    Schedule,
    #[serde(rename = "manual")]
    Manual,
}

impl EventType {
    pub const ALL: [EventType; 10] = [
        EventType::MessageReceived,
        EventType::ConversationStarted,
        EventType::FlowCompleted,
        EventType::MessageStatus,
        EventType::WindowClosing,
        EventType::TemplateStatus,
        EventType::QualityChanged,
        EventType::CallEnded,
        EventType::Schedule,
        EventType::Manual,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::MessageReceived => "whatsapp.message_received",
            EventType::ConversationStarted => "whatsapp.conversation_started",
            EventType::FlowCompleted => "whatsapp.flow_completed",
            EventType::MessageStatus => "whatsapp.message_status",
            EventType::WindowClosing => "whatsapp.window_closing",
            EventType::TemplateStatus => "whatsapp.template_status",
            EventType::QualityChanged => "whatsapp.quality_changed",
            EventType::CallEnded => "call.ended",
            EventType::Schedule => "schedule",
            EventType::Manual => "manual",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown event type '{0}' (known: {known})", known = EventType::ALL.map(|t| t.as_str()).join(", "))]
pub struct UnknownEventType(pub String);

impl FromStr for EventType {
    type Err = UnknownEventType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownEventType(s.to_string()))
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A CloudEvents 1.0 event in its JSON form, as stored and published.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CloudEvent {
    pub specversion: String,
    pub id: Uuid,
    /// `/whatsapp/<phone_number_id>` for WhatsApp events.
    pub source: String,
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// The customer the event is about (their id), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub time: DateTime<Utc>,
    pub datacontenttype: String,
    /// Herald's extension attribute: the sender (our phone_number_id) the event belongs to.
    pub senderid: String,
    pub data: serde_json::Value,
}

impl CloudEvent {
    /// The data a trigger filter and a run's steps see: `trigger` (the event's data) and `event`
    /// (its envelope).
    pub fn trigger_data(&self) -> serde_json::Value {
        serde_json::json!({"trigger": self.data, "event": self.envelope()})
    }

    /// The same as [`CloudEvent::trigger_data`], taking the event's data instead of copying it.
    pub fn into_trigger_data(self) -> serde_json::Value {
        let envelope = self.envelope();
        serde_json::json!({"trigger": self.data, "event": envelope})
    }

    /// The event's attributes besides its data.
    fn envelope(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "type": self.event_type,
            "source": self.source,
            "time": self.time,
            "sender_id": self.senderid,
            "subject": self.subject,
        })
    }

    pub fn new(
        event_type: EventType,
        source: String,
        sender_id: String,
        subject: Option<String>,
        time: DateTime<Utc>,
        data: serde_json::Value,
    ) -> Self {
        CloudEvent {
            specversion: "1.0".into(),
            id: Uuid::now_v7(),
            source,
            event_type,
            subject,
            time,
            datacontenttype: "application/json".into(),
            senderid: sender_id,
            data,
        }
    }

    /// The routing key on the events exchange: `<type>.<sender id>`.
    pub fn routing_key(&self) -> String {
        format!("{}.{}", self.event_type, self.senderid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_round_trip_through_their_names() {
        for t in EventType::ALL {
            assert_eq!(t.as_str().parse::<EventType>().unwrap(), t);
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{}\"", t.as_str()));
        }
        let err = "whatsapp.nope".parse::<EventType>().unwrap_err();
        assert!(err.to_string().contains("whatsapp.message_received"));
    }

    #[test]
    fn routing_key_is_type_dot_sender() {
        let e = CloudEvent::new(
            EventType::MessageReceived,
            "/whatsapp/123".into(),
            "123".into(),
            None,
            Utc::now(),
            serde_json::json!({}),
        );
        assert_eq!(e.routing_key(), "whatsapp.message_received.123");
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(json["type"], "whatsapp.message_received");
    }
}
