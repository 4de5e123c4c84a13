//! App: builds the connections, starts the roles, and owns the shutdown order:
//! ingress stops accepting, the matcher stops consuming, workers finish what they hold,
//! the relay stops, then the connections close.

use std::{net::SocketAddr, str::FromStr, sync::Arc, time::Duration};

use anyhow::Context;
use axum::{
    Json, Router, extract::State, http::StatusCode, response::IntoResponse, routing::get,
    serve::ListenerExt,
};
use serde_json::json;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    bus::{Bus, outbox},
    config::Config,
    db,
    ingress::{self, IngressState},
    matcher,
    providers::whatsapp::WhatsApp,
    steps::Services,
    telemetry, worker,
    workflow::{SharedWorkflows, Workflows},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Every role in one process.
    All,
    Ingress,
    Matcher,
    Worker,
    /// Durable timers (delays, reply timeouts) and the outbox relay.
    Scheduler,
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        <Role as clap::ValueEnum>::from_str(s, true)
    }
}

fn runs(roles: &[Role], role: Role) -> bool {
    roles.contains(&Role::All) || roles.contains(&role)
}

/// How long a shutdown waits for held work (a step's provider call, an outcome being recorded).
const DRAIN_LIMIT: Duration = Duration::from_secs(90);

/// A started Herald. Drop does not stop it: call [`Running::shutdown`].
pub struct Running {
    pub addr: SocketAddr,
    pub pool: PgPool,
    pub bus: Bus,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    server: TaskTracker,
}

impl Running {
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops in order and waits for held work to finish.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.server.close();
        self.tasks.close();
        // Held work gets a bounded time to finish; what is left then is safe to abandon (jobs
        // are unacked and redelivered; a step mid-call has its intent recorded).
        let drained = tokio::time::timeout(DRAIN_LIMIT, async {
            self.server.wait().await;
            self.tasks.wait().await;
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                limit = ?DRAIN_LIMIT,
                tasks = self.tasks.len() + self.server.len(),
                "held work did not finish in time; stopping anyway (unacked jobs are redelivered)"
            );
        }
        self.bus.close().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.pool.close()).await;
    }

    /// Waits until the shutdown token is cancelled (by a signal), then shuts down.
    pub async fn wait(self) {
        self.shutdown.cancelled().await;
        self.shutdown().await;
    }
}

