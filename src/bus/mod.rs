//! Bus: RabbitMQ. The only module that imports lapin. Topology is declared here, in one place:
//! the topic exchange `<prefix>.events`, the matcher's queue bound to every event, and the
//! durable jobs queue that workers consume with manual acks. Both queues dead-letter to
//! `<prefix>.dead` (a message rejected, or one a quorum queue gave up on after its delivery
//! limit), from where [`reinject_loop`] puts it back after a pause; one that keeps coming back
//! is parked in `<prefix>.parked` for an operator. A handler that panics loses its
//! delivery to the broker (requeued once, then rejected), never its consumer; each consumer
//! reports whether it still runs ([`Bus::stopped_consumers`], for `/healthz`).

pub mod outbox;

use std::{
    panic::AssertUnwindSafe,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures::{FutureExt, Stream, StreamExt};
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions,
        BasicQosOptions, BasicRejectOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
        ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
    },
    types::{AMQPValue, FieldTable, LongString, ShortString},
};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, QueueType};

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("RabbitMQ is unreachable: {0}")]
    Unreachable(String),
    #[error("RabbitMQ did not confirm the publish: {0}")]
    NotConfirmed(String),
}

pub use crate::store::outbox::Destination;

/// The names of Herald's exchange and queues, all derived from one prefix.
#[derive(Clone, Debug)]
pub struct Names {
    pub events_exchange: String,
    pub matcher_queue: String,
    pub jobs_queue: String,
    /// The dead-letter exchange (fanout) of the matcher and jobs queues, and its queue.
    pub dead_exchange: String,
    pub dead_queue: String,
    /// Where a message that was dead-lettered [`MAX_DEATHS`] times waits for an operator.
    pub parked_queue: String,
}

impl Names {
    pub fn new(prefix: &str) -> Self {
        Names {
            events_exchange: format!("{prefix}.events"),
            matcher_queue: format!("{prefix}.matcher"),
            jobs_queue: format!("{prefix}.jobs"),
            dead_exchange: format!("{prefix}.dead"),
            dead_queue: format!("{prefix}.dead"),
            parked_queue: format!("{prefix}.parked"),
        }
    }
}

/// How often a message may be dead-lettered and put back before it is parked.
pub const MAX_DEATHS: i64 = 5;

/// What the broker says of a dead-lettered message: the queue it came from the last time,
/// how often it was dead-lettered in all, and when last (seconds since the epoch).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Death {
    pub queue: String,
    pub count: i64,
    pub at: u64,
}

/// A message taken from a queue; ack it when its work is recorded.
pub struct Delivery {
    inner: lapin::message::Delivery,
}

impl Delivery {
    pub fn body(&self) -> &[u8] {
        &self.inner.data
    }
    pub fn redelivered(&self) -> bool {
        self.inner.redelivered
    }
    /// Acks the message. Bounded in time: on a connection that died the broker has given the
    /// message back already, and an ack that never completes must not hold its handler (and
    /// with it the consumer's reconnection and the shutdown) forever.
    pub async fn ack(&self) -> Result<(), BusError> {
        bounded(
            ACK_TIMEOUT,
            "ack",
            self.inner.ack(BasicAckOptions::default()),
        )
        .await
    }
    /// Rejects the message without requeueing it: the broker dead-letters it to
    /// `<prefix>.dead`, from where [`reinject_loop`] puts it back later.
    pub async fn reject(&self) -> Result<(), BusError> {
        let reject = self.inner.reject(BasicRejectOptions { requeue: false });
        bounded(ACK_TIMEOUT, "reject", reject).await
    }
    /// The routing key the message was published with.
    pub fn routing_key(&self) -> &str {
        self.inner.routing_key.as_str()
    }
    /// Where a dead-lettered message came from, from its `x-death` header (the broker puts the
    /// latest death first); `None` for a message that never was dead-lettered.
    pub fn death(&self) -> Option<Death> {
        let headers = self.inner.properties.headers().as_ref()?;
        let deaths = headers.inner().get("x-death")?.as_array()?;
        let mut last: Option<Death> = None;
        let mut count = 0;
        for death in deaths.as_slice() {
            let Some(table) = death.as_field_table() else {
                continue;
            };
            let table = table.inner();
            count += table
                .get("count")
                .and_then(AMQPValue::as_long_long_int)
                .unwrap_or(1);
            if last.is_none() {
                last = table
                    .get("queue")
                    .and_then(AMQPValue::as_long_string)
                    .map(|q| Death {
                        queue: String::from_utf8_lossy(q.as_bytes()).into_owned(),
                        count: 0,
                        at: table
                            .get("time")
                            .and_then(AMQPValue::as_timestamp)
                            .unwrap_or_default(),
                    });
            }
        }
        last.map(|d| Death { count, ..d })
    }
    /// Gives the message back to the queue for another consumer (bounded like [`Self::ack`]).
    pub async fn requeue(&self) -> Result<(), BusError> {
        let nack = self.inner.nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        });
        bounded(ACK_TIMEOUT, "nack", nack).await
    }
}

