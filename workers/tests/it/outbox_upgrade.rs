//! The upgrade to the broker-neutral outbox and the shared inbox, on a database that ran the
//! earlier orders pipeline: pending events still go out, to the same exchange, once.

use std::collections::HashSet;
use std::path::Path;

use lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use prometheus_client::registry::Registry;
use sqlx::migrate::Migrator;
use sqlx::PgPool;
use workers::relay::{RabbitPublisher, RabbitSettings, Relay, RelayMetrics, RelaySettings};

/// The first migration of the event pipeline.
const PIPELINE_MIGRATION: i64 = 20261123000001;

/// The `order.created` body's fields, in the message's order.
const CONTRACT_FIELDS: [&str; 8] = [
    "order_id",
    "customer_id",
    "product_name",
    "quantity",
    "price",
    "status",
    "event_id",
    "occurred_at",
];

/// An outbox row after the upgrade, as far as the test looks at it.
#[derive(sqlx::FromRow)]
struct UpgradedRow {
    status: String,
    broker: String,
    destination: String,
    message_key: String,
    id_header_is_event_id: bool,
    traceparent: Option<String>,
    body: String,
}

async fn migrator() -> Migrator {
    Migrator::new(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../migrations"
    )))
    .await
    .unwrap()
}

#[sqlx::test(migrations = false)]
async fn pending_events_written_before_the_upgrade_go_out_once_to_the_same_exchange(pool: PgPool) {
    let mut before = migrator().await;
    before.migrations = before
        .migrations
        .iter()
        .filter(|migration| migration.version < PIPELINE_MIGRATION)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    before.run(&pool).await.unwrap();
    // Rows as the earlier gateway wrote them: 1 pending, 2 pending although the consumer
    // applied it (the relay died between confirm and mark), 3 published.
    for (id, status) in [(1, "pending"), (2, "pending"), (3, "processed")] {
        sqlx::query(
            "INSERT INTO outbox_events (id, aggregate_type, aggregate_id, event_type, payload,
                                        status, traceparent)
             VALUES ($1, 'Order', $1::text, 'order.created',
                     jsonb_build_object('order_id', $1, 'customer_id', 4, 'product_name', 'Lamp',
                                        'quantity', 1, 'price', 25.5, 'status', 'pending',
                                        'event_id', $1::text,
                                        'occurred_at', '2026-11-20T10:00:00.000Z'),
                     $2, '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01')",
        )
        .bind(id)
        .bind(status)
        .execute(&pool)
        .await
        .unwrap();
    }
    sqlx::query("INSERT INTO processed_order_events (event_id) VALUES ('2'), ('3'), ('77')")
        .execute(&pool)
        .await
        .unwrap();

    migrator().await.run(&pool).await.unwrap();

    let rows: Vec<UpgradedRow> = sqlx::query_as(
        "SELECT status, broker, destination, message_key,
                headers ->> 'id' = event_id::text AS id_header_is_event_id,
                headers ->> 'traceparent' AS traceparent, payload::text AS body
         FROM outbox_events ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let statuses: Vec<&str> = rows.iter().map(|row| row.status.as_str()).collect();
    assert_eq!(statuses, ["pending", "processed", "processed"]);
    for row in &rows {
        assert_eq!(
            (
                row.broker.as_str(),
                row.destination.as_str(),
                row.message_key.as_str()
            ),
            ("rabbitmq", "orders.v1", "order.created")
        );
        assert!(
            row.id_header_is_event_id,
            "the id header must carry the event id"
        );
        let traceparent = row.traceparent.as_deref().unwrap_or_default();
        assert!(
            traceparent.starts_with("00-0af7651916cd43dd"),
            "{traceparent}"
        );
        let positions: Vec<usize> = CONTRACT_FIELDS
            .iter()
            .map(|field| {
                let quoted = format!("\"{field}\"");
                row.body
                    .find(&quoted)
                    .unwrap_or_else(|| panic!("{field} missing in {}", row.body))
            })
            .collect();
        assert!(
            positions.windows(2).all(|pair| pair[0] < pair[1]),
            "the body must keep the message's key order: {}",
            row.body
        );
    }
    let inbox: HashSet<String> =
        sqlx::query_scalar("SELECT event_key FROM processed_events WHERE consumer = 'orders'")
            .fetch_all(&pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    let expected: HashSet<String> = ["event_id:2", "event_id:3", "event_id:77"]
        .map(String::from)
        .into();
    assert_eq!(inbox, expected);

    // The relay sends the one pending row to the exchange it was meant for, once.
    let pending_id: String =
        sqlx::query_scalar("SELECT event_id::text FROM outbox_events WHERE id = 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    let (_connection, channel) =
        domain::amqp::connect("amqp://guest:guest@127.0.0.1:5672/%2f", "hub-tests")
            .await
            .unwrap();
    domain::amqp::QueueTopology::named("orders.v1", "")
        .declare_exchange(&channel)
        .await
        .unwrap();
    let observer = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            observer.name().as_str().into(),
            "orders.v1".into(),
            "order.created".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let publisher = RabbitSettings {
        url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
        consumer_queues: Vec::new(),
    };
    let settings = RelaySettings {
        batch_size: 100,
        max_attempts: 10,
    };
    let mut relay = Relay::<RabbitPublisher>::connect(
        pool.clone(),
        &publisher,
        settings,
        RelayMetrics::register(&mut Registry::default()),
    )
    .await
    .unwrap();
    assert_eq!(relay.process_next_batch().await.unwrap().published, 1);
    assert_eq!(relay.process_next_batch().await.unwrap().claimed, 0);
    let mut ours = 0;
    while let Some(message) = channel
        .basic_get(
            observer.name().as_str().into(),
            BasicGetOptions { no_ack: true },
        )
        .await
        .unwrap()
    {
        let id = message
            .delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.to_string());
        if id.as_deref() == Some(pending_id.as_str()) {
            ours += 1;
            let body: serde_json::Value = serde_json::from_slice(&message.delivery.data).unwrap();
            assert_eq!(body["event_id"], "1");
        }
    }
    assert_eq!(ours, 1);
}
