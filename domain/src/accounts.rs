//! The accounts pipeline absorbed from the original accounts service: the upstream's wire
//! record, a client that fetches every page of the accounts mock server, and the
//! all-or-nothing ingest into `customers` (source `ACCOUNTS`). Where it differs from the
//! original, and why: see README, Compatibility notes: accounts.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use futures_util::{StreamExt, TryStreamExt};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::sync::mpsc;

use crate::customers::CustomerSource;
use crate::{Error, Result};

/// The page size the ingest asks for: the upstream's maximum.
pub const INGEST_PAGE_SIZE: u32 = 100;
/// Pages fetched at once after the first.
const FETCH_CONCURRENCY: usize = 8;
/// Attempts per page before the ingest gives up.
const FETCH_ATTEMPTS: u32 = 3;
/// Refuse an upstream that claims more pages than this (10 million records).
const MAX_PAGES: u64 = 100_000;
/// Rows per batched upsert statement.
const UPSERT_CHUNK: usize = 5_000;
/// Validated pages buffered between the fetcher and the writer.
const PIPELINE_DEPTH: usize = 32;
/// PostgreSQL `NOTIFY` channel announcing each committed accounts ingest; the payload is
/// the number of records stored. Delivered on commit, to every listening gateway.
pub const INGESTED_CHANNEL: &str = "hub_accounts_ingested";

/// A customer as the accounts mock server serves it (and as its data file stores it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountRecord {
    /// `CUST001` style id, at most 50 characters.
    pub customer_id: String,
    /// First name, at most 100 characters.
    pub first_name: String,
    /// Last name, at most 100 characters.
    pub last_name: String,
    /// One email address, at most 255 characters.
    pub email: String,
    /// Phone number (`+1-555-0101`), at most 20 characters.
    #[serde(default)]
    pub phone: Option<String>,
    /// Postal address.
    #[serde(default)]
    pub address: Option<String>,
    /// `YYYY-MM-DD`, possibly followed by a time part, which is dropped (see
    /// [`upstream_time::date`]).
    #[serde(default, deserialize_with = "upstream_time::deserialize_date_of_birth")]
    pub date_of_birth: Option<NaiveDate>,
    /// A JSON number with two decimals, or a string holding a decimal number; kept exact
    /// (no float rounding).
    #[serde(default, with = "json_decimal")]
    pub account_balance: Option<Decimal>,
    /// `2023-01-15T10:30:00` and the other forms of [`upstream_time::instant`]; no zone
    /// is UTC. `None` (stored as NULL) when the upstream's value is null, missing, empty,
    /// a date only or unreadable, as the original stored it.
    #[serde(default, deserialize_with = "upstream_time::deserialize_created_at")]
    pub created_at: Option<DateTime<Utc>>,
}

/// The upstream's date and time texts, read as leniently as the original pipeline read
/// them (see README, Compatibility notes: accounts): a date `YYYY-MM-DD`, then optionally
/// `T` (or `t`, or a space) and a time `HH:MM`, `HH:MM:SS` or `HH:MM:SS.fraction`,
/// optionally followed by `Z` (or `z`) or an offset `+HH:MM` / `-HH:MM`.
pub mod upstream_time {
    use chrono::{DateTime, FixedOffset, NaiveDate, NaiveTime, Timelike, Utc};
    use serde::{Deserialize, Deserializer};
    use serde_json::Value;

    /// The instant `text` names: an offset is converted, a time without a zone is UTC,
    /// fractional seconds are kept. `None` when it names no instant: empty, a date only,
    /// or unreadable.
    pub fn instant(text: &str) -> Option<DateTime<Utc>> {
        let (date, Some(time)) = split(text)? else {
            return None;
        };
        let (time, offset) = time_and_offset(time)?;
        date.and_time(time)
            .and_local_timezone(offset)
            .single()
            .map(|instant| instant.to_utc())
    }

    /// The calendar date `text` starts with, when whatever follows it is a time part
    /// (`1990-05-15T00:00:00`, `1990-05-15 10:00:00`): the date as written, whatever the
    /// time and zone. `None` when `text` is no such date.
    pub fn date(text: &str) -> Option<NaiveDate> {
        match split(text)? {
            (date, None) => Some(date),
            (date, Some(time)) => time_and_offset(time).map(|_| date),
        }
    }