struct Link {
    connection: Arc<Connection>,
    publisher: Channel,
}

/// A supervised connection to RabbitMQ: it reconnects (and re-declares the topology) on demand
/// after the broker went away, so every caller sees either a working channel or an error.
#[derive(Clone)]
pub struct Bus {
    url: String,
    names: Names,
    queue_type: QueueType,
    queue_expires_ms: Option<u64>,
    link: Arc<Mutex<Option<Link>>>,
    /// Where published outbox row ids go to be deleted in batches (see `outbox::run_deleter`).
    pub(crate) published: Arc<std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<i64>>>,
    /// The consumers started on this bus, and whether each still runs.
    consumers: Arc<std::sync::Mutex<Vec<Arc<Consumer>>>>,
}

/// One [`consume_loop`], as `/healthz` sees it.
struct Consumer {
    role: String,
    running: AtomicBool,
}

/// Held by a running [`consume_loop`]: however the loop ends (returns, panics, or its task is
/// aborted), dropping it marks the consumer stopped.
struct Running(Arc<Consumer>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.store(false, Ordering::Release);
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Closing a connection or removing the topology: a broker that stopped answering half-way
/// must not hold a shutdown (or a test's cleanup) forever.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Awaits a broker operation for at most `limit`.
async fn bounded<T>(
    limit: Duration,
    what: &str,
    op: impl std::future::Future<Output = Result<T, lapin::Error>>,
) -> Result<(), BusError> {
    match tokio::time::timeout(limit, op).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(BusError::Unreachable(e.to_string())),
        Err(_) => Err(BusError::Unreachable(format!("{what} timed out"))),
    }
}

impl Bus {
    /// A bus that connects on first use.
    pub fn new(config: &Config) -> Self {
        Bus {
            url: config.amqp_url.clone(),
            names: Names::new(&config.amqp_prefix),
            queue_type: config.amqp_queue_type,
            queue_expires_ms: config.amqp_queue_expires_ms,
            link: Arc::new(Mutex::new(None)),
            published: Arc::new(std::sync::OnceLock::new()),
            consumers: Arc::default(),
        }
    }

    fn register_consumer(&self, role: &str) -> Running {
        let consumer = Arc::new(Consumer {
            role: role.to_string(),
            running: AtomicBool::new(true),
        });
        self.consumers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(consumer.clone());
        Running(consumer)
    }

