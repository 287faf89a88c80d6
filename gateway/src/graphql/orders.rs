//! Orders in GraphQL: the `Order` type, `order`, `orders` (newest first, a Relay
//! connection), `createOrder`, `retryFailedEvents` and the live `orderCreated`
//! subscription (fed by RabbitMQ).

use async_graphql::connection::Connection;
use async_graphql::{Context, Enum, InputObject, Object, Subscription, ID};
use chrono::{DateTime, Utc};
use domain::customers::{CustomerKey, CustomerSource};
use domain::orders::{NewOrder, Placed};
use futures_util::{Stream, StreamExt};
use rust_decimal::Decimal;

use super::customers::Customer;
use super::ids::GlobalId;
use super::loaders::Loaders;
use crate::errors::{ApiError, ErrorKind, IntoGraphql};
use crate::AppState;

/// Where an order stands.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "domain::orders::OrderStatus")]
pub enum OrderStatus {
    /// Placed, not yet worked on.
    Pending,
    /// Being prepared.
    Processing,
    /// Delivered.
    Completed,
    /// Called off.
    Cancelled,
}

/// An order of a shop customer.
pub struct Order {
    order: domain::orders::Order,
    /// Its customer, when it was read with the order (an `orders` page asking for it
    /// joins it); otherwise `customer` loads it, batched.
    customer: Option<Option<domain::customers::Customer>>,
}

impl From<domain::orders::Order> for Order {
    fn from(order: domain::orders::Order) -> Self {
        Self {
            order,
            customer: None,
        }
    }
}

#[Object]
impl Order {
    /// Global id, usable with `order(id:)` and `node(id:)`.
    pub async fn id(&self) -> ID {
        ID(GlobalId::Order(self.order.id).encode())
    }

    /// The shop customer who placed it.
    async fn customer(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Customer>> {
        if let Some(customer) = &self.customer {
            return Ok(customer.clone().map(Customer::from));
        }
        let key = shop_key(self.order.customer_id);
        let loaders = ctx.data_unchecked::<Loaders>();
        Ok(loaders
            .customers
            .load_one(key)
            .await
            .map_err(|error| (*error).clone())?
            .map(Customer::from))
    }

    /// What was ordered.
    async fn product_name(&self) -> &str {
        &self.order.product_name
    }

    /// How many.
    async fn quantity(&self) -> i32 {
        self.order.quantity
    }

    /// Unit price, exact to the cent.
    async fn price(&self) -> Decimal {
        self.order.price
    }

    /// Where it stands.
    async fn status(&self) -> OrderStatus {
        self.order.status.into()
    }

    /// When it was placed.
    async fn created_at(&self) -> DateTime<Utc> {
        self.order.created_at
    }
}

/// The natural key of shop customer `id`.
pub fn shop_key(id: i64) -> CustomerKey {
    CustomerKey {
        source: CustomerSource::Shop,
        external_id: id.to_string(),
    }
}

/// The shop customer id behind a customer's global id; orders exist only for shop
/// customers.
fn shop_customer_id(id: &ID) -> Result<i64, ApiError> {
    let key = GlobalId::decode_customer(id)?;
    match (key.source, key.external_id.parse::<i64>()) {
        (CustomerSource::Shop, Ok(shop_id)) => Ok(shop_id),
        _ => Err(ApiError::new(
            ErrorKind::BadUserInput,
            format!(
                "orders belong to shop customers; {} customers have none",
                key.source
            ),
        )),
    }
}

/// Input of `createOrder`.
#[derive(InputObject)]
pub struct CreateOrderInput {
    /// The shop customer's global id.
    customer_id: ID,
    /// What is ordered (1 to 255 characters; names need not be unique).
    product_name: String,
    /// How many (>= 0).
    quantity: i32,
    /// Unit price (>= 0, rounded to cents).
    price: Decimal,
    /// Initial status (default PENDING).
    status: Option<OrderStatus>,
}

/// Fields of the orders connection beside edges and pageInfo.
pub struct OrderConnectionFields {
    customer_id: Option<i64>,
}

#[Object]
impl OrderConnectionFields {
    /// How many orders match, across all pages.
    async fn total_count(&self, ctx: &Context<'_>) -> async_graphql::Result<i64> {
        let state = ctx.data_unchecked::<AppState>();
        domain::orders::count(&state.pool, self.customer_id)
            .await
            .graphql()
    }
}

#[derive(Default)]
pub struct OrderQuery;

#[Object]
impl OrderQuery {
    /// One order by global id; null when it does not exist.
    async fn order(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Order>> {
        let order_id = GlobalId::decode_order(&id)?;
        let state = ctx.data_unchecked::<AppState>();
        let mut lease = state.warm.lease().await.graphql()?;
        let found = domain::orders::find(&mut *lease, order_id)
            .await
            .graphql()?;
        lease.release();
        Ok(found.map(Order::from))
    }

    /// Orders newest first, optionally of one shop customer.
    async fn orders(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "A shop customer's global id.")] customer_id: Option<ID>,
        #[graphql(desc = "Page size, 0 to 100 (default 20).")] first: Option<i32>,
        #[graphql(desc = "The `endCursor` of the previous page.")] after: Option<String>,
    ) -> async_graphql::Result<Connection<String, Order, OrderConnectionFields>> {
        let first = super::page_size(first)?;
        let customer_id = customer_id.as_ref().map(shop_customer_id).transpose()?;
        let before_id = super::row_cursor(after.as_deref())?;
        let state = ctx.data_unchecked::<AppState>();
        let limit = first as i64 + 1;
        let with_customers = ctx
            .look_ahead()
            .field("edges")
            .field("node")
            .field("customer")
            .exists();
        let mut lease = state.warm.lease().await.graphql()?;
        let rows: Vec<Order> = if with_customers {
            domain::orders::page_with_customers(&mut *lease, customer_id, before_id, limit)
                .await
                .graphql()?
                .into_iter()
                .map(|(order, customer)| Order {
                    order,
                    customer: Some(customer),
                })
                .collect()
        } else {
            domain::orders::page(&mut *lease, customer_id, before_id, limit)
                .await
                .graphql()?
                .into_iter()
                .map(Order::from)
                .collect()
        };
        lease.release();
        Ok(super::page(
            rows,
            first,
            before_id.is_some(),
            OrderConnectionFields { customer_id },
            |order| (order.order.id.to_string(), order),
        ))
    }
}

