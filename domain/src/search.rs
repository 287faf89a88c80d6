//! Customer search. Without Meilisearch, on PostgreSQL: every query word must be
//! word-similar (trigrams) to a customer's names or emails, which tolerates typos ("smth"
//! finds "smith") and prefixes ("jo" finds "john"); results are ranked by the summed
//! similarity, exact and prefix matches first.

use sqlx::PgPool;

use crate::customers::{Customer, CustomerSource};
use crate::{Error, Result};

/// Longest query accepted, in characters.
pub const MAX_QUERY_LENGTH: usize = 200;
/// Most words a query may have.
const MAX_WORDS: usize = 8;
/// How similar a query word must be to a word of the customer (pg_trgm's word similarity).
const WORD_SIMILARITY_THRESHOLD: f64 = 0.3;

/// Search hits, best first.
#[derive(Debug, Clone)]
pub struct SearchResult {
    /// How many customers match in all.
    pub total_hits: i64,
    /// The best `limit` of them.
    pub customers: Vec<Customer>,
}

/// The query's words, lowercased; an error names what is wrong with the query.
fn words(query: &str) -> Result<Vec<String>> {
    let invalid = |message: String| Error::InvalidInput {
        field: "query",
        message,
    };
    if query.chars().count() > MAX_QUERY_LENGTH {
        return Err(invalid(format!(
            "query must be at most {MAX_QUERY_LENGTH} characters"
        )));
    }
    let words: Vec<String> = query
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
        .collect();
    if words.is_empty() {
        return Err(invalid("query must contain a word".into()));
    }
    if words.len() > MAX_WORDS {
        return Err(invalid(format!("query may have at most {MAX_WORDS} words")));
    }
    Ok(words)
}

/// Searches customers (optionally of one source) on PostgreSQL.
pub async fn search(
    pool: &PgPool,
    query: &str,
    source: Option<CustomerSource>,
    limit: i64,
) -> Result<SearchResult> {
    let words = words(query)?;
    // One indexable condition per word, its value bound as a parameter ($3, $4...).
    let conditions: String = (0..words.len())
        .map(|index| format!(" AND c.search_text %> ${}", index + 3))
        .collect();
    let mut transaction = pool.begin().await?;
    sqlx::query(&format!(
        "SET LOCAL pg_trgm.word_similarity_threshold = {WORD_SIMILARITY_THRESHOLD}"
    ))
    .execute(&mut *transaction)
    .await?;
    let filter = format!("FROM customers c WHERE ($1::text IS NULL OR c.source = $1){conditions}");
    // $2 (the limit) is unused when counting but must keep its type for the numbering.
    let count_sql = format!("SELECT count(*) {filter} AND $2::bigint IS NOT NULL");
    let mut count = sqlx::query_scalar::<_, i64>(&count_sql)
        .bind(source.map(CustomerSource::as_str))
        .bind(limit);
    for word in &words {
        count = count.bind(word);
    }
    let total_hits = count.fetch_one(&mut *transaction).await?;
    let ranked = format!(
        "SELECT c.external_id, c.source {filter}
         ORDER BY (SELECT sum(word_similarity(w, c.search_text)
                              + CASE WHEN c.search_text LIKE w || '%' OR c.search_text LIKE '% ' || w || '%'
                                     THEN 1 ELSE 0 END)
                   FROM unnest(${}::text[]) AS w) DESC,
                  c.source, c.external_id
         LIMIT $2",
        words.len() + 3
    );
    let mut ranked_query = sqlx::query_as::<_, (String, String)>(&ranked)
        .bind(source.map(CustomerSource::as_str))
        .bind(limit);
    for word in &words {
        ranked_query = ranked_query.bind(word);
    }
    let keys = ranked_query
        .bind(&words)
        .fetch_all(&mut *transaction)
        .await?;
    transaction.commit().await?;
    let keys: Vec<crate::customers::CustomerKey> = keys
        .into_iter()
        .filter_map(|(external_id, source)| {
            Some(crate::customers::CustomerKey {
                source: source.parse().ok()?,
                external_id,
            })
        })
        .collect();
    let mut found = crate::customers::find_many(pool, &keys).await?;
    found.sort_by_key(|customer| keys.iter().position(|key| key == &customer.key));
    Ok(SearchResult {
        total_hits,
        customers: found,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_split_into_lowercase_words_within_limits() {
        assert_eq!(words(" Jon  SMTH ").unwrap(), ["jon", "smth"]);
        assert!(words("   ").is_err());
        assert!(words(&"a ".repeat(9)).is_err());
        assert!(words(&"x".repeat(201)).is_err());
    }
}
