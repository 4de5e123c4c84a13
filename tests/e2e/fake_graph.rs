//! A fake Graph API speaking the Cloud API's documented request and response shapes.

use std::time::Duration;

use serde_json::json;
use wiremock::{
    Mock, MockServer, Request, Respond, ResponseTemplate,
    matchers::{header, method, path_regex},
};

use super::harness::ACCESS_TOKEN;

/// Accepts a message: `{"messages": [{"id": "wamid.<unique>"}]}`.
pub struct Accept {
    pub delay: Duration,
}

impl Respond for Accept {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap_or_default();
        let to = body["to"].as_str().unwrap_or_default().to_string();
        ResponseTemplate::new(200)
            .set_body_json(json!({
                "messaging_product": "whatsapp",
                "contacts": [{"input": to, "wa_id": to}],
                "messages": [{"id": format!("wamid.FAKE{}", uuid::Uuid::now_v7().simple())}],
            }))
            .set_delay(self.delay)
    }
}

fn messages() -> wiremock::MockBuilder {
    Mock::given(method("POST"))
        .and(path_regex(r"^/\d+/messages$"))
        .and(header(
            "authorization",
            format!("Bearer {ACCESS_TOKEN}").as_str(),
        ))
}

pub async fn accept_all(server: &MockServer) {
    messages()
        .respond_with(Accept {
            delay: Duration::ZERO,
        })
        .mount(server)
        .await;
}

/// The first send hangs for `delay`; the rest are accepted at once.
pub async fn first_send_hangs(server: &MockServer, delay: Duration) {
    messages()
        .respond_with(Accept { delay })
        .up_to_n_times(1)
        .with_priority(1)
        .mount(server)
        .await;
    accept_all(server).await;
}

/// Every send fails with the given HTTP status and Graph error body.
pub async fn fail_with(server: &MockServer, status: u16, body: &[u8]) {
    messages()
        .respond_with(ResponseTemplate::new(status).set_body_raw(body.to_vec(), "application/json"))
        .mount(server)
        .await;
}