#[derive(Default)]
pub struct OrderMutation;

#[Object]
impl OrderMutation {
    /// Places an order; its `order.created` event is published by the relay. With an
    /// `idempotencyKey`, a repeat with the same input returns the first order, and a repeat
    /// with different input is an `IDEMPOTENCY_KEY_REUSED` error.
    async fn create_order(
        &self,
        ctx: &Context<'_>,
        input: CreateOrderInput,
        idempotency_key: Option<String>,
    ) -> async_graphql::Result<Order> {
        let customer_id = shop_customer_id(&input.customer_id)?;
        let status = input.status.unwrap_or(OrderStatus::Pending).into();
        let new = NewOrder::new(
            customer_id,
            &input.product_name,
            i64::from(input.quantity),
            input.price,
            status,
        )
        .graphql()?;
        let state = ctx.data_unchecked::<AppState>();
        let origin = super::handler::request_origin(ctx);
        let placed = domain::orders::place(
            &state.pool,
            &state.orders_destination(),
            &new,
            idempotency_key.as_deref(),
            Some(&origin),
        )
        .await
        .graphql()?;
        Ok(match placed {
            Placed::Created(order) | Placed::Replayed(order) => Order::from(order),
        })
    }

    /// Puts every outbox event that ran out of attempts back in line; returns how many.
    async fn retry_failed_events(&self, ctx: &Context<'_>) -> async_graphql::Result<u64> {
        let state = ctx.data_unchecked::<AppState>();
        domain::outbox::retry_failed(&state.pool).await.graphql()
    }
}

#[derive(Default)]
pub struct OrderSubscription;

#[Subscription]
impl OrderSubscription {
    /// Every order as its `order.created` event passes through RabbitMQ, optionally only
    /// those of one shop customer. Every gateway instance sees every order.
    async fn order_created(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "A shop customer's global id.")] customer_id: Option<ID>,
    ) -> async_graphql::Result<impl Stream<Item = Order>> {
        let wanted = customer_id.as_ref().map(shop_customer_id).transpose()?;
        let state = ctx.data_unchecked::<AppState>();
        Ok(state.live.orders_created().filter_map(move |event| {
            let order = &event.0;
            let wanted = wanted.is_none_or(|id| id == order.customer_id);
            std::future::ready(wanted.then(|| Order::from(order.as_ref().clone())))
        }))
    }
}
