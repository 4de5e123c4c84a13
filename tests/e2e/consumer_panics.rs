//! A handler that panics loses its delivery (requeued once, then rejected), never its consumer;
//! a consumer that stopped shows on `/healthz`.

use std::{collections::BTreeSet, time::Duration};

use herald::{
    bus::{Bus, Destination, consume_loop},
    config::Config,
};
use tokio_util::sync::CancellationToken;

fn bus() -> Bus {
    let prefix = format!("t{}", uuid::Uuid::now_v7().simple());
    let amqp = std::env::var("HERALD_TEST_AMQP_ADDR").unwrap_or_else(|_| "127.0.0.1:5672".into());
    let vars = [
        ("HERALD_AMQP_URL", format!("amqp://guest:guest@{amqp}/%2f")),
        ("HERALD_AMQP_PREFIX", prefix),
        ("HERALD_AMQP_QUEUE_TYPE", "classic".into()),
        ("HERALD_AMQP_QUEUE_EXPIRES_MS", "600000".into()),
        ("HERALD_SANDBOX", "true".into()),
    ];
    let config = Config::from_lookup(|k| {
        vars.iter()
            .find(|(name, _)| *name == k)
            .map(|(_, v)| v.clone())
    })
    .expect("config");
    Bus::new(&config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_s_delivery_is_dead_lettered_and_the_consumer_goes_on() {
    let metrics = herald::telemetry::metrics();
    let bus = bus();
    bus.ensure().await.expect("RabbitMQ");
    for body in ["boom", "one", "two"] {
        bus.publish(Destination::Jobs, "", body.as_bytes())
            .await
            .unwrap();
    }
    let (tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let shutdown = CancellationToken::new();
    let consumer = tokio::spawn({
        let (bus, shutdown) = (bus.clone(), shutdown.clone());
        let queue = bus.names().jobs_queue.clone();
        async move {
            consume_loop(&bus, &queue, 2, "worker", shutdown, move |d| {
                let tx = tx.clone();
                async move {
                    let body = String::from_utf8_lossy(d.body()).into_owned();
                    tx.send((body.clone(), d.redelivered())).unwrap();
                    if body == "boom" {
                        panic!("a handler's bug, on purpose");
                    }
                    d.ack().await.unwrap();
                }
            })
            .await;
        }
    });
    let mut handled = BTreeSet::new();
    while handled.len() < 4 {
        let next = tokio::time::timeout(Duration::from_secs(20), seen.recv())
            .await
            .unwrap_or_else(|_| panic!("only {handled:?} were handled"))
            .unwrap();
        handled.insert(next);
    }
    let expected: BTreeSet<(String, bool)> = [
        ("boom", false),
        ("boom", true),
        ("one", false),
        ("two", false),
    ]
    .into_iter()
    .map(|(b, r)| (b.to_string(), r))
    .collect();
    assert_eq!(
        handled, expected,
        "each delivery once, the panicking one twice"
    );
    // Rejected the second time: nothing comes back here; it waits in the dead-letter queue
    // (for the scheduler's reinjector, not running in this test).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        seen.try_recv().is_err(),
        "the panicking delivery came back again"
    );
    let queue = bus.names().jobs_queue.clone();
    assert_eq!(bus.queue_depth(&queue).await.unwrap(), 0);
    let dead = bus.names().dead_queue.clone();
    assert_eq!(bus.queue_depth(&dead).await.unwrap(), 1, "dead-lettered");
    let rendered = metrics.render();
    for outcome in ["requeued", "rejected"] {
        assert!(
            rendered
                .lines()
                .any(|l| l.starts_with("herald_consumer_panics_total{")
                    && l.contains(&format!("outcome=\"{outcome}\""))),
            "no {outcome} panic counted in:\n{rendered}"
        );
    }
    // Still consuming after the panics.
    bus.publish(Destination::Jobs, "", b"three").await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), seen.recv())
        .await
        .expect("the consumer still consumes")
        .unwrap();
    assert_eq!(next, ("three".to_string(), false));
    assert!(bus.stopped_consumers().is_empty());
    assert_eq!(herald::api::healthz(&bus).status(), 200);

    // A consumer whose task is gone shows on /healthz.
    consumer.abort();
    let _ = consumer.await;
    assert_eq!(bus.stopped_consumers(), ["worker"]);
    let answer = herald::api::healthz(&bus);
    assert_eq!(answer.status(), 503);
    let body = axum::body::to_bytes(answer.into_body(), 1024)
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["stopped_consumers"], serde_json::json!(["worker"]));
    shutdown.cancel();
    bus.delete_topology().await.unwrap();
    bus.close().await;
}
