//! Objects by global id: the Relay `Node` interface and `node(id:)`, and the Apollo
//! Federation v2 reference resolvers (`_entities` for `Customer`, `Order` and `Purchase`,
//! each keyed by `id`), which make the gateway a subgraph a federation router can compose
//! (`_service { sdl }`). Both load through [`Loaders::objects`], so a router's batch of
//! representations costs one query per type.

use async_graphql::{Context, Interface, Object, ID};

use super::customers::Customer;
use super::ids::GlobalId;
use super::loaders::{Loaders, Object as Loaded};
use super::orders::Order;
use super::purchases::Purchase;

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

impl From<Loaded> for Node {
    fn from(object: Loaded) -> Self {
        match object {
            Loaded::Customer(customer) => Node::Customer(Customer::from(customer)),
            Loaded::Order(order) => Node::Order(Order::from(order)),
            Loaded::Purchase(purchase) => Node::Purchase(Purchase(purchase)),
        }
    }
}

/// The object `global_id` names, `None` when it does not exist.
async fn load(ctx: &Context<'_>, global_id: GlobalId) -> async_graphql::Result<Option<Node>> {
    let loaded = ctx
        .data_unchecked::<Loaders>()
        .objects
        .load_one(global_id)
        .await
        .map_err(|error| async_graphql::Error::from((*error).clone()))?;
    Ok(loaded.map(Node::from))
}

/// The entity a federation representation's `id` names, when `is_wanted` says it is one
/// of ours of the representation's type; null for any other id (one entry of the router's
/// batch, not the whole batch, as an error would make it).
async fn entity(
    ctx: &Context<'_>,
    id: &ID,
    is_wanted: fn(&GlobalId) -> bool,
) -> async_graphql::Result<Option<Node>> {
    match GlobalId::decode(id).ok().filter(is_wanted) {
        Some(global_id) => load(ctx, global_id).await,
        None => Ok(None),
    }
}

#[derive(Default)]
pub struct NodeQuery;

#[Object]
impl NodeQuery {
    /// Any object by its global id; null when it does not exist.
    async fn node(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Node>> {
        load(ctx, GlobalId::decode(&id)?).await
    }

    /// Federation: a `Customer` by its `id`.
    #[graphql(entity)]
    async fn find_customer_by_id(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<Customer>> {
        Ok(
            match entity(ctx, &id, |id| matches!(id, GlobalId::Customer(_))).await? {
                Some(Node::Customer(customer)) => Some(customer),
                _ => None,
            },
        )
    }

    /// Federation: an `Order` by its `id`.
    #[graphql(entity)]
    async fn find_order_by_id(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<Order>> {
        Ok(
            match entity(ctx, &id, |id| matches!(id, GlobalId::Order(_))).await? {
                Some(Node::Order(order)) => Some(order),
                _ => None,
            },
        )
    }

    /// Federation: a `Purchase` by its `id`.
    #[graphql(entity)]
    async fn find_purchase_by_id(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<Purchase>> {
        Ok(
            match entity(ctx, &id, |id| matches!(id, GlobalId::Purchase(_))).await? {
                Some(Node::Purchase(purchase)) => Some(purchase),
                _ => None,
            },
        )
    }
}
