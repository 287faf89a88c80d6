//! Batched loading for nested fields: every `Customer.orders` or `Order.customer` asked
//! for while resolving one level of a query is fetched by a single SQL query, so listing
//! 100 customers with their orders costs a constant number of queries, not 100. Objects
//! asked for by global id in a batch (a federation router's `_entities`) are loaded the
//! same way: one query per type.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::{DataLoader, Loader};
use domain::customers::{Customer, CustomerKey};
use domain::orders::Order;
use domain::warm::WarmConnections;

use super::ids::GlobalId;
use crate::errors::ApiError;

/// The loaders a request uses, stored in the schema's data. They batch, they do not
/// cache: every request reads current rows.
pub struct Loaders {
    /// Customers by natural key.
    pub customers: DataLoader<CustomerLoader>,
    /// The newest orders of shop customers, by (shop customer id, how many).
    pub newest_orders: DataLoader<NewestOrdersLoader>,
    /// Customers, orders and purchases by global id.
    pub objects: DataLoader<ObjectLoader>,
}

impl Loaders {
    /// Loaders reading on `warm`'s connections.
    pub fn new(warm: Arc<WarmConnections>) -> Self {
        Self {
            customers: DataLoader::new(CustomerLoader(warm.clone()), spawn_in_context),
            newest_orders: DataLoader::new(NewestOrdersLoader(warm.clone()), spawn_in_context),
            objects: DataLoader::new(ObjectLoader(warm), spawn_in_context),
        }
    }
}

/// Spawns a batch load with the current span and subscriber, so its queries are logged
/// and traced as part of the operation that asked for them.
fn spawn_in_context(
    load: futures_util::future::BoxFuture<'static, ()>,
) -> tokio::task::JoinHandle<()> {
    use tracing::instrument::{Instrument, WithSubscriber};
    tokio::spawn(
        load.instrument(tracing::Span::current())
            .with_current_subscriber(),
    )
}

/// A loader's error: shared by every key of the batch that failed.
fn failed(error: domain::Error) -> Arc<ApiError> {
    Arc::new(ApiError::from(error))
}

/// An object [`ObjectLoader`] loads.
#[derive(Debug, Clone)]
pub enum Object {
    /// A customer.
    Customer(Customer),
    /// An order.
    Order(Order),
    /// A purchase.
    Purchase(domain::purchases::Purchase),
}

/// Loads customers, orders and purchases by global id: one query per type in the batch.
pub struct ObjectLoader(Arc<WarmConnections>);

impl Loader<GlobalId> for ObjectLoader {
    type Value = Object;
    type Error = Arc<ApiError>;

    async fn load(&self, ids: &[GlobalId]) -> Result<HashMap<GlobalId, Object>, Self::Error> {
        let (mut customers, mut orders, mut purchases) = (Vec::new(), Vec::new(), Vec::new());
        for id in ids {
            match id {
                GlobalId::Customer(key) => customers.push(key.clone()),
                GlobalId::Order(id) => orders.push(*id),
                GlobalId::Purchase(id) => purchases.push(*id),
            }
        }
        let mut found = HashMap::with_capacity(ids.len());
        let mut lease = self.0.lease().await.map_err(failed)?;
        if !customers.is_empty() {
            for customer in domain::customers::find_many(&mut *lease, &customers)
                .await
                .map_err(failed)?
            {
                found.insert(
                    GlobalId::Customer(customer.key.clone()),
                    Object::Customer(customer),
                );
            }
        }
        if !orders.is_empty() {
            for order in domain::orders::find_many(&mut *lease, &orders)
                .await
                .map_err(failed)?
            {
                found.insert(GlobalId::Order(order.id), Object::Order(order));
            }
        }
        if !purchases.is_empty() {
            for purchase in domain::purchases::find_many(&mut *lease, &purchases)
                .await
                .map_err(failed)?
            {
                found.insert(GlobalId::Purchase(purchase.id), Object::Purchase(purchase));
            }
        }
        lease.release();
        Ok(found)
    }
}

/// Loads customers by natural key.
pub struct CustomerLoader(Arc<WarmConnections>);

impl Loader<CustomerKey> for CustomerLoader {
    type Value = Customer;
    type Error = Arc<ApiError>;

    async fn load(
        &self,
        keys: &[CustomerKey],
    ) -> Result<HashMap<CustomerKey, Customer>, Self::Error> {
        let mut lease = self.0.lease().await.map_err(failed)?;
        let customers = domain::customers::find_many(&mut *lease, keys)
            .await
            .map_err(failed)?;
        lease.release();
        Ok(customers
            .into_iter()
            .map(|customer| (customer.key.clone(), customer))
            .collect())
    }
}

/// Loads the newest `n` orders of shop customers, keyed by (customer id, n).
pub struct NewestOrdersLoader(Arc<WarmConnections>);

impl Loader<(i64, i64)> for NewestOrdersLoader {
    type Value = Vec<Order>;
    type Error = Arc<ApiError>;

    async fn load(
        &self,
        keys: &[(i64, i64)],
    ) -> Result<HashMap<(i64, i64), Vec<Order>>, Self::Error> {
        let mut by_limit: HashMap<i64, Vec<i64>> = HashMap::new();
        for (customer_id, limit) in keys {
            by_limit.entry(*limit).or_default().push(*customer_id);
        }
        let mut loaded: HashMap<(i64, i64), Vec<Order>> =
            keys.iter().map(|key| (*key, Vec::new())).collect();
        let mut lease = self.0.lease().await.map_err(failed)?;
        for (limit, customer_ids) in by_limit {
            let orders = domain::orders::newest_for_customers(&mut *lease, &customer_ids, limit)
                .await
                .map_err(failed)?;
            for order in orders {
                loaded
                    .entry((order.customer_id, limit))
                    .or_default()
                    .push(order);
            }
        }
        lease.release();
        Ok(loaded)
    }
}
