//! The GraphQL schema: one module per entity, merged here. `schema_builder` is all the
//! schema needs for its SDL; `build_schema` adds the running gateway's state.

pub mod authorization;
mod bounded_cache;
mod customers;
pub mod documents;
pub mod handler;
mod ids;
pub mod limits;
mod loaders;
mod node;
mod orders;
pub mod persisted;
mod pipelines;
mod profiles;
mod purchases;

use std::sync::Arc;

use async_graphql::extensions::Tracing;
use async_graphql::{MergedObject, MergedSubscription, Schema, SchemaBuilder};

use self::limits::LimitMode;
use crate::metrics::{Metrics, OperationMetrics};
use crate::AppState;

pub use self::ids::GlobalId;

/// Every query field.
#[derive(MergedObject, Default)]
pub struct Query(
    customers::CustomerQuery,
    orders::OrderQuery,
    purchases::PurchaseQuery,
    profiles::UserProfileQuery,
    pipelines::PipelineQuery,
    node::NodeQuery,
);

/// Every mutation.
#[derive(MergedObject, Default)]
pub struct Mutation(
    customers::CustomerMutation,
    orders::OrderMutation,
    purchases::PurchaseMutation,
);

/// Every subscription.
#[derive(MergedSubscription, Default)]
pub struct Subscription(
    customers::CustomerSubscription,
    orders::OrderSubscription,
    purchases::PurchaseSubscription,
    pipelines::PipelineSubscription,
);

/// The hub's schema type.
pub type HubSchema = Schema<Query, Mutation, Subscription>;

/// Page size when `first` is not given.
const DEFAULT_PAGE_SIZE: i32 = 20;
/// Largest `first` accepted.
const MAX_PAGE_SIZE: i32 = 100;

/// Checks a `first` argument (0 to 100; `None` means the default of 20).
fn page_size(first: Option<i32>) -> Result<usize, crate::errors::ApiError> {
    let first = first.unwrap_or(DEFAULT_PAGE_SIZE);
    usize::try_from(first)
        .ok()
        .filter(|_| first <= MAX_PAGE_SIZE)
        .ok_or_else(|| {
            crate::errors::ApiError::new(
                crate::errors::ErrorKind::BadUserInput,
                format!("first must be between 0 and {MAX_PAGE_SIZE}, got {first}"),
            )
        })
}

/// A Relay connection page from `rows`, fetched as `first + 1` so that the extra row tells
/// whether a next page exists; `edge` gives each node its cursor.
fn page<Row, Node, Fields>(
    mut rows: Vec<Row>,
    first: usize,
    after_given: bool,
    fields: Fields,
    edge: impl Fn(Row) -> (String, Node),
) -> async_graphql::connection::Connection<String, Node, Fields>
where
    Node: async_graphql::OutputType,
    Fields: async_graphql::ObjectType,
{
    let has_next_page = rows.len() > first;
    rows.truncate(first);
    let mut connection = async_graphql::connection::Connection::with_additional_fields(
        after_given,
        has_next_page,
        fields,
    );
    connection.edges.extend(rows.into_iter().map(|row| {
        let (cursor, node) = edge(row);
        async_graphql::connection::Edge::new(cursor, node)
    }));
    connection
}

/// Reads an `after` cursor of a connection ordered by row id; anything else is
/// `BAD_USER_INPUT`.
fn row_cursor(after: Option<&str>) -> Result<Option<i64>, crate::errors::ApiError> {
    after
        .map(|cursor| {
            cursor.parse::<i64>().map_err(|_| {
                crate::errors::ApiError::new(
                    crate::errors::ErrorKind::BadUserInput,
                    format!("malformed cursor {cursor:?}"),
                )
            })
        })
        .transpose()
}

/// The schema without runtime data: enough to print the SDL. What a document may cost is
/// checked by [`limits::DocumentLimits`], which [`build_schema`] adds.
pub fn schema_builder() -> SchemaBuilder<Query, Mutation, Subscription> {
    Schema::build(
        Query::default(),
        Mutation::default(),
        Subscription::default(),
    )
}

/// The schema served by a running gateway.
pub fn build_schema(state: AppState, metrics: Arc<Metrics>) -> HubSchema {
    build_schemas(state, metrics).0
}

/// The schema served by a running gateway, and the path repeated requests take around its
/// extensions (`None` where a request must meet every extension each time: the document
/// cache is off, limits are only measured, or per-field spans are on).
pub fn build_schemas(
    state: AppState,
    metrics: Arc<Metrics>,
) -> (HubSchema, Option<documents::RepeatedOperations>) {
    let graphql = &state.config.graphql;
    let documents =
        documents::DocumentCache::new(graphql.graphql_document_cache_bytes, metrics.clone());
    let lean_allowed = !graphql.graphql_field_spans && graphql.limits().mode == LimitMode::Enforce;
    let repeated = lean_allowed
        .then(|| {
            let lean = schema_builder()
                .validation_mode(async_graphql::ValidationMode::Fast)
                .data(loaders::Loaders::new(state.warm.clone()))
                .data(state.clone())
                .finish();
            documents.repeated_operations(lean, state.auth.clone())
        })
        .flatten();
    let mut builder = schema_builder()
        .extension(persisted::PersistedQueryStore::new(
            graphql.persisted_queries(),
        ))
        .extension(documents)
        .extension(limits::DocumentLimits(graphql.limits()))
        .extension(authorization::Authorization(state.auth.clone()));
    if graphql.graphql_field_spans {
        builder = builder.extension(Tracing);
    }
    let schema = builder
        .extension(OperationMetrics(metrics))
        .data(loaders::Loaders::new(state.warm.clone()))
        .data(state)
        .finish();
    (schema, repeated)
}

/// The SDL, as checked in at `schema.graphql`.
pub fn sdl() -> String {
    schema_builder().finish().sdl()
}
