//! Limits on every door: a request that cannot authenticate is refused with 401 before its
//! body is read, bodies are held to their route's limit (413), slow clients are cut off, and
//! requests beyond `HERALD_HTTP_CONCURRENCY` are refused at once with 503.

use std::time::{Duration, Instant};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::harness::{Options, TestApp, spawn_app};

const API_TOKEN: &str = "test-api-token";
const CALLS_TOKEN: &str = "test-calls-token";

async fn app(env: Vec<(&'static str, String)>) -> TestApp {
    let mut all = vec![
        ("HERALD_MAX_BODY_BYTES", "1024".to_string()),
        ("HERALD_API_TOKEN", API_TOKEN.into()),
        ("HERALD_CALLS_TOKEN", CALLS_TOKEN.into()),
    ];
    all.extend(env);
    spawn_app(Options {
        env: all,
        ..Default::default()
    })
    .await
}

/// Sends `head` (a request line and headers, without the blank line's end) and whatever of the
/// body follows, and returns the connection.
async fn raw(app: &TestApp, head: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(app.addr).await.unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp
}

/// What the server writes back until it closes the connection or `limit` passes.
async fn answer_of(tcp: &mut TcpStream, limit: Duration) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, tcp.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Announces a 4 MiB body to `path` with `headers` but sends only 1 KiB of it, and returns
/// the answer: one that comes proves the server decided without reading the body (else it
/// would wait for the rest until the request timeout).
async fn answer_to_an_unsent_body(app: &TestApp, path: &str, headers: &str) -> String {
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: herald\r\ncontent-type: application/json\r\n{headers}\
         content-length: {}\r\n\r\n",
        4 * 1024 * 1024
    );
    let mut tcp = raw(app, &head).await;
    tcp.write_all(&[b' '; 1024]).await.unwrap();
    let answer = answer_of(&mut tcp, Duration::from_secs(10)).await;
    answer.lines().next().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_without_a_signature_gets_401_before_its_oversized_body_is_read() {
    let app = app(vec![]).await;
    for signature in [
        "",
        "x-hub-signature-256: sha256=not-hex\r\n",
        "x-hub-signature-256: md5=abc\r\n",
    ] {
        let status = answer_to_an_unsent_body(&app, "/webhooks/whatsapp", signature).await;
        assert_eq!(status, "HTTP/1.1 401 Unauthorized", "{signature:?}");
    }
    // Over the limit with a well-formed signature: 413, unread too (by Content-Length).
    let signed = format!("x-hub-signature-256: sha256={}\r\n", "0".repeat(64));
    let status = answer_to_an_unsent_body(&app, "/webhooks/whatsapp", &signed).await;
    assert_eq!(status, "HTTP/1.1 413 Payload Too Large");
    assert_eq!(app.count("SELECT count(*) FROM quarantine").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM events").await, 0);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_webhook_body_over_the_limit_gets_413_while_it_is_read() {
    let app = app(vec![]).await;
    let head = format!(
        "POST /webhooks/whatsapp HTTP/1.1\r\nhost: herald\r\nx-hub-signature-256: sha256={}\r\n\
         transfer-encoding: chunked\r\nconnection: close\r\n\r\n",
        "0".repeat(64)
    );
    let mut tcp = raw(&app, &head).await;
    let chunk = format!("{:x}\r\n{}\r\n", 800, "x".repeat(800));
    for _ in 0..3 {
        let _ = tcp.write_all(chunk.as_bytes()).await;
    }
    let _ = tcp.write_all(b"0\r\n\r\n").await;
    let answer = answer_of(&mut tcp, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_without_credentials_gets_401_before_its_oversized_body_is_read() {
    let app = app(vec![]).await;
    for auth in ["", "authorization: Bearer wrong-token\r\n"] {
        let status = answer_to_an_unsent_body(&app, "/webhooks/calls", auth).await;
        assert_eq!(status, "HTTP/1.1 401 Unauthorized", "{auth:?}");
    }
    let token = format!("authorization: Bearer {CALLS_TOKEN}\r\n");
    let status = answer_to_an_unsent_body(&app, "/webhooks/calls", &token).await;
    assert_eq!(
        status, "HTTP/1.1 413 Payload Too Large",
        "the right token, too large a body"
    );
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_bodies_are_held_to_their_route_s_limit_after_the_token_is_checked() {
    let app = app(vec![(
        "HERALD_MAX_IMPORT_BYTES",
        (3 * 1024 * 1024).to_string(),
    )])
    .await;
    let two_mib = vec![b' '; 2 * 1024 * 1024];
    let post = |path: &str, body: Vec<u8>, token: Option<&str>| {
        let mut request = app.http.post(app.url(path)).body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    // No token: 401 whatever the size, before the body is read.
    let status = answer_to_an_unsent_body(&app, "/api/v1/contacts", "").await;
    assert_eq!(status, "HTTP/1.1 401 Unauthorized");
    // A JSON body over 1 MiB: 413, as JSON.
    let response = post("/api/v1/contacts", two_mib.clone(), Some(API_TOKEN))
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "too_large");
    // The CSV import reads 2 MiB (and judges it), but not 4.
    let mut csv = b"phone,name\n+4915100000601,".to_vec();
    csv.extend(std::iter::repeat_n(b'a', 2 * 1024 * 1024));
    csv.push(b'\n');
    let response = post("/api/v1/contacts/import", csv, Some(API_TOKEN))
        .await
        .unwrap();
    assert_ne!(
        response.status(),
        413,
        "the import has its own, larger limit"
    );
    assert!(
        response.status() == 200 || response.status() == 422,
        "{}",
        response.status()
    );
    let response = post(
        "/api/v1/contacts/import",
        vec![b'a'; 4 * 1024 * 1024],
        Some(API_TOKEN),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 413);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_too_slow_to_send_its_headers_is_cut_off() {
    let app = app(vec![("HERALD_HTTP_HEADER_TIMEOUT", "300ms".into())]).await;
    let started = Instant::now();
    let mut tcp = raw(&app, "POST /webhooks/whatsapp HTTP/1.1\r\nhost: herald\r\n").await;
    let answer = answer_of(&mut tcp, Duration::from_secs(10)).await;
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(5),
        "the connection stayed open {waited:?}"
    );
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_body_never_comes_is_answered_503_after_the_request_timeout() {
    let app = app(vec![("HERALD_HTTP_REQUEST_TIMEOUT", "500ms".into())]).await;
    let head = format!(
        "POST /webhooks/whatsapp HTTP/1.1\r\nhost: herald\r\nx-hub-signature-256: sha256={}\r\n\
         content-length: 100\r\n\r\n",
        "0".repeat(64)
    );
    let started = Instant::now();
    let mut tcp = raw(&app, &head).await;
    let answer = answer_of(&mut tcp, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(started.elapsed() >= Duration::from_millis(500));
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_concurrency_limit_get_503_at_once_while_probes_still_answer() {
    let app = app(vec![("HERALD_HTTP_CONCURRENCY", "1".into())]).await;
    // One request in flight, waiting for a body that does not come.
    let head = format!(
        "POST /webhooks/whatsapp HTTP/1.1\r\nhost: herald\r\nx-hub-signature-256: sha256={}\r\n\
         content-length: 100\r\n\r\n",
        "0".repeat(64)
    );
    let held = raw(&app, &head).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let response = app
        .http
        .get(app.url("/api/v1/workflows"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "busy");
    let health = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200, "probes are not counted");
    // Once the held request is gone, the door opens again.
    drop(held);
    super::harness::eventually("the permit is given back", || async {
        app.http
            .get(app.url("/api/v1/workflows"))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    app.cleanup().await;
}
