//! The stored CRM records read back in the API's shape, to compare with the upstream and
//! to build search documents from.

use std::collections::HashMap;

use sqlx::PgPool;

use super::{CrmRecord, CRM};
use crate::Result;

/// Every stored CRM record, by id.
pub async fn stored_records(pool: &PgPool) -> Result<HashMap<u64, CrmRecord>> {
    stored_records_where(pool, None).await
}

/// The stored CRM records among `ids`, by id.
pub async fn stored_records_with_ids(
    pool: &PgPool,
    ids: &[u64],
) -> Result<HashMap<u64, CrmRecord>> {
    stored_records_where(pool, Some(ids)).await
}

async fn stored_records_where(
    pool: &PgPool,
    ids: Option<&[u64]>,
) -> Result<HashMap<u64, CrmRecord>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        external_id: String,
        first_name: Option<String>,
        last_name: Option<String>,
        emails: Vec<String>,
    }
    let ids: Option<Vec<String>> = ids.map(|ids| ids.iter().map(u64::to_string).collect());
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT external_id, first_name, last_name, emails FROM customers
         WHERE source = $1 AND ($2::text[] IS NULL OR external_id = ANY($2))",
    )
    .bind(CRM)
    .bind(ids)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            let id = row.external_id.parse().ok()?;
            let record = CrmRecord {
                email: row.emails,
                first_name: row.first_name,
                id,
                last_name: row.last_name,
            };
            Some((id, record))
        })
        .collect())
}
