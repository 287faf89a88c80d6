//! `workers consume orders`: `order.created` events into the shop customers'
//! `orders_count`.
//!
//! Missing `event_id` or `customer_id`, or an unknown customer: acknowledged, skipped,
//! counted (as the original customer service did). Not JSON, or wrong types: poison.
//! Messages from foreign publishers (no `id` header, such as the original order service's
//! relay) are deduplicated on their body's `event_id`, as `event_id:<value>`.

use std::net::SocketAddr;

use clap::Args;
use domain::amqp::{OrdersTopologyArgs, RabbitArgs};
use domain::config::DatabaseArgs;
use domain::customers::CustomerSource;
use prometheus_client::registry::Registry;
use serde_json::Value;
use sqlx::PgConnection;

use super::{ConsumerMetrics, ConsumerSettings, Decoded, Effect, Handler};
use crate::stop::Stop;

/// Options of `workers consume orders`.
#[derive(Debug, Clone, Args)]
pub struct ConsumeOrdersArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub rabbit: RabbitArgs,
    /// Unacknowledged messages the broker may send ahead.
    #[arg(long, env = "CONSUMER_PREFETCH", default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..))]
    pub prefetch: u16,
    #[command(flatten)]
    pub orders: OrdersTopologyArgs,
    /// Address of the admin server (`/metrics`, `/healthz`).
    #[arg(long, env = "CONSUMER_ADMIN_ADDR", default_value = "127.0.0.1:9102")]
    pub admin_addr: SocketAddr,
}

impl ConsumeOrdersArgs {
    /// The consumer settings these options describe.
    pub fn settings(&self) -> ConsumerSettings {
        ConsumerSettings {
            topology: self.orders.topology(),
            routing_key: domain::orders::ORDER_CREATED.to_owned(),
            prefetch: self.prefetch,
            delivery_limit: self.orders.delivery_limit,
        }
    }
}

/// An `order.created` event, as far as the count needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderCreated {
    /// The body's `event_id`, as text.
    pub event_id: String,
    /// The shop customer's id, as text (its `external_id`).
    pub customer_id: String,
}

/// Counts each order once on its customer.
#[derive(Debug, Clone, Copy, Default)]
pub struct OrdersHandler;

impl Handler for OrdersHandler {
    type Event = OrderCreated;
    const NAME: &'static str = "orders";

    fn decode(&self, body: &[u8]) -> Decoded<OrderCreated> {
        let value: Value = match serde_json::from_slice(body) {
            Ok(value) => value,
            Err(error) => return Decoded::Poison(format!("not JSON: {error}")),
        };
        let Some(fields) = value.as_object() else {
            return Decoded::Poison("not a JSON object".into());
        };
        let event_id = match fields.get("event_id") {
            None | Some(Value::Null) => return Decoded::Skip("missing event_id"),
            Some(Value::String(id)) if !id.is_empty() => id.clone(),
            Some(Value::Number(id)) if id.is_u64() => id.to_string(),
            Some(other) => return Decoded::Poison(format!("event_id has the wrong type: {other}")),
        };
        let customer_id = match fields.get("customer_id") {
            None | Some(Value::Null) => return Decoded::Skip("missing customer_id"),
            Some(Value::Number(id)) if id.is_i64() => id.to_string(),
            // The original (Rails) looked customers up by id and accepted "5" as well as 5.
            Some(Value::String(id)) if id.parse::<i64>().is_ok() => id.clone(),
            Some(other) => {
                return Decoded::Poison(format!("customer_id has the wrong type: {other}"))
            }
        };
        Decoded::Event(OrderCreated {
            event_id,
            customer_id,
        })
    }

    fn foreign_key(&self, event: &OrderCreated) -> Option<String> {
        Some(format!("event_id:{}", event.event_id))
    }

    async fn apply(
        &self,
        transaction: &mut PgConnection,
        event: &OrderCreated,
        _key: &str,
    ) -> Result<Effect, sqlx::Error> {
        let counted = sqlx::query(
            "UPDATE customers SET orders_count = orders_count + 1, updated_at = now()
             WHERE source = $1 AND external_id = $2",
        )
        .bind(CustomerSource::Shop.as_str())
        .bind(&event.customer_id)
        .execute(&mut *transaction)
        .await?
        .rows_affected()
            == 1;
        Ok(match counted {
            true => Effect::Applied,
            false => Effect::Skipped("unknown customer"),
        })
    }
}

/// Runs `workers consume orders` until SIGTERM or ctrl-c.
pub(super) async fn run(args: ConsumeOrdersArgs) -> anyhow::Result<()> {
    let pool = domain::db::connect_and_migrate(&args.database, 4).await?;
    let mut registry = Registry::default();
    let metrics = ConsumerMetrics::register(&mut registry);
    // Unhealthy until the consumer consumes (then whenever it cannot).
    metrics
        .health
        .unable(&"not consuming yet: connecting to RabbitMQ");
    crate::admin::spawn(args.admin_addr, registry, vec![metrics.health.clone()]).await?;
    let stop = Stop::on_signal();
    let heartbeat = crate::health::spawn_heartbeat(
        pool.clone(),
        domain::pipelines::ORDERS_CONSUMER,
        metrics.health.clone(),
        stop.clone(),
    );
    super::run_consumer(
        pool,
        OrdersHandler,
        args.rabbit.url(),
        args.settings(),
        metrics,
        stop,
    )
    .await?;
    heartbeat.await?;
    Ok(())
}
