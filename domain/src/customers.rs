//! Customers from every source: the model and its queries. Each upstream record maps to
//! exactly one row, keyed by (`source`, `external_id`).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use sqlx::postgres::PgRow;
use sqlx::{PgExecutor, PgPool, Row};

use crate::Result;

/// Where a customer record comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CustomerSource {
    /// The original accounts mock server, ingested by `POST /api/ingest`.
    Accounts,
    /// The original CRM (paginated API + ZeroMQ feed), kept in step by `workers index`.
    Crm,
    /// The shop's customer service (the orders system).
    Shop,
    /// The profile source (seed 002), kept by `workers sync`.
    Profiles,
}

impl CustomerSource {
    /// The value stored in `customers.source`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accounts => "ACCOUNTS",
            Self::Crm => "CRM",
            Self::Shop => "SHOP",
            Self::Profiles => "PROFILES",
        }
    }
}

impl fmt::Display for CustomerSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CustomerSource {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "ACCOUNTS" => Ok(Self::Accounts),
            "CRM" => Ok(Self::Crm),
            "SHOP" => Ok(Self::Shop),
            "PROFILES" => Ok(Self::Profiles),
            other => Err(format!("unknown customer source {other:?}")),
        }
    }
}

/// The natural key of a customer: its source and the id the source gave it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CustomerKey {
    /// The source system.
    pub source: CustomerSource,
    /// The id in the source system (`CUST001`, `42`, a UUID...).
    pub external_id: String,
}

/// One stored customer.
#[derive(Debug, Clone, PartialEq)]
pub struct Customer {
    /// Natural key.
    pub key: CustomerKey,
    /// First name, when the source has one.
    pub first_name: Option<String>,
    /// Last name, when the source has one.
    pub last_name: Option<String>,
    /// Email addresses (the accounts source has exactly one).
    pub emails: Vec<String>,
    /// Phone number as the source wrote it.
    pub phone: Option<String>,
    /// Postal address as one line.
    pub address: Option<String>,
    /// Date of birth.
    pub date_of_birth: Option<NaiveDate>,
    /// Account balance with its cents.
    pub account_balance: Option<Decimal>,
    /// The upstream's creation time, or when we first stored the record; `None` only for
    /// an accounts record without a readable `created_at` (see README, Compatibility
    /// notes: accounts).
    pub created_at: Option<DateTime<Utc>>,
    /// When the stored content last changed.
    pub updated_at: DateTime<Utc>,
    /// Orders placed (shop customers; kept by the `order.created` consumer).
    pub orders_count: i64,
}

struct CustomerRow {
    source: String,
    external_id: String,
    first_name: Option<String>,
    last_name: Option<String>,
    emails: Vec<String>,
    phone: Option<String>,
    address: Option<String>,
    date_of_birth: Option<NaiveDate>,
    account_balance: Option<Decimal>,
    created_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
    orders_count: i64,
}

impl CustomerRow {
    /// The customer in `row`'s columns `first` to `first + 11`, in [`COLUMNS`] order. Read
    /// by position: looking each column up by name cost more than decoding it.
    fn read(row: &PgRow, first: usize) -> std::result::Result<Self, sqlx::Error> {
        Ok(Self {
            source: row.try_get(first)?,
            external_id: row.try_get(first + 1)?,
            first_name: row.try_get(first + 2)?,
            last_name: row.try_get(first + 3)?,
            emails: row.try_get(first + 4)?,
            phone: row.try_get(first + 5)?,
            address: row.try_get(first + 6)?,
            date_of_birth: row.try_get(first + 7)?,
            account_balance: row.try_get(first + 8)?,
            created_at: row.try_get(first + 9)?,
            updated_at: row.try_get(first + 10)?,
            orders_count: row.try_get(first + 11)?,
        })
    }
}

impl<'r> sqlx::FromRow<'r, PgRow> for CustomerRow {
    fn from_row(row: &'r PgRow) -> std::result::Result<Self, sqlx::Error> {
        Self::read(row, 0)
    }
}

