//! Customer search. Without Meilisearch, on PostgreSQL: every query word must be
//! word-similar (trigrams) to a customer's names or emails, which tolerates typos ("smth"
//! finds "smith") and prefixes ("jo" finds "john"); results are ranked by the summed
//! similarity, exact and prefix matches first.
//!
//! Every search is bounded whatever its words: at most [`MAX_CANDIDATES`] matches are read
//! and ranked (a word every customer has, such as "example", would otherwise make each
//! search rank the whole table), so `total_hits` is exact up to that bound and means "at
//! least" at it, like Meilisearch's estimated total. Words without a letter or digit have
//! no trigrams and match nothing, and `%`, `_` and `\` in a word are matched literally.
//!
//! [`crm_page`] serves the CRM apps' own search route on the same matching: CRM customers
//! only, id descending, a page at a time.

use sqlx::PgPool;

use crate::crm::CrmRecord;
use crate::customers::{Customer, CustomerSource};
use crate::{Error, Result};

/// Longest query accepted, in characters.
pub const MAX_QUERY_LENGTH: usize = 200;
/// Most words a query may have.
const MAX_WORDS: usize = 8;
/// How similar a query word must be to a word of the customer (pg_trgm's word similarity).
const WORD_SIMILARITY_THRESHOLD: f64 = 0.3;
/// Most matches one search reads and ranks; `total_hits` counts up to this.
pub const MAX_CANDIDATES: i64 = 1_000;

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

/// Whether a word can match anything: trigrams are made of letters and digits only.
fn has_trigrams(word: &str) -> bool {
    word.chars().any(char::is_alphanumeric)
}

/// `word` as a LIKE pattern that matches it literally (`\` is LIKE's escape character).
fn like_literal(word: &str) -> String {
    let mut pattern = String::with_capacity(word.len());
    for c in word.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern
}

/// Hits per page of the CRM apps' search route (`GET /search`).
pub const CRM_PAGE_SIZE: u64 = 100;

/// One indexable condition per word (`c.search_text %> $n`), the first word's value bound
/// as parameter `$first`, the next as `$first + 1`...
fn word_conditions(words: &[String], first: usize) -> String {
    (0..words.len())
        .map(|index| format!(" AND c.search_text %> ${}", index + first))
        .collect()
}

/// Page `page` (1-based) of the CRM apps' search on PostgreSQL: the CRM's indexable
/// customers (a name or an email) matching every word of `query` (all of them when it has
/// none), id descending, [`CRM_PAGE_SIZE`] a page. As Meilisearch's `maxTotalHits`, only
/// the first [`MAX_CANDIDATES`] matches are paged: later pages are empty.
pub async fn crm_page(pool: &PgPool, query: &str, page: u64) -> Result<Vec<CrmRecord>> {
    let words = if query.trim().is_empty() {
        Vec::new()
    } else {
        words(query)?
    };
    let offset = page.saturating_sub(1).saturating_mul(CRM_PAGE_SIZE);
    let limit = CRM_PAGE_SIZE.min((MAX_CANDIDATES as u64).saturating_sub(offset));
    if limit == 0 || !words.iter().all(|word| has_trigrams(word)) {
        return Ok(Vec::new());
    }
    // Ids are decimal integers without leading zeros: longer is larger.
    let sql = format!(
        "SELECT c.external_id, c.first_name, c.last_name, c.emails
         FROM customers c
         WHERE c.source = $1 AND c.search_text IS NOT NULL{conditions}
         ORDER BY length(c.external_id) DESC, c.external_id DESC
         OFFSET $2 LIMIT $3",
        conditions = word_conditions(&words, 4)
    );
    let mut transaction = pool.begin().await?;
    sqlx::query(&format!(
        "SET LOCAL pg_trgm.word_similarity_threshold = {WORD_SIMILARITY_THRESHOLD}"
    ))
    .execute(&mut *transaction)
    .await?;
    let mut page_query =
        sqlx::query_as::<_, (String, Option<String>, Option<String>, Vec<String>)>(&sql)
            .bind(CustomerSource::Crm.as_str())
            .bind(i64::try_from(offset).unwrap_or(i64::MAX))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX));
    for word in &words {
        page_query = page_query.bind(word);
    }
    let rows = page_query.fetch_all(&mut *transaction).await?;
    transaction.commit().await?;
    Ok(rows
        .into_iter()
        .filter_map(|(external_id, first_name, last_name, email)| {
            Some(CrmRecord {
                email,
                first_name,
                id: external_id.parse().ok()?,
                last_name,
            })
        })
        .collect())
}

/// Searches customers (optionally of one source) on PostgreSQL.
pub async fn search(
    pool: &PgPool,
    query: &str,
    source: Option<CustomerSource>,
    limit: i64,
) -> Result<SearchResult> {
    let words = words(query)?;
    if !words.iter().all(|word| has_trigrams(word)) {
        return Ok(SearchResult {
            total_hits: 0,
            customers: Vec::new(),
        });
    }
    let patterns: Vec<String> = words.iter().map(|word| like_literal(word)).collect();
    // One indexable condition per word, its value bound as a parameter ($5, $6...).
    let conditions = word_conditions(&words, 5);
    // The matches (at most MAX_CANDIDATES of them, $3) are read once, counted and ranked:
    // the summed word similarity, plus one per word that starts a word of the customer.
    let sql = format!(
        "WITH candidates AS (
             SELECT c.external_id, c.source, c.search_text
             FROM customers c
             WHERE ($1::text IS NULL OR c.source = $1){conditions}
             LIMIT $3
         ),
         ranked AS (
             SELECT external_id, source,
                    (SELECT sum(word_similarity(w.word, search_text)
                                + CASE WHEN search_text LIKE w.pattern || '%'
                                         OR search_text LIKE '% ' || w.pattern || '%'
                                       THEN 1 ELSE 0 END)
                     FROM unnest($4::text[], ${words_param}::text[]) AS w(word, pattern)) AS score
             FROM candidates
         )
         SELECT (SELECT count(*) FROM candidates),
                coalesce(array_agg(external_id ORDER BY score DESC, source, external_id), '{{}}'),
                coalesce(array_agg(source ORDER BY score DESC, source, external_id), '{{}}')
         FROM (SELECT * FROM ranked ORDER BY score DESC, source, external_id LIMIT $2) AS page",
        words_param = words.len() + 5
    );
    let mut transaction = pool.begin().await?;
    sqlx::query(&format!(
        "SET LOCAL pg_trgm.word_similarity_threshold = {WORD_SIMILARITY_THRESHOLD}"
    ))
    .execute(&mut *transaction)
    .await?;
    let mut ranked_query = sqlx::query_as::<_, (i64, Vec<String>, Vec<String>)>(&sql)
        .bind(source.map(CustomerSource::as_str))
        .bind(limit)
        .bind(MAX_CANDIDATES)
        .bind(&words);
    for word in &words {
        ranked_query = ranked_query.bind(word);
    }
    let (total_hits, external_ids, sources) = ranked_query
        .bind(&patterns)
        .fetch_one(&mut *transaction)
        .await?;
    transaction.commit().await?;
    let keys = external_ids.into_iter().zip(sources);
    let keys: Vec<crate::customers::CustomerKey> = keys
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

    #[test]
    fn like_metacharacters_are_matched_literally_and_punctuation_matches_nothing() {
        assert_eq!(like_literal("50%_a\\b"), "50\\%\\_a\\\\b");
        assert!(!has_trigrams("!"));
        assert!(!has_trigrams("%"));
        assert!(has_trigrams("o'neil"));
    }
}
