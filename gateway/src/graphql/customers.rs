//! Customers in GraphQL: the `Customer` type, `customer`, `customers` (a Relay connection
//! ordered by source then external id), the `ingestCustomers` mutation, and the
//! `customersIngested` and `customerChanged` subscriptions.

use std::collections::HashMap;

use async_graphql::connection::Connection;
use async_graphql::{Context, Enum, Lookahead, Object, SimpleObject, Subscription, Value, ID};
use chrono::{DateTime, NaiveDate, Utc};
use futures_util::{Stream, StreamExt};
use rust_decimal::Decimal;

use super::ids::{customer_cursor, decode_customer_cursor, GlobalId};
use crate::errors::{ApiError, ErrorKind, IntoGraphql};
use crate::AppState;

/// Where a customer record comes from.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "domain::customers::CustomerSource")]
pub enum CustomerSource {
    /// The original accounts service, ingested with `ingestCustomers`.
    Accounts,
    /// The original CRM (paginated API and ZeroMQ feed), kept in step by the indexer.
    Crm,
    /// The shop's customer service (orders).
    Shop,
    /// The profile source (seed 002), kept by `workers sync`.
    Profiles,
}

/// A customer from one source system, with its newest orders when they were read with it
/// (see [`with_newest_orders`]).
pub struct Customer(pub domain::customers::Customer, Option<NewestOrders>);

impl From<domain::customers::Customer> for Customer {
    fn from(record: domain::customers::Customer) -> Self {
        Self(record, None)
    }
}

/// A customer's newest orders, read with the customer: how many were asked for, and those.
struct NewestOrders {
    first: i64,
    orders: Vec<domain::orders::Order>,
}

/// How many newest orders `Customer.orders` gives when `first` is not said.
const NEWEST_ORDERS_BY_DEFAULT: i32 = 10;

/// The shop customer id of a shop customer (the only ones with orders).
fn shop_id(record: &domain::customers::Customer) -> Option<i64> {
    match record.key.source {
        domain::customers::CustomerSource::Shop => record.key.external_id.parse().ok(),
        _ => None,
    }
}

