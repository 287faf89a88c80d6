//! The Relay `Node` interface and `node(id:)`.

use async_graphql::{Context, Interface, Object, ID};

use super::customers::Customer;
use super::ids::GlobalId;
use super::orders::Order;
use super::purchases::Purchase;
use crate::errors::{ApiError, IntoGraphql};
use crate::AppState;

/// An object with a global id.
#[derive(Interface)]
#[graphql(field(name = "id", ty = "ID", desc = "The object's global id."))]
pub enum Node {
    /// A customer.
    Customer(Customer),
    /// An order.
    Order(Order),
    /// A purchase.
    Purchase(Purchase),
}

#[derive(Default)]
pub struct NodeQuery;

#[Object]
impl NodeQuery {
    /// Any object by its global id; null when it does not exist.
    async fn node(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Node>> {
        let state = ctx.data_unchecked::<AppState>();
        match GlobalId::decode(&id).map_err(|error: ApiError| async_graphql::Error::from(error))? {
            GlobalId::Customer(key) => Ok(domain::customers::find(&state.pool, &key)
                .await
                .graphql()?
                .map(|customer| Node::Customer(Customer(customer)))),
            GlobalId::Order(id) => Ok(domain::orders::find(&state.pool, id)
                .await
                .graphql()?
                .map(|order| Node::Order(Order(order)))),
            GlobalId::Purchase(id) => Ok(domain::purchases::find(&state.pool, id)
                .await
                .graphql()?
                .map(|purchase| Node::Purchase(Purchase(purchase)))),
        }
    }
}