    /// Reads `created_at`: a string naming an instant is that instant; null, a missing
    /// field, any other string and any other JSON value are `None`. Never an error.
    pub fn deserialize_created_at<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<DateTime<Utc>>, D::Error> {
        Ok(match Option::<Value>::deserialize(deserializer)? {
            Some(Value::String(text)) => instant(&text),
            _ => None,
        })
    }

    /// Reads `date_of_birth`: null or missing is `None`, a date (with or without a time
    /// part) is that date, anything else is an error naming the field.
    pub fn deserialize_date_of_birth<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<NaiveDate>, D::Error> {
        let refused = |shown: String| {
            serde::de::Error::custom(format!("date_of_birth {shown} is not a date (YYYY-MM-DD)"))
        };
        match Option::<Value>::deserialize(deserializer)? {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => date(&text)
                .map(Some)
                .ok_or_else(|| refused(format!("{text:?}"))),
            Some(other) => Err(refused(other.to_string())),
        }
    }

    /// The date and, when a separator follows it, the time part after the separator.
    fn split(text: &str) -> Option<(NaiveDate, Option<&str>)> {
        let (date, rest) = text.trim().split_at_checked(10)?;
        let date = NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
        if rest.is_empty() {
            return Some((date, None));
        }
        Some((date, Some(rest.strip_prefix(['T', 't', ' '])?)))
    }

    /// `HH:MM[:SS[.fraction]]` and its zone; no zone is UTC.
    fn time_and_offset(text: &str) -> Option<(NaiveTime, FixedOffset)> {
        let (clock, zone) = text.split_at(text.find(['Z', 'z', '+', '-']).unwrap_or(text.len()));
        let time = ["%H:%M:%S%.f", "%H:%M"]
            .into_iter()
            .find_map(|format| NaiveTime::parse_from_str(clock, format).ok())?;
        Some((time, offset(zone)?))
    }

    /// `""`, `Z` or `z` (UTC), or `+HH:MM` / `-HH:MM` (hours up to 23).
    fn offset(zone: &str) -> Option<FixedOffset> {
        let sign = match zone.as_bytes().first() {
            None => return FixedOffset::east_opt(0),
            Some(b'Z' | b'z') if zone.len() == 1 => return FixedOffset::east_opt(0),
            Some(b'+') => 1,
            Some(b'-') => -1,
            Some(_) => return None,
        };
        let hours_minutes = NaiveTime::parse_from_str(&zone[1..], "%H:%M").ok()?;
        FixedOffset::east_opt(sign * hours_minutes.num_seconds_from_midnight() as i32)
    }
}

/// Serializes a decimal as a JSON number and reads one without going through a lossy
/// binary float: the number's shortest decimal text is parsed exactly. A string holding a
/// decimal number (`"15000.50"`) is read the same way, as the original read it.
mod json_decimal {
    use std::str::FromStr;

    use rust_decimal::prelude::ToPrimitive;
    use rust_decimal::Decimal;
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_json::Value;

