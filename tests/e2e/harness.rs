//! One `spawn_app()` for every black-box test: a fresh PostgreSQL database, a unique RabbitMQ
//! name prefix, Herald bound to port 0, and (optionally) a fake Graph API and TCP proxies in
//! front of PostgreSQL and RabbitMQ to cut them off on command. Everything is removed at the end.

use std::{collections::HashMap, future::Future, path::PathBuf, time::Duration};

use herald::{
    app::{self, Role, Running},
    config::Config,
    ingress::signature,
    workflow,
};
use serde_json::Value;
use sqlx::{Connection, PgConnection, PgPool};
use wiremock::MockServer;

use super::proxy::Proxy;

pub const APP_SECRET: &str = "test-app-secret";
pub const ACCESS_TOKEN: &str = "test-access-token";
pub const SENDER: &str = "113355779900224";

fn admin_url() -> String {
    std::env::var("HERALD_TEST_ADMIN_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn amqp_addr() -> String {
    std::env::var("HERALD_TEST_AMQP_ADDR").unwrap_or_else(|_| "127.0.0.1:5672".into())
}

#[derive(Default)]
pub struct Options {
    /// Workflow files (YAML text) for this app.
    pub workflows: Vec<&'static str>,
    /// Send through a fake Graph API instead of the sandbox.
    pub graph: bool,
    /// Put TCP proxies in front of RabbitMQ / PostgreSQL so a test can cut them off.
    pub amqp_proxy: bool,
    pub pg_proxy: bool,
    /// Extra configuration variables.
    pub env: Vec<(&'static str, String)>,
    /// Roles of the first instance (default: all).
    pub roles: Vec<Role>,
    /// `assistants.yaml` text (`HERALD_ASSISTANTS`); default: no assistants.
    pub assistants_yaml: Option<String>,
    /// `templates.yaml` text (`HERALD_TEMPLATES`); default: none (no run-time template check).
    pub templates_yaml: Option<String>,
}

pub struct TestApp {
    pub addr: std::net::SocketAddr,
    pub pool: PgPool,
    pub vars: HashMap<String, String>,
    pub workflows_dir: PathBuf,
    pub graph: Option<MockServer>,
    pub amqp_proxy: Option<Proxy>,
    pub pg_proxy: Option<Proxy>,
    pub http: reqwest::Client,
    running: Vec<Running>,
    db_name: String,
    prefix: String,
}

impl TestApp {
    pub fn config(&self) -> Config {
        Config::from_lookup(|k| self.vars.get(k).cloned()).expect("test config")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Starts one more Herald instance inside this test process (its own connections, roles and
    /// tasks; not an OS process) on the same database and broker names.
    pub async fn start_more(&mut self, roles: &[Role]) -> std::net::SocketAddr {
        let workflows = workflow::load_dir(&self.workflows_dir).expect("workflows");
        let running = app::start(self.config(), roles, workflows)
            .await
            .expect("start another herald");
        let addr = running.addr;
        self.running.push(running);
        addr
    }

    /// Stops every running Herald gracefully (the database and broker names stay).
    pub async fn stop_all(&mut self) {
        while let Some(r) = self.running.pop() {
            let bus = r.bus.clone();
            r.shutdown().await;
            bus.close().await;
        }
    }

    /// Stores an event and publishes it on the events exchange, as an ingress would.
    pub async fn publish_event(
        &self,
        event_type: herald::domain::EventType,
        sender: &str,
        subject: Option<&str>,
        data: Value,
    ) -> uuid::Uuid {
        let event = herald::domain::CloudEvent::new(
            event_type,
            format!("/test/{sender}"),
            sender.to_string(),
            subject.map(str::to_string),
            chrono::Utc::now(),
            data,
        );
        let body = serde_json::to_value(&event).unwrap();
        sqlx::query(
            "INSERT INTO events (id, type, sender_id, subject, dedup_key, cloudevent) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(event.id)
        .bind(event.event_type.as_str())
        .bind(&event.senderid)
        .bind(&event.subject)
        .bind(format!("test:{}", event.id))
        .bind(&body)
        .execute(&self.pool)
        .await
        .expect("store event");
        let bus = herald::bus::Bus::new(&self.config());
        bus.publish(
            herald::bus::Destination::Events,
            &event.routing_key(),
            &serde_json::to_vec(&body).unwrap(),
        )
        .await
        .expect("publish event");
        bus.close().await;
        event.id
    }

    /// Posts a webhook body signed with the app secret.
    pub async fn post_webhook(&self, body: &[u8]) -> reqwest::Response {
        let sig = signature::sign(APP_SECRET.as_bytes(), body);
        self.http
            .post(self.url("/webhooks/whatsapp"))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", sig)
            .body(body.to_vec())
            .send()
            .await
            .expect("post webhook")
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
            .fetch_one(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Requests the fake Graph API received on `POST /{sender}/messages`.
    pub async fn sends(&self) -> Vec<Value> {
        let Some(graph) = &self.graph else {
            return Vec::new();
        };
        graph
            .received_requests()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.url.path().ends_with("/messages"))
            .map(|r| serde_json::from_slice(&r.body).unwrap_or(Value::Null))
            .collect()
    }

    pub fn names_prefix(&self) -> &str {
        &self.prefix
    }

    /// Stops every Herald, removes the broker names and drops the database.
    pub async fn cleanup(mut self) {
        while let Some(r) = self.running.pop() {
            let bus = r.bus.clone();
            r.shutdown().await;
            bus.close().await;
        }
        // The exchange and queues, over a connection of their own straight to the broker: the
        // processes' own may have died with the test, or go through a proxy the test cut.
        let mut direct = self.vars.clone();
        direct.insert(
            "HERALD_AMQP_URL".into(),
            format!("amqp://guest:guest@{}/%2f", amqp_addr()),
        );
        let bus = herald::bus::Bus::new(
            &Config::from_lookup(|k| direct.get(k).cloned()).expect("test config"),
        );
        if let Err(e) = bus.delete_topology().await {
            eprintln!("warning: RabbitMQ names {}.* left behind: {e}", self.prefix);
        }
        bus.close().await;
        // Bounded: the database is dropped WITH (FORCE) below whatever the pool still holds.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.pool.close()).await;
        let _ = std::fs::remove_dir_all(&self.workflows_dir);
        if let Ok(mut admin) = PgConnection::connect(&admin_url()).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.db_name
            )))
            .execute(&mut admin)
            .await;
        }
    }
}

pub async fn spawn_app(options: Options) -> TestApp {
    let id = uuid::Uuid::now_v7().simple().to_string();
    let db_name = format!("herald_test_{id}");
    let mut admin = PgConnection::connect(&admin_url())
        .await
        .expect("connect admin db");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db_name}")))
        .execute(&mut admin)
        .await
        .expect("create test database");
    let pg_proxy = if options.pg_proxy {
        Some(Proxy::start("127.0.0.1:5432").await)
    } else {
        None
    };
    let amqp_proxy = if options.amqp_proxy {
        Some(Proxy::start(&amqp_addr()).await)
    } else {
        None
    };
    let pg_host = pg_proxy
        .as_ref()
        .map(|p| p.addr.to_string())
        .unwrap_or_else(|| "127.0.0.1:5432".into());
    let amqp_host = amqp_proxy
        .as_ref()
        .map(|p| p.addr.to_string())
        .unwrap_or_else(amqp_addr);
    let workflows_dir = std::env::temp_dir().join(format!("herald-test-{id}"));
    std::fs::create_dir_all(&workflows_dir).expect("workflows dir");
    for (i, text) in options.workflows.iter().enumerate() {
        std::fs::write(workflows_dir.join(format!("w{i}.yaml")), text).expect("write workflow");
    }
    let prefix = format!("t{id}");
    let mut vars: HashMap<String, String> = [
        ("HERALD_LISTEN", "127.0.0.1:0".to_string()),
        (
            "HERALD_DATABASE_URL",
            format!("postgres://postgres@{pg_host}/{db_name}"),
        ),
        (
            "HERALD_AMQP_URL",
            format!("amqp://guest:guest@{amqp_host}/%2f"),
        ),
        ("HERALD_AMQP_PREFIX", prefix.clone()),
        ("HERALD_AMQP_QUEUE_TYPE", "classic".into()),
        ("HERALD_AMQP_QUEUE_EXPIRES_MS", "600000".into()),
        ("HERALD_OUTBOX_INTERVAL_MS", "200".into()),
        ("HERALD_DB_MAX_CONNECTIONS", "10".into()),
        ("WHATSAPP_APP_SECRET", APP_SECRET.into()),
        ("WHATSAPP_VERIFY_TOKEN", "test-verify-token".into()),
        // The fakes (CRM, LLM) listen on the loopback, which outbound calls may not reach
        // unless allowed; tests of that guard set their own list.
        ("HERALD_HTTP_ALLOW", "127.0.0.1".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    if !options.graph {
        vars.insert("HERALD_SANDBOX".into(), "true".into());
    }
    let graph = if options.graph {
        let server = MockServer::start().await;
        vars.insert("WHATSAPP_ACCESS_TOKEN".into(), ACCESS_TOKEN.into());
        vars.insert("WHATSAPP_API_BASE_URL".into(), server.uri());
        Some(server)
    } else {
        None
    };
    // A file of this test's own (or none), never a developer's ./assistants.yaml.
    let assistants_file = workflows_dir.join("config").join("assistants.yaml");
    if let Some(yaml) = &options.assistants_yaml {
        std::fs::create_dir_all(workflows_dir.join("config")).expect("config dir");
        std::fs::write(&assistants_file, yaml).expect("write assistants file");
    }
    vars.insert(
        "HERALD_ASSISTANTS".into(),
        assistants_file.display().to_string(),
    );
    let templates_file = workflows_dir.join("config").join("templates.yaml");
    if let Some(yaml) = &options.templates_yaml {
        std::fs::create_dir_all(workflows_dir.join("config")).expect("config dir");
        std::fs::write(&templates_file, yaml).expect("write templates file");
    }
    vars.insert(
        "HERALD_TEMPLATES".into(),
        templates_file.display().to_string(),
    );
    for (k, v) in options.env {
        vars.insert(k.to_string(), v);
    }
    let config = Config::from_lookup(|k| vars.get(k).cloned()).expect("config");
    let workflows = workflow::load_dir(&workflows_dir).unwrap_or_else(|e| {
        panic!("test workflows invalid: {e:?}");
    });
    let roles = if options.roles.is_empty() {
        vec![Role::All]
    } else {
        options.roles
    };
    let running = app::start(config, &roles, workflows)
        .await
        .expect("start herald");
    let pool = PgPool::connect(&format!("postgres://postgres@127.0.0.1:5432/{db_name}"))
        .await
        .expect("test pool");
    TestApp {
        addr: running.addr,
        pool,
        vars,
        workflows_dir,
        graph,
        amqp_proxy,
        pg_proxy,
        http: reqwest::Client::new(),
        running: vec![running],
        db_name,
        prefix,
    }
}

/// Polls `check` until it returns true; panics with `what` after 20 s.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Lets the pipeline settle so that "nothing more happened" can be asserted.
pub async fn settle() {
    tokio::time::sleep(Duration::from_millis(1500)).await;
}

/// A signed-webhook body: one inbound text message from `from` (E.164) to [`SENDER`].
pub fn text_body(from: &str, text: &str, wamid: &str) -> Vec<u8> {
    let phone = herald::domain::PhoneNumber::parse(from).expect("E.164 test number");
    herald::ingress::simulate::text_message_body(&phone, "Ana Souza", text, SENDER, wamid)
}

/// How many runs have `status`.
pub async fn runs_with_status(app: &TestApp, status: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM runs WHERE status = $1")
        .bind(status)
        .fetch_one(&app.pool)
        .await
        .expect("count runs")
}
