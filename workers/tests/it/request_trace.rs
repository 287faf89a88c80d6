//! One trace and one request id from the request to the consumer's write, for both event
//! pipelines: `POST /api/v1/orders` (outbox, relay, RabbitMQ, orders consumer) and
//! `POST /buy` (outbox, relay, Kafka, purchases consumer). Each process runs as its own
//! binary, exporting spans to a real OTLP/HTTP receiver and logging JSON lines; the trace
//! id must be in what each exports, and every log line of the path must name the request
//! id and the trace id.

use serde_json::{json, Value};
use sqlx::PgPool;
use testkit::otlp::Collector;
use testkit::{unique, wait_until};

/// The JSON log lines (`LOG_FORMAT=json`) in what a process wrote.
fn json_log_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// Whether a JSON log line was written inside a span named `name`.
fn in_span(line: &Value, name: &str) -> bool {
    line["spans"]
        .as_array()
        .is_some_and(|spans| spans.iter().any(|span| span["name"] == name))
}

/// A field of any span a JSON log line was written in.
fn span_field<'a>(line: &'a Value, field: &str) -> Option<&'a str> {
    line["spans"]
        .as_array()?
        .iter()
        .find_map(|span| span[field].as_str())
}

/// Every log line of the path, down to the per-request and per-event debug lines.
const LOGS: [(&str, &str); 2] = [
    ("LOG_FORMAT", "json"),
    ("RUST_LOG", "info,tower_http=debug,workers=debug"),
];

/// One pipeline: what the processes need, the request, and how to see it applied.
struct Path<'a> {
    /// The consumer's command line after `workers`.
    consumer: &'a [&'a str],
    /// Variables for the gateway, the relay and the consumer (the exchange, the topic...).
    env: &'a [(&'a str, &'a str)],
    /// The route and its body.
    route: &'a str,
    body: Value,
}