    pub fn serialize<S: Serializer>(
        value: &Option<Decimal>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value.and_then(|decimal| decimal.to_f64()) {
            Some(number) => serializer.serialize_f64(number),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Decimal>, D::Error> {
        let (text, is_string) = match Option::<Value>::deserialize(deserializer)? {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Number(number)) => (number.to_string(), false),
            Some(Value::String(text)) => (text, true),
            Some(other) => {
                return Err(serde::de::Error::custom(format!(
                    "account_balance {other} is not a number"
                )))
            }
        };
        let digits = text.trim();
        Decimal::from_str(digits)
            .or_else(|_| Decimal::from_scientific(digits))
            .map(Some)
            .map_err(|_| {
                serde::de::Error::custom(if is_string {
                    format!("account_balance {text:?} is not a number")
                } else {
                    format!("account_balance {text} is out of range")
                })
            })
    }
}

impl AccountRecord {
    /// Checks the limits of the original table (`VARCHAR(50)` id, `VARCHAR(100)` names,
    /// `VARCHAR(255)` email, `VARCHAR(20)` phone, `DECIMAL(15,2)` balance) and rounds the
    /// balance to cents as that column did.
    fn validated(mut self) -> Result<Self, String> {
        let too_long = |field: &str, value: &str, max: usize| {
            (value.chars().count() > max).then(|| format!("{field} longer than {max} characters"))
        };
        if self.customer_id.trim().is_empty() {
            return Err("customer_id is empty".into());
        }
        let checks = [
            too_long("customer_id", &self.customer_id, 50),
            too_long("first_name", &self.first_name, 100),
            too_long("last_name", &self.last_name, 100),
            too_long("email", &self.email, 255),
            self.phone
                .as_deref()
                .and_then(|phone| too_long("phone", phone, 20)),
        ];
        if let Some(problem) = checks.into_iter().flatten().next() {
            return Err(problem);
        }
        if let Some(balance) = self.account_balance {
            let rounded = balance.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
            if !balance_fits(rounded) {
                return Err(format!(
                    "account_balance {balance} does not fit DECIMAL(15,2)"
                ));
            }
            self.account_balance = Some(rounded);
        }
        Ok(self)
    }
}

/// `NUMERIC(15, 2)` holds 13 digits before the point.
fn balance_fits(balance: Decimal) -> bool {
    balance.abs() < Decimal::from(10_000_000_000_000_i64)
}

/// The page envelope of `GET /api/customers`.
#[derive(Debug, Deserialize)]
struct PageEnvelope {
    data: Vec<serde_json::Value>,
    total: u64,
    total_pages: u64,
}

/// What an ingest did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestReport {
    /// Distinct records upserted.
    pub records_processed: u64,
    /// Pages fetched from the upstream.
    pub pages_fetched: u64,
    /// Wall time, from the first request to the commit.
    pub elapsed: Duration,
}

/// What the fetcher hands the writer, in page order.
enum Fetched {
    /// The validated records of one page.
    Page(Vec<AccountRecord>),
    /// Every page arrived; this many were read.
    Finished { pages: u64 },
    /// The fetch failed: the writer must roll back.
    Failed(Error),
}

/// Fetches every page of the accounts upstream at `base_url` and upserts all records in
/// one transaction: either every record is stored, or nothing changes. Pages are written
/// while later pages are still being fetched.
#[tracing::instrument(name = "accounts_ingest", skip_all, fields(upstream = base_url))]
pub async fn ingest(
    pool: &PgPool,
    client: &reqwest::Client,
    base_url: &str,
) -> Result<IngestReport> {
    let started = Instant::now();
    let started_at = chrono::Utc::now();
    let (sender, mut receiver) = mpsc::channel(PIPELINE_DEPTH);
    let write = async {
        let mut writer = IngestWriter::begin(pool).await?;
        loop {
            match receiver.recv().await {
                Some(Fetched::Page(records)) => writer.push(records).await?,
                Some(Fetched::Finished { pages }) => {
                    return Ok((writer.commit(started_at, pages).await?, pages))
                }
                Some(Fetched::Failed(error)) => return Err(error),
                None => return Err(Error::Upstream("the fetch stopped unexpectedly".into())),
            }
        }
    };
    let ((), written) = tokio::join!(fetch_pages(client, base_url, sender), write);
    let (records_processed, pages_fetched) = match written {
        Ok(written) => written,
        Err(error) => {
            crate::pipelines::record_failed_run(
                pool,
                crate::pipelines::ACCOUNTS_INGEST,
                started_at,
                &error,
            )
            .await;
            return Err(error);
        }
    };
    let report = IngestReport {
        records_processed,
        pages_fetched,
        elapsed: started.elapsed(),
    };
    tracing::info!(
        records = report.records_processed,
        pages = report.pages_fetched,
        elapsed_ms = report.elapsed.as_millis() as u64,
        "accounts ingest committed"
    );
    Ok(report)
}