/// The customer columns of table `alias`, in [`COLUMNS`] order, each renamed
/// `{prefix}{column}` so that none shares a name with the other rows' columns, for a query
/// that reads a customer beside other rows (see [`read_from`]).
pub(crate) fn columns_as(alias: &str, prefix: &str) -> String {
    COLUMNS
        .split(", ")
        .map(|column| format!("{alias}.{column} AS {prefix}{column}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The customer whose [`columns_as`] start at column `first` of `row`; `None` when the row
/// has none (an outer join found no customer).
pub(crate) fn read_from(row: &PgRow, first: usize) -> Result<Option<Customer>> {
    let source: Option<String> = row.try_get(first)?;
    if source.is_none() {
        return Ok(None);
    }
    Ok(Some(Customer::try_from(CustomerRow::read(row, first)?)?))
}

impl TryFrom<CustomerRow> for Customer {
    type Error = sqlx::Error;

    fn try_from(row: CustomerRow) -> Result<Self, Self::Error> {
        let source = row
            .source
            .parse()
            .map_err(|error: String| sqlx::Error::Decode(error.into()))?;
        Ok(Self {
            key: CustomerKey {
                source,
                external_id: row.external_id,
            },
            first_name: row.first_name,
            last_name: row.last_name,
            emails: row.emails,
            phone: row.phone,
            address: row.address,
            date_of_birth: row.date_of_birth,
            // The driver drops trailing zeros of whole amounts (15000.00 comes back as
            // 15000); the column always has two decimals, so say so.
            account_balance: row.account_balance.map(|mut balance| {
                balance.rescale(2);
                balance
            }),
            created_at: row.created_at,
            updated_at: row.updated_at,
            orders_count: row.orders_count,
        })
    }
}

const COLUMNS: &str = "source, external_id, first_name, last_name, emails, phone, address, \
                       date_of_birth, account_balance, created_at, updated_at, orders_count";

fn into_customers(rows: Vec<CustomerRow>) -> Result<Vec<Customer>> {
    Ok(rows
        .into_iter()
        .map(Customer::try_from)
        .collect::<Result<_, _>>()?)
}

/// One customer by natural key.
pub async fn find(db: impl PgExecutor<'_>, key: &CustomerKey) -> Result<Option<Customer>> {
    let row: Option<CustomerRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM customers WHERE source = $1 AND external_id = $2"
    ))
    .bind(key.source.as_str())
    .bind(&key.external_id)
    .fetch_optional(db)
    .await?;
    Ok(row.map(Customer::try_from).transpose()?)
}

/// The customers with these keys, in one query (for batched loading).
pub async fn find_many(db: impl PgExecutor<'_>, keys: &[CustomerKey]) -> Result<Vec<Customer>> {
    let sources: Vec<&str> = keys.iter().map(|key| key.source.as_str()).collect();
    let external_ids: Vec<&str> = keys.iter().map(|key| key.external_id.as_str()).collect();
    let rows: Vec<CustomerRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM customers
         WHERE (source, external_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))"
    ))
    .bind(sources)
    .bind(external_ids)
    .fetch_all(db)
    .await?;
    into_customers(rows)
}

/// Up to `limit` customers ordered by (source, external_id), strictly after `after`,
/// optionally of one source: keyset pagination that never skips or repeats a row.
pub async fn page_after(
    db: impl PgExecutor<'_>,
    source: Option<CustomerSource>,
    after: Option<&CustomerKey>,
    limit: i64,
) -> Result<Vec<Customer>> {
    let rows: Vec<CustomerRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM customers
         WHERE ($1::text IS NULL OR source = $1)
           AND ($2::text IS NULL OR (source, external_id) > ($2, $3))
         ORDER BY source, external_id
         LIMIT $4"
    ))
    .bind(source.map(CustomerSource::as_str))
    .bind(after.map(|key| key.source.as_str()))
    .bind(after.map(|key| key.external_id.as_str()))
    .bind(limit)
    .fetch_all(db)
    .await?;
    into_customers(rows)
}

/// Up to `limit` customers of one source ordered by external id, skipping `offset`.
pub async fn page_at_offset(
    pool: &PgPool,
    source: CustomerSource,
    offset: i64,
    limit: i64,
) -> Result<Vec<Customer>> {
    let rows: Vec<CustomerRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM customers WHERE source = $1
         ORDER BY external_id LIMIT $2 OFFSET $3"
    ))
    .bind(source.as_str())
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await?;
    into_customers(rows)
}

/// How many customers there are, optionally of one source. Exact: read from the counts
/// the database keeps with every insert, delete and truncate.
pub async fn count(pool: &PgPool, source: Option<CustomerSource>) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT COALESCE(sum(total), 0)::bigint FROM customer_counts
         WHERE ($1::text IS NULL OR source = $1)",
    )
    .bind(source.map(CustomerSource::as_str))
    .fetch_one(pool)
    .await?)
}

/// Customers of other sources sharing one of `emails` (exactly as stored), ordered by
/// source then external id: the same person seen by other systems.
pub async fn matches(
    pool: &PgPool,
    key: &CustomerKey,
    emails: &[String],
    limit: i64,
) -> Result<Vec<Customer>> {
    if emails.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<CustomerRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM customers
         WHERE emails && $1::text[] AND source <> $2
         ORDER BY source, external_id
         LIMIT $3"
    ))
    .bind(emails)
    .bind(key.source.as_str())
    .bind(limit)
    .fetch_all(pool)
    .await?;
    into_customers(rows)
}