/// How many newest orders the `orders` fields under `customers` (the selections where
/// customers are resolved) ask for, when they all ask for the same valid number; `None`
/// when none asks, or they differ (then each loads its own, batched).
fn newest_orders_wanted(customers: &[Lookahead<'_>]) -> Option<i64> {
    let mut wanted = None;
    for field in customers
        .iter()
        .flat_map(|customer| customer.field("orders").selection_fields())
    {
        let arguments = field.arguments().ok()?;
        let first = match arguments.iter().find(|(name, _)| name.as_str() == "first") {
            None => NEWEST_ORDERS_BY_DEFAULT,
            Some((_, Value::Number(number))) => i32::try_from(number.as_i64()?).ok()?,
            Some(_) => return None,
        };
        let first = i64::try_from(super::page_size(Some(first)).ok()?).ok()?;
        if wanted.is_some_and(|earlier| earlier != first) {
            return None;
        }
        wanted = Some(first);
    }
    wanted
}

/// `records` as GraphQL customers. When the query asks for their newest orders
/// ([`newest_orders_wanted`]), those of every shop customer among them are read in one
/// statement right away, instead of through the batching loader, which waits a
/// millisecond to gather its keys.
async fn with_newest_orders(
    ctx: &Context<'_>,
    records: Vec<domain::customers::Customer>,
    customers: &[Lookahead<'_>],
) -> async_graphql::Result<Vec<Customer>> {
    let plain = |records: Vec<domain::customers::Customer>| {
        Ok(records.into_iter().map(Customer::from).collect())
    };
    let Some(first) = newest_orders_wanted(customers) else {
        return plain(records);
    };
    let shop_ids: Vec<i64> = records.iter().filter_map(shop_id).collect();
    if shop_ids.is_empty() {
        return plain(records);
    }
    // Boxed: the usual answer (no orders asked for) keeps the resolvers' futures small.
    Box::pin(read_newest_orders(ctx, records, &shop_ids, first)).await
}

/// `records` with the newest `first` orders of each of their shop customers (`shop_ids`),
/// read in one statement.
async fn read_newest_orders(
    ctx: &Context<'_>,
    records: Vec<domain::customers::Customer>,
    shop_ids: &[i64],
    first: i64,
) -> async_graphql::Result<Vec<Customer>> {
    let mut lease = ctx
        .data_unchecked::<AppState>()
        .warm
        .lease()
        .await
        .graphql()?;
    let newest = domain::orders::newest_for_customers(&mut *lease, shop_ids, first)
        .await
        .graphql()?;
    lease.release();
    let mut by_customer: HashMap<i64, Vec<domain::orders::Order>> = HashMap::new();
    for order in newest {
        by_customer
            .entry(order.customer_id)
            .or_default()
            .push(order);
    }
    Ok(records
        .into_iter()
        .map(|record| {
            let newest = shop_id(&record).map(|id| NewestOrders {
                first,
                orders: by_customer.remove(&id).unwrap_or_default(),
            });
            Customer(record, newest)
        })
        .collect())
}

#[Object]
impl Customer {
    /// Global id, usable with `customer(id:)` and `node(id:)`.
    pub async fn id(&self) -> ID {
        ID(GlobalId::Customer(self.0.key.clone()).encode())
    }

    /// The source system.
    async fn source(&self) -> CustomerSource {
        self.0.key.source.into()
    }

    /// The id the source system gave this customer (`CUST001`, `42`...).
    async fn external_id(&self) -> &str {
        &self.0.key.external_id
    }

    /// First name, when the source has one.
    async fn first_name(&self) -> Option<&str> {
        self.0.first_name.as_deref()
    }

    /// Last name, when the source has one.
    async fn last_name(&self) -> Option<&str> {
        self.0.last_name.as_deref()
    }

    /// Email addresses.
    async fn emails(&self) -> &[String] {
        &self.0.emails
    }

    /// Phone number as the source wrote it.
    async fn phone(&self) -> Option<&str> {
        self.0.phone.as_deref()
    }

    /// Postal address.
    async fn address(&self) -> Option<&str> {
        self.0.address.as_deref()
    }

    /// Date of birth.
    async fn date_of_birth(&self) -> Option<NaiveDate> {
        self.0.date_of_birth
    }

    /// Account balance, exact to the cent (a decimal string such as "1250.50").
    async fn account_balance(&self) -> Option<Decimal> {
        self.0.account_balance
    }

    /// The source's creation time, or when the hub first stored the record; null for an
    /// accounts customer whose upstream `created_at` was missing or unreadable.
    async fn created_at(&self) -> Option<DateTime<Utc>> {
        self.0.created_at
    }

    /// When the stored record last changed.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }

    /// Orders this customer placed, as counted by the `order.created` consumer (0 for
    /// customers of sources without orders).
    async fn orders_count(&self) -> i64 {
        self.0.orders_count
    }

    /// The customer's newest orders (shop customers; empty for other sources). Read with
    /// the customers of `customer` and `customers` (one statement for the page), batched
    /// elsewhere: any number of customers in one query cost one SQL query.
    async fn orders(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            default_with = "NEWEST_ORDERS_BY_DEFAULT",
            desc = "How many, 0 to 100."
        )]
        first: i32,
    ) -> async_graphql::Result<Vec<super::orders::Order>> {
        let first = super::page_size(Some(first))?;
        if let Some(newest) = self
            .1
            .as_ref()
            .filter(|newest| newest.first == first as i64)
        {
            let orders = newest.orders.iter().cloned();
            return Ok(orders.map(super::orders::Order::from).collect());
        }
        let Some(shop_id) = shop_id(&self.0) else {
            return Ok(Vec::new());
        };
        let loaders = ctx.data_unchecked::<super::loaders::Loaders>();
        let orders = loaders
            .newest_orders
            .load_one((shop_id, first as i64))
            .await
            .map_err(|error| (*error).clone())?
            .unwrap_or_default();
        Ok(orders.into_iter().map(super::orders::Order::from).collect())
    }

    /// What this customer bought (`POST /buy`, `recordPurchase`), oldest first. Purchases
    /// name their buyer by username, which is a profile's `name`: a `PROFILES` customer has
    /// the purchases of its name; customers of other sources carry no username and have
    /// none (an empty page).
    async fn purchases(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Page size, 0 to 100 (default 20).")] first: Option<i32>,
        #[graphql(desc = "The `endCursor` of the previous page.")] after: Option<String>,
    ) -> async_graphql::Result<
        Connection<String, super::purchases::Purchase, super::purchases::PurchaseConnectionFields>,
    > {
        let username = match (self.0.key.source, &self.0.first_name) {
            (domain::customers::CustomerSource::Profiles, Some(name)) => name.clone(),
            // No username: a page that matches nothing (usernames are 1 to 64 characters).
            _ => String::new(),
        };
        super::purchases::purchases_page(ctx, username, first, after).await
    }

    /// The same person seen by other sources: customers of other sources sharing one of
    /// this customer's emails (exactly as stored), ordered by source then external id.
    async fn matches(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 10, desc = "How many, 0 to 100.")] first: i32,
    ) -> async_graphql::Result<Vec<Customer>> {
        let first = super::page_size(Some(first))?;
        let state = ctx.data_unchecked::<AppState>();
        let matches =
            domain::customers::matches(&state.pool, &self.0.key, &self.0.emails, first as i64)
                .await
                .graphql()?;
        Ok(matches.into_iter().map(Customer::from).collect())
    }
}