/// Reads every page (limit 100) until `total` is reached or a page comes back empty.
/// Returns the validated records in upstream order and the number of pages read.
pub async fn fetch_all(
    client: &reqwest::Client,
    base_url: &str,
) -> Result<(Vec<AccountRecord>, u64)> {
    let (sender, mut receiver) = mpsc::channel(PIPELINE_DEPTH);
    let collect = async {
        let mut records = Vec::new();
        while let Some(fetched) = receiver.recv().await {
            match fetched {
                Fetched::Page(page) => records.extend(page),
                Fetched::Finished { pages } => return Ok((records, pages)),
                Fetched::Failed(error) => return Err(error),
            }
        }
        Err(Error::Upstream("the fetch stopped unexpectedly".into()))
    };
    tokio::join!(fetch_pages(client, base_url, sender), collect).1
}

/// Sends every page's validated records in order, then `Finished` or `Failed`. Up to
/// [`FETCH_CONCURRENCY`] pages are in flight; it stops early when the receiver is gone.
async fn fetch_pages(client: &reqwest::Client, base_url: &str, sink: mpsc::Sender<Fetched>) {
    let last = match send_pages(client, base_url.trim_end_matches('/'), &sink).await {
        Ok(pages) => Fetched::Finished { pages },
        Err(error) => Fetched::Failed(error),
    };
    // A closed channel means the writer already failed and reports its own error.
    let _ = sink.send(last).await;
}

async fn send_pages(
    client: &reqwest::Client,
    base_url: &str,
    sink: &mpsc::Sender<Fetched>,
) -> Result<u64> {
    let first = fetch_page(client, base_url, 1).await?;
    let total = first.total;
    let total_pages = first.total_pages.max(1);
    if total_pages > MAX_PAGES {
        return Err(Error::Upstream(format!(
            "upstream claims {total_pages} pages, more than the {MAX_PAGES} accepted"
        )));
    }
    let rest = futures_util::stream::iter(2..=total_pages)
        .map(|page| fetch_page(client, base_url, page))
        .buffered(FETCH_CONCURRENCY);
    let mut pages = std::pin::pin!(futures_util::stream::once(async { Ok(first) }).chain(rest));
    let (mut pages_read, mut records_read) = (0u64, 0u64);
    while let Some(envelope) = pages.try_next().await? {
        if envelope.data.is_empty() || records_read >= total {
            break;
        }
        pages_read += 1;
        let records = validate_page(envelope.data, pages_read)?;
        records_read += records.len() as u64;
        if pages_read % 100 == 0 {
            tracing::info!(pages_read, total_pages, "fetching accounts pages");
        }
        if sink.send(Fetched::Page(records)).await.is_err() {
            break;
        }
    }
    Ok(pages_read)
}

/// Reads and validates one page's records; the first bad one fails the page, named by its
/// position, its page and (when it has one) its `customer_id`, then the problem.
fn validate_page(data: Vec<serde_json::Value>, page: u64) -> Result<Vec<AccountRecord>> {
    data.into_iter()
        .enumerate()
        .map(|(position, value)| {
            let customer_id = value
                .get("customer_id")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned);
            serde_json::from_value::<AccountRecord>(value)
                .map_err(|error| error.to_string())
                .and_then(AccountRecord::validated)
                .map_err(|problem| {
                    let record = match customer_id {
                        Some(id) => format!("{} on page {page} (customer_id {id:?})", position + 1),
                        None => format!("{} on page {page}", position + 1),
                    };
                    Error::InvalidRecord(format!("bad record {record}: {problem}"))
                })
        })
        .collect()
}

async fn fetch_page(client: &reqwest::Client, base_url: &str, page: u64) -> Result<PageEnvelope> {
    let url = format!("{base_url}/api/customers?page={page}&limit={INGEST_PAGE_SIZE}");
    let mut attempt = 1;
    loop {
        match try_fetch_page(client, &url).await {
            Ok(envelope) => return Ok(envelope),
            Err((problem, retryable)) if retryable && attempt < FETCH_ATTEMPTS => {
                tracing::warn!(page, attempt, %problem, "accounts page fetch failed, retrying");
                tokio::time::sleep(crate::backoff::delay(
                    attempt,
                    Duration::from_millis(100),
                    Duration::from_secs(2),
                ))
                .await;
                attempt += 1;
            }
            Err((problem, _)) => return Err(Error::Upstream(format!("page {page}: {problem}"))),
        }
    }
}

