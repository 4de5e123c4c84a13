//! Webhook bodies as Meta sends them, built for `herald simulate`, the benchmark and tests: the
//! inverse of [`super::payload`]. Pure: no I/O.

use crate::domain::PhoneNumber;

/// The webhook body Meta sends for one inbound text message, as bytes. Written straight from
/// borrowed fields: the benchmark makes one per event on the machine it measures.
pub fn text_message_body(
    from: &PhoneNumber,
    name: &str,
    text: &str,
    sender: &str,
    wamid: &str,
) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Body<'a> {
        object: &'static str,
        entry: [Entry<'a>; 1],
    }
    #[derive(serde::Serialize)]
    struct Entry<'a> {
        id: &'static str,
        changes: [Change<'a>; 1],
    }
    #[derive(serde::Serialize)]
    struct Change<'a> {
        field: &'static str,
        value: ChangeValue<'a>,
    }
    #[derive(serde::Serialize)]
    struct ChangeValue<'a> {
        messaging_product: &'static str,
        metadata: Metadata<'a>,
        contacts: [Contact<'a>; 1],
        messages: [Message<'a>; 1],
    }
    #[derive(serde::Serialize)]
    struct Metadata<'a> {
        display_phone_number: &'static str,
        phone_number_id: &'a str,
    }
    #[derive(serde::Serialize)]
    struct Contact<'a> {
        profile: Profile<'a>,
        wa_id: &'a str,
    }
    #[derive(serde::Serialize)]
    struct Profile<'a> {
        name: &'a str,
    }
    #[derive(serde::Serialize)]
    struct Message<'a> {
        from: &'a str,
        id: &'a str,
        timestamp: String,
        #[serde(rename = "type")]
        kind: &'static str,
        text: MessageText<'a>,
    }
    #[derive(serde::Serialize)]
    struct MessageText<'a> {
        body: &'a str,
    }
    let body = Body {
        object: "whatsapp_business_account",
        entry: [Entry {
            id: "sandbox-waba",
            changes: [Change {
                field: "messages",
                value: ChangeValue {
                    messaging_product: "whatsapp",
                    metadata: Metadata {
                        display_phone_number: "15550000000",
                        phone_number_id: sender,
                    },
                    contacts: [Contact {
                        profile: Profile { name },
                        wa_id: from.digits(),
                    }],
                    messages: [Message {
                        from: from.digits(),
                        id: wamid,
                        timestamp: chrono::Utc::now().timestamp().to_string(),
                        kind: "text",
                        text: MessageText { body: text },
                    }],
                },
            }],
        }],
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn a_text_message_body_is_a_cloud_api_text_message_webhook() {
        let from = PhoneNumber::parse("+491510000057").unwrap();
        let sender = "100000000000042";
        let body: Value = serde_json::from_slice(&text_message_body(
            &from,
            "Bench Customer",
            "bench-57",
            sender,
            "wamid.x",
        ))
        .unwrap();
        let value = &body["entry"][0]["changes"][0]["value"];
        let stamp = value["messages"][0]["timestamp"].clone();
        assert!(
            stamp.as_str().is_some_and(|t| t.parse::<i64>().is_ok()),
            "{stamp}"
        );
        assert_eq!(
            body,
            json!({
                "object": "whatsapp_business_account",
                "entry": [{"id": "sandbox-waba", "changes": [{"field": "messages", "value": {
                    "messaging_product": "whatsapp",
                    "metadata": {"display_phone_number": "15550000000", "phone_number_id": sender},
                    "contacts": [{"profile": {"name": "Bench Customer"}, "wa_id": "491510000057"}],
                    "messages": [{"from": "491510000057", "id": "wamid.x", "timestamp": stamp,
                                  "type": "text", "text": {"body": "bench-57"}}]
                }}]}]
            })
        );
    }
}