/// Fields of the customers connection beside edges and pageInfo.
pub struct CustomerConnectionFields {
    source: Option<domain::customers::CustomerSource>,
}

#[Object]
impl CustomerConnectionFields {
    /// How many customers match, across all pages (counted only when asked for).
    async fn total_count(&self, ctx: &Context<'_>) -> async_graphql::Result<i64> {
        let state = ctx.data_unchecked::<AppState>();
        domain::customers::count(&state.pool, self.source)
            .await
            .graphql()
    }
}

/// Customers matching a search, best first.
#[derive(SimpleObject)]
pub struct CustomerSearchResult {
    /// How many customers match: exact up to 1,000, "at least 1,000" at 1,000 (Meilisearch
    /// estimates it the same way).
    total_hits: i64,
    /// The best matches, most relevant first.
    nodes: Vec<Customer>,
}

/// What `ingestCustomers` did.
#[derive(SimpleObject)]
pub struct IngestResult {
    /// Distinct records upserted.
    records_processed: u64,
    /// Pages read from the upstream.
    pages_fetched: u64,
}

#[derive(Default)]
pub struct CustomerQuery;

#[Object]
impl CustomerQuery {
    /// One customer by global id; null when it does not exist.
    async fn customer(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Customer>> {
        let key = GlobalId::decode_customer(&id)?;
        let state = ctx.data_unchecked::<AppState>();
        let mut lease = state.warm.lease().await.graphql()?;
        let found = domain::customers::find(&mut *lease, &key).await.graphql()?;
        lease.release();
        let Some(record) = found else {
            return Ok(None);
        };
        let customer = with_newest_orders(ctx, vec![record], &[ctx.look_ahead()]).await?;
        Ok(customer.into_iter().next())
    }

    /// Customers whose names or emails match `query`, most relevant first; tolerant of
    /// typos ("jon smth" finds John Smith) and prefixes ("jo" finds John).
    async fn search_customers(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Words to look for (at most 8, 200 characters).")] query: String,
        #[graphql(desc = "How many results, 0 to 100 (default 20).")] first: Option<i32>,
        source: Option<CustomerSource>,
    ) -> async_graphql::Result<CustomerSearchResult> {
        let first = super::page_size(first)?;
        let state = ctx.data_unchecked::<AppState>();
        let source: Option<domain::customers::CustomerSource> = source.map(Into::into);
        let crm = domain::customers::CustomerSource::Crm;
        // Meilisearch holds the CRM's customers; other sources are searched in PostgreSQL.
        if let (Some(search), true) = (&state.search, source.is_none_or(|source| source == crm)) {
            let trimmed = query.trim();
            if trimmed.is_empty() || trimmed.chars().count() > domain::search::MAX_QUERY_LENGTH {
                let message = "query must contain a word (200 characters at most)";
                return Err(ApiError::new(ErrorKind::BadUserInput, message).into());
            }
            let (ids, total_hits) = search.search(trimmed, first).await.graphql()?;
            let keys: Vec<domain::customers::CustomerKey> = ids
                .iter()
                .map(|id| domain::customers::CustomerKey {
                    source: crm,
                    external_id: id.to_string(),
                })
                .collect();
            let mut found = domain::customers::find_many(&state.pool, &keys)
                .await
                .graphql()?;
            found.sort_by_key(|customer| keys.iter().position(|key| key == &customer.key));
            return Ok(CustomerSearchResult {
                total_hits,
                nodes: found.into_iter().map(Customer::from).collect(),
            });
        }
        let result = domain::search::search(&state.pool, &query, source, first as i64)
            .await
            .graphql()?;
        Ok(CustomerSearchResult {
            total_hits: result.total_hits,
            nodes: result.customers.into_iter().map(Customer::from).collect(),
        })
    }

    /// Customers ordered by source, then external id; optionally of one source.
    async fn customers(
        &self,
        ctx: &Context<'_>,
        source: Option<CustomerSource>,
        #[graphql(desc = "Page size, 0 to 100 (default 20).")] first: Option<i32>,
        #[graphql(desc = "The `endCursor` of the previous page.")] after: Option<String>,
    ) -> async_graphql::Result<Connection<String, Customer, CustomerConnectionFields>> {
        let first = super::page_size(first)?;
        let after = after.as_deref().map(decode_customer_cursor).transpose()?;
        let source = source.map(Into::into);
        let state = ctx.data_unchecked::<AppState>();
        let mut lease = state.warm.lease().await.graphql()?;
        let rows =
            domain::customers::page_after(&mut *lease, source, after.as_ref(), first as i64 + 1)
                .await
                .graphql()?;
        lease.release();
        let look_ahead = ctx.look_ahead();
        let customers = [
            look_ahead.field("edges").field("node"),
            look_ahead.field("nodes"),
        ];
        let rows = with_newest_orders(ctx, rows, &customers).await?;
        Ok(super::page(
            rows,
            first,
            after.is_some(),
            CustomerConnectionFields { source },
            |customer| (customer_cursor(&customer.0.key), customer),
        ))
    }
}

#[derive(Default)]
pub struct CustomerMutation;

#[Object]
impl CustomerMutation {
    /// Fetches every customer of the accounts service and stores them in one transaction
    /// (all or nothing), like `POST /api/ingest`.
    async fn ingest_customers(&self, ctx: &Context<'_>) -> async_graphql::Result<IngestResult> {
        let report = ctx.data_unchecked::<AppState>().ingest_accounts().await?;
        Ok(IngestResult {
            records_processed: report.records_processed,
            pages_fetched: report.pages_fetched,
        })
    }
}

/// A committed ingest of customers.
#[derive(SimpleObject, Clone)]
pub struct CustomersIngested {
    /// The source that was ingested.
    source: CustomerSource,
    /// Distinct records stored.
    records_processed: u64,
}

/// What happened to a customer.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "crate::live::CrmChangeType")]
pub enum ChangeType {
    /// A new customer.
    Create,
    /// A customer's new state.
    Update,
    /// A customer removed: only its id is known.
    Delete,
}

/// A change to a customer, as the source's feed announced it.
#[derive(SimpleObject)]
pub struct CustomerChange {
    /// What happened.
    event_type: ChangeType,
    /// The customer after the change, as the event carried it (a DELETE carries only the
    /// id: names are null and emails empty).
    customer: Customer,
}

impl CustomerChange {
    fn from_crm(change: crate::live::CrmChange) -> Self {
        let now = Utc::now();
        Self {
            event_type: change.event_type.into(),
            customer: Customer::from(domain::customers::Customer {
                key: domain::customers::CustomerKey {
                    source: domain::customers::CustomerSource::Crm,
                    external_id: change.id.to_string(),
                },
                first_name: change.first_name,
                last_name: change.last_name,
                emails: change.emails,
                phone: None,
                address: None,
                date_of_birth: None,
                account_balance: None,
                created_at: Some(now),
                updated_at: now,
                orders_count: 0,
            }),
        }
    }
}

#[derive(Default)]
pub struct CustomerSubscription;

#[Subscription]
impl CustomerSubscription {
    /// Every change to customers as the sources announce it (today the CRM's ZeroMQ feed),
    /// optionally of one source. Every gateway instance subscribes to the feed itself.
    async fn customer_changed(
        &self,
        ctx: &Context<'_>,
        source: Option<CustomerSource>,
    ) -> impl Stream<Item = CustomerChange> {
        let wanted: Option<domain::customers::CustomerSource> = source.map(Into::into);
        let crm_wanted =
            wanted.is_none_or(|source| source == domain::customers::CustomerSource::Crm);
        ctx.data_unchecked::<AppState>()
            .live
            .crm_changes()
            .filter(move |_| std::future::ready(crm_wanted))
            .map(CustomerChange::from_crm)
    }

    /// Every customers ingest as it commits, whichever gateway or worker ran it.
    async fn customers_ingested(&self, ctx: &Context<'_>) -> impl Stream<Item = CustomersIngested> {
        ctx.data_unchecked::<AppState>()
            .live
            .customers_ingested()
            .map(|event| CustomersIngested {
                source: CustomerSource::Accounts,
                records_processed: event.records_processed,
            })
    }
}