/// Connects, migrates, and starts `roles`. Binds `config.listen` (port 0 picks a free port).
pub async fn start(
    config: Config,
    roles: &[Role],
    workflows: Workflows,
) -> anyhow::Result<Running> {
    config.check_credentials_for(runs(roles, Role::Ingress), runs(roles, Role::Worker))?;
    if config.sandbox() {
        tracing::warn!(
            listen = %config.listen,
            "SANDBOX MODE (HERALD_SANDBOX): sends are recorded by the sandbox sender, never sent \
             to Meta; unset credentials use public defaults. Never expose this process."
        );
    }
    let config = Arc::new(config);
    let pool = db::connect(&config.database_url, config.db_max_connections).await?;
    db::migrate(&pool).await?;
    let bus = Bus::new(&config);
    bus.ensure()
        .await
        .context("connect to RabbitMQ (HERALD_AMQP_URL)")?;
    let workflows: SharedWorkflows = Arc::new(workflows);
    // Without a token outside the sandbox, no role of this process sends (the worker refused
    // to start above); the template sync below needs the token too.
    let whatsapp = match &config.access_token {
        Some(token) => {
            WhatsApp::graph(&config.api_base_url, token.clone(), config.provider_timeout)?
        }
        None => WhatsApp::Sandbox,
    };
    let senders_limits = crate::senders::Limit {
        rate: config.sender_rate,
        recipient_gap: config.recipient_gap,
        recipient_burst: config.recipient_burst,
    };
    let senders_file = crate::senders::SendersConfig::load(&config.senders_file, senders_limits)?;
    crate::senders::record_display_numbers(&pool, &senders_file.display_numbers)
        .await
        .context("record the display numbers of HERALD_SENDERS")?;
    let senders = crate::senders::Senders::new(
        pool.clone(),
        crate::senders::Limits {
            default: senders_limits,
            senders: senders_file.limits,
            max_wait: config.pacing_max_wait,
            recheck: config.sender_recheck,
        },
    );
    let _ = telemetry::metrics();
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();

    tasks.spawn(outbox::run_deleter(
        bus.clone(),
        pool.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(outbox::run_relay(
        bus.clone(),
        pool.clone(),
        config.outbox_interval,
        shutdown.clone(),
    ));
    if runs(roles, Role::Scheduler) {
        tasks.spawn(crate::runs::timers::run(
            bus.clone(),
            pool.clone(),
            config.timer_interval,
            shutdown.clone(),
        ));
        tasks.spawn(crate::dispatch::run(
            bus.clone(),
            pool.clone(),
            config.dispatch_interval,
            shutdown.clone(),
        ));
        tasks.spawn(crate::schedules::run(
            bus.clone(),
            pool.clone(),
            workflows.clone(),
            dispatch_defaults(&config),
            config.dispatch_interval,
            shutdown.clone(),
        ));
        tasks.spawn(crate::senders::notices::run(
            pool.clone(),
            crate::providers::notify::Notifier::new(
                config.notify_webhook_url.clone(),
                reqwest::Client::new(),
            ),
            config.timer_interval.max(Duration::from_millis(250)),
            shutdown.clone(),
        ));
        tasks.spawn(crate::runs::sweeper::run(
            bus.clone(),
            pool.clone(),
            config.stranded_after,
            shutdown.clone(),
        ));
        tasks.spawn(crate::bus::reinject_loop(
            bus.clone(),
            config.reinject_after,
            shutdown.clone(),
        ));
        tasks.spawn(crate::schedules::retention::run(
            pool.clone(),
            config.retention,
            shutdown.clone(),
        ));
    }
    // The run-time template catalog: templates.yaml now, Meta's list when credentials allow.
    let catalog = crate::templates::catalog::Catalog::load(&config.templates_file)
        .map_err(|e| anyhow::anyhow!(e))?;
    crate::templates::seed_from_config(&pool, catalog.as_ref())
        .await
        .context("store templates.yaml in the template catalog")?;
    if let (true, Some(waba), true) = (
        runs(roles, Role::Scheduler),
        config.business_account_id.clone(),
        config.access_token.is_some(),
    ) {
        tasks.spawn(crate::templates::run_sync(
            pool.clone(),
            whatsapp.clone(),
            waba,
            config.template_sync_interval,
            shutdown.clone(),
        ));
    }
    if runs(roles, Role::Matcher) {
        tasks.spawn(matcher::run(
            pool.clone(),
            bus.clone(),
            workflows.clone(),
            config.matcher_prefetch,
            shutdown.clone(),
        ));
    }
    if runs(roles, Role::Worker) {
        let guard = crate::providers::outbound::Guard::new(config.http_allow.clone());
        let assistants = Arc::new(crate::providers::llm::Assistants::load_for(
            &config.assistants_file,
            config.sandbox(),
            &guard,
        )?);
        // A recorded intent must outlast the slowest provider call.
        let slowest = assistants
            .longest_timeout()
            .unwrap_or_default()
            .max(config.provider_timeout);
        let services = Services {
            pool: pool.clone(),
            whatsapp: whatsapp.clone(),
            assistants: assistants.clone(),
            notifier: crate::providers::notify::Notifier::new(
                config.notify_webhook_url.clone(),
                crate::providers::notify::client()?,
            ),
            http: crate::steps::http_request::client(guard)?,
            retry: crate::failure::RetryPolicy {
                attempts: config.retry_attempts,
                wait: crate::domain::HumanDuration::from(config.retry_wait),
            },
            lease: slowest + config.pacing_max_wait + Duration::from_secs(5),
            stranded_after: config.stranded_after,
            senders: senders.clone(),
            facts: crate::templates::Facts::new(pool.clone()),
        };
        tasks.spawn(worker::run(
            services,
            bus.clone(),
            workflows.clone(),
            config.worker_prefetch,
            shutdown.clone(),
        ));
    }

    let mut router = Router::new()
        .route(
            "/healthz",
            get(|State(h): State<Health>| async move { crate::api::healthz(&h.bus) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(Health {
            pool: pool.clone(),
            bus: bus.clone(),
            sandbox: config.sandbox(),
            ops_token: config.ops_token.clone(),
        });
    if runs(roles, Role::Ingress) {
        router = router.merge(crate::api::router(crate::api::ApiState {
            pool: pool.clone(),
            workflows: workflows.clone(),
            config: config.clone(),
            defaults: dispatch_defaults(&config),
        }));
        router = router.merge(ingress::router(IngressState {
            pool: pool.clone(),
            messages: crate::db::batch::Batched::new(
                "ingress.messages",
                pool.clone(),
                ingress::store::StoreMessages,
            ),
            bus: bus.clone(),
            config: config.clone(),
        }));
    }
    let router = router.layer(tower_http::catch_panic::CatchPanicLayer::new());
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listen on {} (HERALD_LISTEN)", config.listen))?;
    let addr = listener.local_addr()?;
    let server = TaskTracker::new();
    let stop = shutdown.clone();
    server.spawn(async move {
        // Answers are written at once, not held back for the client's ACK (Nagle).
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::warn!(error = %e, "could not set TCP_NODELAY on a connection");
            }
        });
        ingress::server::serve(listener, router, config.http, stop).await;
    });
    tracing::info!(%addr, roles = ?roles, workflows = workflows.all().len(), sender = whatsapp.provider_name(), "herald started");
    Ok(Running {
        addr,
        pool,
        bus,
        shutdown,
        tasks,
        server,
    })
}

/// The defaults dispatches take from the configuration.
pub fn dispatch_defaults(config: &Config) -> crate::dispatch::Defaults {
    crate::dispatch::Defaults {
        rate: config.dispatch_rate,
        sender: config.default_sender.clone(),
    }
}

#[derive(Clone)]
struct Health {
    pool: PgPool,
    bus: Bus,
    sandbox: bool,
    ops_token: Option<crate::config::Secret>,
}

impl Health {
    /// Whether the request may see operational details: no `HERALD_OPS_TOKEN` is set, or the
    /// request carries it as a bearer token.
    fn shows_details(&self, headers: &axum::http::HeaderMap) -> bool {
        let Some(expected) = &self.ops_token else {
            return true;
        };
        headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| {
                crate::ingress::signature::equal(
                    given.trim().as_bytes(),
                    expected.expose().as_bytes(),
                )
            })
    }
}

/// Prometheus metrics; behind `HERALD_OPS_TOKEN` when it is set.
async fn metrics(State(h): State<Health>, headers: axum::http::HeaderMap) -> impl IntoResponse {
    if !h.shows_details(&headers) {
        return (
            StatusCode::UNAUTHORIZED,
            "send Authorization: Bearer <HERALD_OPS_TOKEN>".to_string(),
        );
    }
    (StatusCode::OK, telemetry::metrics().render())
}

/// Ready when PostgreSQL and RabbitMQ answer. Public answers carry no driver error (it may name
/// hosts and users): those are logged; the details need `HERALD_OPS_TOKEN` when it is set.
async fn readyz(State(h): State<Health>, headers: axum::http::HeaderMap) -> impl IntoResponse {
    let db = tokio::time::timeout(Duration::from_secs(2), crate::db::ping(&h.pool))
        .await
        .map_err(|_| "timed out".to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
    let amqp = h.bus.ensure().await.map_err(|e| e.to_string());
    for (what, result) in [("postgres", &db), ("rabbitmq", &amqp)] {
        if let Err(e) = result {
            tracing::warn!(dependency = what, error = %e, "not ready");
        }
    }
    let ok = db.is_ok() && amqp.is_ok();
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = if ok { "ready" } else { "not ready" };
    if !h.shows_details(&headers) {
        return (status, Json(json!({"status": word})));
    }
    let show = |r: &Result<(), String>| if r.is_ok() { "ok" } else { "unavailable" };
    (
        status,
        Json(json!({
            "status": word,
            "postgres": show(&db),
            "rabbitmq": show(&amqp),
            "sandbox": h.sandbox,
        })),
    )
}

/// Cancels `token` on SIGTERM or Ctrl-C.
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => {
                        let _ = ctrl_c.await;
                        token.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutting down: finishing held work");
        token.cancel();
    });
}