    /// The roles of the consumers started on this bus that no longer run (a stopped consumer
    /// takes no more events or jobs: the process needs a restart). Empty when all run.
    pub fn stopped_consumers(&self) -> Vec<String> {
        self.consumers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|c| !c.running.load(Ordering::Acquire))
            .map(|c| c.role.clone())
            .collect()
    }

    pub fn names(&self) -> &Names {
        &self.names
    }

    /// Connects, declares the topology and opens the confirming publisher channel, all within
    /// [`CONNECT_TIMEOUT`]: a broker that accepts TCP but does not answer (starting, or gone
    /// half-way) must not hold the link's lock, and with it every publisher, forever.
    async fn open(&self) -> Result<Link, BusError> {
        tokio::time::timeout(CONNECT_TIMEOUT, self.open_unbounded())
            .await
            .map_err(|_| BusError::Unreachable("connect timed out".into()))?
    }

    async fn open_unbounded(&self) -> Result<Link, BusError> {
        let unreachable = |e: lapin::Error| BusError::Unreachable(e.to_string());
        let connection = Connection::connect(&self.url, ConnectionProperties::default())
            .await
            .map_err(unreachable)?;
        let publisher = connection.create_channel().await.map_err(unreachable)?;
        self.declare(&connection, &publisher)
            .await
            .map_err(unreachable)?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(unreachable)?;
        Ok(Link {
            connection: Arc::new(connection),
            publisher,
        })
    }

    /// Declares a queue that dead-letters to `<prefix>.dead`, on a channel of its own: a queue
    /// declared by an earlier version without the dead-letter arguments refuses the new ones
    /// (PRECONDITION_FAILED closes the channel), and is then used as it is, with a warning.
    async fn declare_dead_lettered(
        &self,
        connection: &Connection,
        queue: &str,
    ) -> Result<(), lapin::Error> {
        let mut args = self.queue_arguments();
        args.insert(
            ShortString::from("x-dead-letter-exchange"),
            AMQPValue::LongString(LongString::from(self.names.dead_exchange.as_str())),
        );
        let options = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let channel = connection.create_channel().await?;
        match channel.queue_declare(queue.into(), options, args).await {
            Ok(_) => {
                let _ = channel.close(200, "declared".into()).await;
                Ok(())
            }
            Err(e) => {
                tracing::warn!(
                    queue, error = %e,
                    "the queue exists without a dead-letter exchange (declared by an earlier \
                     version); using it as it is: set one with a policy \
                     (rabbitmqctl set_policy herald-dead '^{queue}$' \
                     '{{\"dead-letter-exchange\":\"{dead}\"}}' --apply-to queues)",
                    dead = self.names.dead_exchange
                );
                let channel = connection.create_channel().await?;
                channel
                    .queue_declare(
                        queue.into(),
                        QueueDeclareOptions {
                            passive: true,
                            ..Default::default()
                        },
                        FieldTable::default(),
                    )
                    .await?;
                let _ = channel.close(200, "declared".into()).await;
                Ok(())
            }
        }
    }

    async fn declare(
        &self,
        connection: &Connection,
        channel: &Channel,
    ) -> Result<(), lapin::Error> {
        for (exchange, kind) in [
            (&self.names.events_exchange, ExchangeKind::Topic),
            (&self.names.dead_exchange, ExchangeKind::Fanout),
        ] {
            channel
                .exchange_declare(
                    exchange.as_str().into(),
                    kind,
                    ExchangeDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?;
        }
        for queue in [&self.names.dead_queue, &self.names.parked_queue] {
            channel
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    self.queue_arguments(),
                )
                .await?;
        }
        channel
            .queue_bind(
                self.names.dead_queue.as_str().into(),
                self.names.dead_exchange.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        for queue in [&self.names.matcher_queue, &self.names.jobs_queue] {
            self.declare_dead_lettered(connection, queue).await?;
        }
        channel
            .queue_bind(
                self.names.matcher_queue.as_str().into(),
                self.names.events_exchange.as_str().into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(())
    }

    fn queue_arguments(&self) -> FieldTable {
        let mut args = FieldTable::default();
        let kind = match self.queue_type {
            QueueType::Quorum => "quorum",
            QueueType::Classic => "classic",
        };
        args.insert(
            ShortString::from("x-queue-type"),
            AMQPValue::LongString(LongString::from(kind)),
        );
        if let Some(ms) = self.queue_expires_ms {
            args.insert(
                ShortString::from("x-expires"),
                AMQPValue::LongLongInt(ms as i64),
            );
        }
        args
    }

    /// The live connection, opening a new one if the last one died.
    async fn connection(&self) -> Result<(Arc<Connection>, Channel), BusError> {
        let mut link = self.link.lock().await;
        if let Some(l) = link.as_ref()
            && l.connection.status().connected()
            && l.publisher.status().connected()
        {
            return Ok((l.connection.clone(), l.publisher.clone()));
        }
        let fresh = self.open().await?;
        let pair = (fresh.connection.clone(), fresh.publisher.clone());
        if let Some(old) = link.replace(fresh) {
            let _ = bounded(
                CLOSE_TIMEOUT,
                "close",
                old.connection.close(0, "reconnecting".into()),
            )
            .await;
        }
        Ok(pair)
    }

    /// Makes sure the broker is reachable and the topology exists.
    pub async fn ensure(&self) -> Result<(), BusError> {
        self.connection().await.map(|_| ())
    }

    /// Publishes one persistent message and waits for the broker's confirm.
    pub async fn publish(
        &self,
        destination: Destination,
        routing_key: &str,
        body: &[u8],
    ) -> Result<(), BusError> {
        let (exchange, key) = self.address(destination, routing_key);
        self.publish_at(exchange, key, body, None).await
    }

    /// Where a message for `destination` goes: an exchange and a routing key.
    fn address<'a>(&'a self, destination: Destination, routing_key: &'a str) -> (&'a str, &'a str) {
        match destination {
            Destination::Events => (self.names.events_exchange.as_str(), routing_key),
            Destination::Jobs => ("", self.names.jobs_queue.as_str()),
        }
    }

    /// Publishes a dead-lettered message again with its headers (its `x-death` count goes on):
    /// to `destination`, or straight to `queue` (parking it).
    async fn republish(&self, to: Republish<'_>, delivery: &Delivery) -> Result<(), BusError> {
        let (exchange, key) = match to {
            Republish::To(destination) => self.address(destination, delivery.routing_key()),
            Republish::Queue(queue) => ("", queue),
        };
        let headers = delivery.inner.properties.headers().clone();
        self.publish_at(exchange, key, delivery.body(), headers)
            .await
    }

    async fn publish_at(
        &self,
        exchange: &str,
        key: &str,
        body: &[u8],
        headers: Option<FieldTable>,
    ) -> Result<(), BusError> {
        let (_, channel) = self.connection().await?;
        let mut properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into());
        if let Some(headers) = headers {
            properties = properties.with_headers(headers);
        }
        let confirm = channel
            .basic_publish(
                exchange.into(),
                key.into(),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await
            .map_err(|e| BusError::Unreachable(e.to_string()))?;
        let confirmation = tokio::time::timeout(CONFIRM_TIMEOUT, confirm)
            .await
            .map_err(|_| BusError::NotConfirmed("confirm timed out".into()))?
            .map_err(|e| BusError::NotConfirmed(e.to_string()))?;
        if confirmation.is_nack() {
            return Err(BusError::NotConfirmed("broker answered nack".into()));
        }
        Ok(())
    }

    /// Starts consuming `queue` on a channel of its own with the given prefetch.
    pub async fn consume(
        &self,
        queue: &str,
        prefetch: u16,
        tag: &str,
    ) -> Result<impl Stream<Item = Result<Delivery, BusError>> + use<>, BusError> {
        let (connection, _) = self.connection().await?;
        let unreachable = |e: lapin::Error| BusError::Unreachable(e.to_string());
        let channel = connection.create_channel().await.map_err(unreachable)?;
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await
            .map_err(unreachable)?;
        let consumer = channel
            .basic_consume(
                queue.into(),
                tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(unreachable)?;
        Ok(consumer.map(|d| {
            d.map(|inner| Delivery { inner })
                .map_err(|e| BusError::Unreachable(e.to_string()))
        }))
    }

    /// Number of messages ready in a queue (for tests and `herald-bench`).
    pub async fn queue_depth(&self, queue: &str) -> Result<u32, BusError> {
        let (_, channel) = self.connection().await?;
        let q = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| BusError::Unreachable(e.to_string()))?;
        Ok(q.message_count())
    }

    /// Removes the exchange and queues (tests use a unique prefix and clean up with this).
    /// Bounded in time like [`Self::close`].
    pub async fn delete_topology(&self) -> Result<(), BusError> {
        tokio::time::timeout(CLOSE_TIMEOUT * 2, self.delete_topology_unbounded())
            .await
            .map_err(|_| BusError::Unreachable("removing the topology timed out".into()))?
    }

    async fn delete_topology_unbounded(&self) -> Result<(), BusError> {
        let (connection, _) = self.connection().await?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| BusError::Unreachable(e.to_string()))?;
        for q in [
            &self.names.matcher_queue,
            &self.names.jobs_queue,
            &self.names.dead_queue,
            &self.names.parked_queue,
        ] {
            let _ = channel
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        for x in [&self.names.events_exchange, &self.names.dead_exchange] {
            let _ = channel
                .exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
        let _ = channel.close(200, "topology deleted".into()).await;
        Ok(())
    }

    /// Closes the connection (shutdown), waiting at most [`CLOSE_TIMEOUT`] for the lock and
    /// for the broker's answer each.
    pub async fn close(&self) {
        let Ok(mut link) = tokio::time::timeout(CLOSE_TIMEOUT, self.link.lock()).await else {
            tracing::warn!("RabbitMQ link busy at shutdown; leaving it to the process exit");
            return;
        };
        if let Some(link) = link.take() {
            let close = link.connection.close(200, "shutdown".into());
            let _ = bounded(CLOSE_TIMEOUT, "close", close).await;
        }
    }
}

/// What happens to a delivery whose handler panicked: given back once (the panic may have been
/// a passing state), rejected when it was given back already (it would panic forever). A
/// rejected message is dead-lettered to `<prefix>.dead` (see [`reinject_loop`]); the log keeps
/// its start.
async fn after_panic(
    role: &str,
    acker: lapin::Acker,
    redelivered: bool,
    (body_bytes, start): (usize, Vec<u8>),
    panic: Box<dyn std::any::Any + Send>,
) {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into());
    let outcome = if redelivered { "rejected" } else { "requeued" };
    metrics::counter!("herald_consumer_panics_total", "role" => role.to_string(), "outcome" => outcome)
        .increment(1);
    let start = String::from_utf8_lossy(&start).into_owned();
    tracing::error!(
        role,
        panic = %message,
        outcome,
        body_bytes,
        body_start = %start,
        "a handler panicked; the consumer goes on"
    );
    let given_back = if redelivered {
        acker.reject(BasicRejectOptions { requeue: false }).await
    } else {
        // As after a handler's error: a moment before the message comes back.
        tokio::time::sleep(Duration::from_secs(1)).await;
        acker
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await
    };
    if let Err(e) = given_back {
        tracing::warn!(role, error = %e, "could not give back the delivery of a panicked handler");
    }
}

