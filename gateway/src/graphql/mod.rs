//! The GraphQL schema: one module per entity, merged here. `schema_builder` is all the
//! schema needs for its SDL; `build_schema` adds the running gateway's state.

mod customers;
mod ids;
mod node;

use std::sync::Arc;

use async_graphql::extensions::Tracing;
use async_graphql::{MergedObject, MergedSubscription, Schema, SchemaBuilder};

use crate::metrics::{Metrics, OperationMetrics};
use crate::AppState;

pub use self::ids::GlobalId;

/// Every query field.
#[derive(MergedObject, Default)]
pub struct Query(customers::CustomerQuery, node::NodeQuery);

/// Every mutation.
#[derive(MergedObject, Default)]
pub struct Mutation(customers::CustomerMutation);

/// Every subscription.
#[derive(MergedSubscription, Default)]
pub struct Subscription(customers::CustomerSubscription);

/// The hub's schema type.
pub type HubSchema = Schema<Query, Mutation, Subscription>;

/// Deepest query accepted: enough for every real query, too shallow for abuse.
const MAX_DEPTH: usize = 16;
/// Largest query complexity accepted.
const MAX_COMPLEXITY: usize = 5_000;

/// The schema without runtime data: enough to print the SDL.
pub fn schema_builder() -> SchemaBuilder<Query, Mutation, Subscription> {
    Schema::build(
        Query::default(),
        Mutation::default(),
        Subscription::default(),
    )
    .limit_depth(MAX_DEPTH)
    .limit_complexity(MAX_COMPLEXITY)
}

/// The schema served by a running gateway.
pub fn build_schema(state: AppState, metrics: Arc<Metrics>) -> HubSchema {
    schema_builder()
        .extension(Tracing)
        .extension(OperationMetrics(metrics))
        .data(state)
        .finish()
}

/// The SDL, as checked in at `schema.graphql`.
pub fn sdl() -> String {
    schema_builder().finish().sdl()
}