/// Runs `path` end to end with request id `request_id` and checks the trace and the logs.
async fn check_one_trace(pool: &PgPool, path: Path<'_>, request_id: &str) {
    let database_url = testkit::database_url(pool).await;
    let (gateway_traces, relay_traces, consumer_traces) = (
        Collector::start().await,
        Collector::start().await,
        Collector::start().await,
    );
    let consumer = testkit::workers_launch(&database_url, path.consumer)
        .envs(path.env)
        .envs(&LOGS)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &consumer_traces.url)
        .start()
        .await;
    let relay = testkit::workers_launch(&database_url, &["relay"])
        .envs(path.env)
        .envs(&LOGS)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &relay_traces.url)
        .start()
        .await;
    let gateway = testkit::gateway_launch(&database_url)
        .envs(path.env)
        .envs(&LOGS)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &gateway_traces.url)
        .start()
        .await;
    let response = reqwest::Client::new()
        .post(gateway.url(path.route))
        .header("x-request-id", request_id)
        .json(&path.body)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    // The trace the request ran in and its id, as its outbox row carries them to the broker.
    let (traceparent, stored_request_id): (String, String) = sqlx::query_as(
        "SELECT headers->>'traceparent', headers->>'x-request-id'
         FROM outbox_events ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(stored_request_id, request_id);
    let trace_id_hex = traceparent.split('-').nth(1).unwrap().to_owned();
    let trace_id: Vec<u8> = (0..16)
        .map(|index| u8::from_str_radix(&trace_id_hex[index * 2..index * 2 + 2], 16).unwrap())
        .collect();
    wait_until("the consumer handles the event", || async {
        json_log_lines(&consumer.stderr())
            .iter()
            .any(|line| in_span(line, "consume"))
    })
    .await;
    // Spans are flushed when each process stops.
    let mut outputs = Vec::new();
    for process in [gateway, relay, consumer] {
        outputs.push(process.stop_cleanly().await);
    }
    for ((who, collector, span), output) in [
        ("gateway", &gateway_traces, "http"),
        ("relay", &relay_traces, "relay publish"),
        ("consumer", &consumer_traces, "consume"),
    ]
    .into_iter()
    .zip(&outputs)
    {
        let log = String::from_utf8_lossy(&output.stderr);
        assert!(
            collector.holds(span.as_bytes()),
            "{who}: no {span:?} span exported; its log:\n{log}"
        );
        assert!(
            collector.holds(&trace_id),
            "{who}: nothing exported in trace {traceparent}"
        );
        let lines: Vec<Value> = json_log_lines(&log)
            .into_iter()
            .filter(|line| in_span(line, span))
            .filter(|line| who != "gateway" || span_field(line, "route") == Some(path.route))
            .collect();
        assert!(!lines.is_empty(), "{who}: no log line in a {span:?} span");
        for line in lines {
            assert_eq!(
                span_field(&line, "request_id"),
                Some(request_id),
                "{who}: {line}"
            );
            assert_eq!(
                span_field(&line, "trace_id"),
                Some(trace_id_hex.as_str()),
                "{who}: {line}"
            );
        }
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn an_order_keeps_one_trace_and_one_request_id_through_rabbitmq_to_the_consumer(
    pool: PgPool,
) {
    let (exchange, queue) = (unique("traced_orders"), unique("traced_queue"));
    let path = Path {
        consumer: &["consume", "orders"],
        env: &[
            ("ORDERS_EXCHANGE", exchange.as_str()),
            ("ORDERS_QUEUE", queue.as_str()),
        ],
        route: "/api/v1/orders",
        body: json!({"customer_id": 4, "product_name": "Traced", "quantity": 1, "price": 3}),
    };
    check_one_trace(&pool, path, "req-traced-order-1").await;
    crate::orders_pipeline::remove(&domain::amqp::QueueTopology::named(&exchange, &queue)).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_purchase_keeps_one_trace_and_one_request_id_through_kafka_to_the_consumer(pool: PgPool) {
    let (topic, group) = (unique("traced_purchases"), unique("traced_group"));
    let path = Path {
        consumer: &["consume", "purchases"],
        env: &[
            ("KAFKA_TOPIC", topic.as_str()),
            ("KAFKA_GROUPID", group.as_str()),
        ],
        route: "/buy",
        body: json!({"username": "traced", "userid": "7", "price": "12.50",
                     "timestamp": "2024-05-31T15:54:32.204Z"}),
    };
    check_one_trace(&pool, path, "req-traced-purchase-1").await;
}

/// Without a trace exporter the request still has a trace id: the one its event carries.
#[sqlx::test(migrations = "../migrations")]
async fn without_an_exporter_the_logs_and_the_event_name_the_same_trace(pool: PgPool) {
    let database_url = testkit::database_url(&pool).await;
    let gateway = testkit::gateway_launch(&database_url)
        .envs(&LOGS)
        .start()
        .await;
    let order = json!({"customer_id": 5, "product_name": "Untraced", "quantity": 1, "price": 3});
    let (status, body) = testkit::http::post_json(&gateway.url("/api/v1/orders"), &order).await;
    assert_eq!(status, 201, "{body}");
    let traceparent: String = sqlx::query_scalar(
        "SELECT headers->>'traceparent' FROM outbox_events ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let output = gateway.stop_cleanly().await;
    let lines: Vec<Value> = json_log_lines(&String::from_utf8_lossy(&output.stderr))
        .into_iter()
        .filter(|line| span_field(line, "route") == Some("/api/v1/orders"))
        .collect();
    assert!(!lines.is_empty(), "no log line of the request");
    for line in lines {
        assert_eq!(
            span_field(&line, "trace_id"),
            traceparent.split('-').nth(1),
            "{line}"
        );
        assert!(
            span_field(&line, "request_id").is_some_and(|id| !id.is_empty()),
            "{line}"
        );
    }
}