/// Runs `handler` on `delivery`, catching a panic (of the call or of its future) so that it
/// ends only this delivery's handling, never the consumer.
async fn handle_catching<F, Fut>(role: &str, handler: &F, delivery: Delivery)
where
    F: Fn(Delivery) -> Fut,
    Fut: Future<Output = ()>,
{
    // Kept to settle the delivery if the handler panics (an acker is used once: after the
    // handler's own ack or nack, settling again does nothing).
    let acker = delivery.inner.acker.clone();
    let redelivered = delivery.redelivered();
    // The start of the body, for the log (most bodies are shorter: the copy is all of it).
    let body = delivery.body();
    let body = (body.len(), body[..body.len().min(512)].to_vec());
    let handled = match std::panic::catch_unwind(AssertUnwindSafe(|| handler(delivery))) {
        Ok(future) => AssertUnwindSafe(future).catch_unwind().await,
        Err(panic) => Err(panic),
    };
    if let Err(panic) = handled {
        after_panic(role, acker, redelivered, body, panic).await;
    }
}

/// Consumes `queue` until shutdown, handling up to `prefetch` deliveries at once, and
/// reconnecting when the broker goes away. On shutdown it stops taking deliveries and
/// finishes those it holds. A handler's panic is caught (see [`after_panic`]).
pub async fn consume_loop<F, Fut>(
    bus: &Bus,
    queue: &str,
    prefetch: u16,
    role: &str,
    shutdown: CancellationToken,
    handler: F,
) where
    F: Fn(Delivery) -> Fut,
    Fut: Future<Output = ()>,
{
    let _running = bus.register_consumer(role);
    let tag = format!("{role}-{}", uuid::Uuid::now_v7().simple());
    let mut waits = backon::BackoffBuilder::build(crate::failure::backoff::reconnect());
    while !shutdown.is_cancelled() {
        match bus.consume(queue, prefetch, &tag).await {
            Ok(stream) => {
                waits = backon::BackoffBuilder::build(crate::failure::backoff::reconnect());
                tracing::info!(role, queue, prefetch, "consuming");
                // The first error ends the stream: after a connection error lapin's consumer
                // may yield nothing more, yet not end, and this loop would never reconnect.
                stream
                    .take_until(shutdown.cancelled())
                    .take_while(|d| {
                        if let Err(e) = d {
                            tracing::warn!(role, error = %e, "consumer error");
                        }
                        std::future::ready(d.is_ok())
                    })
                    .filter_map(|d| std::future::ready(d.ok()))
                    // Boxed once here rather than moved whole into the set of futures in flight
                    // (a handler's state runs to kilobytes).
                    .for_each_concurrent(prefetch as usize, |d| {
                        Box::pin(handle_catching(role, &handler, d))
                    })
                    .await;
                if !shutdown.is_cancelled() {
                    tracing::warn!(role, "lost the broker; reconnecting");
                }
            }
            Err(e) => tracing::warn!(role, error = %e, "cannot consume; retrying"),
        }
        let wait = waits.next().unwrap_or(Duration::from_secs(2));
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
    tracing::info!(role, "stopped consuming");
}

/// Where [`Bus::republish`] puts a message.
enum Republish<'a> {
    To(Destination),
    Queue(&'a str),
}

/// Puts dead-lettered messages back where they came from, each once `after` has passed since
/// it was dead-lettered: a job onto the jobs queue, an event onto the events exchange with its
/// routing key. One dead-lettered [`MAX_DEATHS`] times is parked in `<prefix>.parked` instead,
/// with an error in the log. Runs in the scheduler role until shutdown.
pub async fn reinject_loop(bus: Bus, after: Duration, shutdown: CancellationToken) {
    let queue = bus.names().dead_queue.clone();
    let bus = &bus;
    consume_loop(bus, &queue, 100, "reinjector", shutdown.clone(), |d| {
        let shutdown = shutdown.clone();
        async move {
            let death = d.death().unwrap_or_default();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            let due = Duration::from_secs(death.at).saturating_add(after);
            tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = d.requeue().await;
                    return;
                }
                _ = tokio::time::sleep(due.saturating_sub(now).min(after)) => {}
            }
            let (from, deaths) = (death.queue, death.count);
            let names = bus.names();
            let to = if deaths >= MAX_DEATHS {
                tracing::error!(
                    from,
                    deaths,
                    parked = names.parked_queue,
                    "a message was dead-lettered again and again; parked for an operator"
                );
                metrics::counter!("herald_messages_parked_total").increment(1);
                Republish::Queue(&names.parked_queue)
            } else if from == names.jobs_queue {
                Republish::To(Destination::Jobs)
            } else {
                Republish::To(Destination::Events)
            };
            let put_back = bus.republish(to, &d).await;
            match put_back {
                Ok(()) => {
                    metrics::counter!("herald_messages_reinjected_total").increment(1);
                    tracing::warn!(from, deaths, "dead-lettered message put back");
                    let _ = d.ack().await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not put a dead-lettered message back");
                    let _ = d.requeue().await;
                }
            }
        }
    })
    .await;
}