/// One GET; the error says whether trying again could help.
async fn try_fetch_page(
    client: &reqwest::Client,
    url: &str,
) -> Result<PageEnvelope, (String, bool)> {
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|error| (format!("request to {url} failed: {error}"), true))?;
    let status = response.status();
    if !status.is_success() {
        let retryable = status.is_server_error() || status.as_u16() == 429;
        return Err((format!("{url} answered {status}"), retryable));
    }
    let body = response
        .bytes()
        .await
        .map_err(|error| (format!("reading {url} failed: {error}"), true))?;
    serde_json::from_slice(&body)
        .map_err(|error| (format!("{url} sent a malformed page: {error}"), false))
}

/// Upserts `records` (source `ACCOUNTS`) in one transaction; see [`IngestWriter`].
pub async fn store(pool: &PgPool, records: Vec<AccountRecord>) -> Result<u64> {
    let mut writer = IngestWriter::begin(pool).await?;
    writer.push(records).await?;
    writer.commit(chrono::Utc::now(), 0).await
}

/// One all-or-nothing write of accounts records: a transaction holding a
/// transaction-scoped advisory lock, so two ingests never interleave (the later waits).
/// Records are upserted in batched statements as they are pushed; a record repeated in the
/// input is stored once (the last one wins). Rows whose content is unchanged are not
/// touched (their `updated_at` stays). Dropping the writer without `commit` rolls back.
struct IngestWriter {
    transaction: sqlx::Transaction<'static, sqlx::Postgres>,
    pending: Vec<AccountRecord>,
    customer_ids: HashSet<String>,
}

impl IngestWriter {
    async fn begin(pool: &PgPool) -> Result<Self> {
        let mut transaction = pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('hub.ingest.accounts'))")
            .execute(&mut *transaction)
            .await?;
        Ok(Self {
            transaction,
            pending: Vec::with_capacity(UPSERT_CHUNK),
            customer_ids: HashSet::new(),
        })
    }

    async fn push(&mut self, records: Vec<AccountRecord>) -> Result<()> {
        for record in records {
            self.customer_ids.insert(record.customer_id.clone());
            self.pending.push(record);
            if self.pending.len() >= UPSERT_CHUNK {
                self.flush().await?;
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        let chunk = last_occurrence_wins(std::mem::take(&mut self.pending));
        if !chunk.is_empty() {
            upsert_chunk(&mut self.transaction, &chunk).await?;
        }
        Ok(())
    }

    /// Writes what is pending, records the run, announces the ingest on
    /// [`INGESTED_CHANNEL`] (delivered on commit) and commits. Returns the number of
    /// distinct records stored.
    async fn commit(
        mut self,
        started_at: chrono::DateTime<chrono::Utc>,
        pages: u64,
    ) -> Result<u64> {
        self.flush().await?;
        let stored = self.customer_ids.len() as u64;
        let (_, run_event) = crate::pipelines::record_run(
            &mut self.transaction,
            &crate::pipelines::Run {
                pipeline: crate::pipelines::ACCOUNTS_INGEST,
                started_at,
                ok: true,
                counts: serde_json::json!({ "records": stored, "pages": pages }),
                error: None,
            },
        )
        .await?;
        crate::pipelines::notify(&mut *self.transaction, &[run_event]).await?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(INGESTED_CHANNEL)
            .bind(stored.to_string())
            .execute(&mut *self.transaction)
            .await?;
        self.transaction.commit().await?;
        Ok(stored)
    }
}

/// Within one statement a row may be upserted only once: keep each id's last record.
fn last_occurrence_wins(records: Vec<AccountRecord>) -> Vec<AccountRecord> {
    let mut position: HashMap<String, usize> = HashMap::with_capacity(records.len());
    let mut unique: Vec<AccountRecord> = Vec::with_capacity(records.len());
    for record in records {
        match position.get(&record.customer_id) {
            Some(&index) => unique[index] = record,
            None => {
                position.insert(record.customer_id.clone(), unique.len());
                unique.push(record);
            }
        }
    }
    unique
}

/// Upserts one chunk of distinct records. A record without a readable `created_at` is
/// stored with NULL there, as the original stored it (see README, Compatibility notes:
/// accounts); the column's `now()` default is for the other sources.
async fn upsert_chunk(connection: &mut sqlx::PgConnection, chunk: &[AccountRecord]) -> Result<()> {
    let column =
        |field: fn(&AccountRecord) -> Option<String>| chunk.iter().map(field).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO customers AS c (source, external_id, first_name, last_name, emails, phone,
                                     address, date_of_birth, account_balance, created_at)
         SELECT $1, r.external_id, r.first_name, r.last_name, ARRAY[r.email], r.phone,
                r.address, r.date_of_birth, r.account_balance, r.created_at
         FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                     $8::date[], $9::numeric[], $10::timestamptz[])
              AS r(external_id, first_name, last_name, email, phone, address, date_of_birth,
                   account_balance, created_at)
         ON CONFLICT (source, external_id) DO UPDATE SET
             first_name = EXCLUDED.first_name,
             last_name = EXCLUDED.last_name,
             emails = EXCLUDED.emails,
             phone = EXCLUDED.phone,
             address = EXCLUDED.address,
             date_of_birth = EXCLUDED.date_of_birth,
             account_balance = EXCLUDED.account_balance,
             created_at = EXCLUDED.created_at,
             updated_at = now()
         WHERE (c.first_name, c.last_name, c.emails, c.phone, c.address, c.date_of_birth,
                c.account_balance, c.created_at)
               IS DISTINCT FROM
               (EXCLUDED.first_name, EXCLUDED.last_name, EXCLUDED.emails, EXCLUDED.phone,
                EXCLUDED.address, EXCLUDED.date_of_birth, EXCLUDED.account_balance,
                EXCLUDED.created_at)",
    )
    .bind(CustomerSource::Accounts.as_str())
    .bind(column(|r| Some(r.customer_id.clone())))
    .bind(column(|r| Some(r.first_name.clone())))
    .bind(column(|r| Some(r.last_name.clone())))
    .bind(column(|r| Some(r.email.clone())))
    .bind(column(|r| r.phone.clone()))
    .bind(column(|r| r.address.clone()))
    .bind(chunk.iter().map(|r| r.date_of_birth).collect::<Vec<_>>())
    .bind(chunk.iter().map(|r| r.account_balance).collect::<Vec<_>>())
    .bind(chunk.iter().map(|r| r.created_at).collect::<Vec<_>>())
    .execute(connection)
    .await?;
    Ok(())
}

/// The HTTP client for upstream calls: bounded connect and request times, so a dead or
/// stalled upstream is an error, never a hang.
pub fn upstream_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .user_agent(concat!("customer-data-hub/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("a client with static settings builds")
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    /// A valid wire record with `field` set to `value` (removed when `value` is `None`).
    fn record_with(field: &str, value: Option<Value>) -> serde_json::Result<AccountRecord> {
        let mut record = json!({
            "customer_id": "CUST001", "first_name": "John", "last_name": "Smith",
            "email": "john.smith@example.com", "account_balance": 1250.50,
            "date_of_birth": "1963-06-08", "created_at": "2023-02-04T09:13:00",
        });
        match value {
            Some(value) => record[field] = value,
            None => {
                record.as_object_mut().unwrap().remove(field);
            }
        }
        serde_json::from_value(record)
    }

    fn utc(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339).unwrap().to_utc()
    }

    #[test]
    fn created_at_reads_every_form_the_original_accepts_as_its_instant() {
        for (text, expected) in [
            ("2023-01-15T10:30:00", "2023-01-15T10:30:00Z"),
            ("2023-01-15T10:30:00Z", "2023-01-15T10:30:00Z"),
            ("2023-01-15t10:30:00z", "2023-01-15T10:30:00Z"),
            ("2023-01-15T10:30:00+02:00", "2023-01-15T08:30:00Z"),
            ("2023-01-15T23:30:00-05:00", "2023-01-16T04:30:00Z"),
            ("2023-01-15T10:30:00.123Z", "2023-01-15T10:30:00.123Z"),
            ("2023-01-15T10:30:00.123456", "2023-01-15T10:30:00.123456Z"),
            ("2023-01-15 10:30:00", "2023-01-15T10:30:00Z"),
            ("2023-01-15 10:30:00.5+01:00", "2023-01-15T09:30:00.5Z"),
            ("2023-01-15T10:30", "2023-01-15T10:30:00Z"),
            ("2023-01-15 10:30+02:00", "2023-01-15T08:30:00Z"),
        ] {
            assert_eq!(upstream_time::instant(text), Some(utc(expected)), "{text}");
            let record = record_with("created_at", Some(json!(text))).unwrap();
            assert_eq!(record.created_at, Some(utc(expected)), "{text}");
        }
    }

    #[test]
    fn created_at_the_original_cannot_read_is_none_not_an_error() {
        for value in [
            json!(""),
            json!("2023-01-15"),
            json!("not a date"),
            json!("2023-01-15T25:00:00"),
            json!("2023-02-30T10:30:00"),
            json!("2023-01-15T10:30:00+2"),
            json!("2023-01-15T10:30:00+24:00"),
            json!("2023-01-15T10:30:00 UTC"),
            json!("15/01/2023 10:30"),
            json!(null),
            json!(1673778600),
        ] {
            let record = record_with("created_at", Some(value.clone()));
            assert_eq!(record.unwrap().created_at, None, "{value}");
        }
        assert_eq!(record_with("created_at", None).unwrap().created_at, None);
    }

    #[test]
    fn date_of_birth_with_a_time_part_is_its_date() {
        let date = NaiveDate::from_ymd_opt(1990, 5, 15);
        for text in [
            "1990-05-15",
            "1990-05-15T00:00:00",
            "1990-05-15 10:00:00",
            "1990-05-15T23:30:00.250-05:00",
        ] {
            let record = record_with("date_of_birth", Some(json!(text))).unwrap();
            assert_eq!(record.date_of_birth, date, "{text}");
        }
        assert_eq!(
            record_with("date_of_birth", Some(json!(null)))
                .unwrap()
                .date_of_birth,
            None
        );
    }

    #[test]
    fn a_date_of_birth_that_is_no_date_is_an_error_naming_the_field() {
        for value in [json!("15/05/1990"), json!("1990-05-15T99:00"), json!("")] {
            let error = record_with("date_of_birth", Some(value.clone())).unwrap_err();
            assert!(
                error.to_string().starts_with("date_of_birth "),
                "{value}: {error}"
            );
        }
    }

    #[test]
    fn account_balance_reads_numbers_and_numeric_strings_exactly() {
        for (value, expected) in [
            (json!(15000.50), "15000.5"),
            (json!("15000.50"), "15000.50"),
            (json!(" 0.01 "), "0.01"),
            (json!("-12"), "-12"),
            (json!("1.5e3"), "1500"),
        ] {
            let record = record_with("account_balance", Some(value.clone())).unwrap();
            let expected = Decimal::from_str_exact(expected).unwrap();
            assert_eq!(record.account_balance, Some(expected), "{value}");
        }
    }

    #[test]
    fn a_balance_that_is_no_number_is_an_error_naming_the_field() {
        for (value, message) in [
            (
                json!("twelve"),
                r#"account_balance "twelve" is not a number"#,
            ),
            (json!(""), r#"account_balance "" is not a number"#),
            (json!(true), "account_balance true is not a number"),
        ] {
            let error = record_with("account_balance", Some(value)).unwrap_err();
            assert_eq!(error.to_string(), message);
        }
    }

    #[test]
    fn a_refused_record_is_named_by_position_page_and_customer_id() {
        let mut records = vec![json!({}); 2];
        records[0] = serde_json::to_value(record_with("phone", None).unwrap()).unwrap();
        records[1] = records[0].clone();
        records[1]["account_balance"] = json!("twelve");
        let error = validate_page(records.clone(), 3).unwrap_err();
        assert_eq!(
            error.to_string(),
            r#"bad record 2 on page 3 (customer_id "CUST001"): account_balance "twelve" is not a number"#
        );
        records[1] = records[0].clone();
        records[1].as_object_mut().unwrap().remove("customer_id");
        let error = validate_page(records, 3).unwrap_err();
        assert_eq!(
            error.to_string(),
            "bad record 2 on page 3: missing field `customer_id`"
        );
    }
}
