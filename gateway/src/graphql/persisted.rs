//! Persisted queries, in Apollo's protocol: a request whose `extensions.persistedQuery` is
//! `{"version": 1, "sha256Hash": "<hex>"}` may leave `query` out once the gateway knows the
//! document by that hash.
//!
//! - Automatic (APQ, the default): an unknown hash is `PERSISTED_QUERY_NOT_FOUND` (message
//!   `PersistedQueryNotFound`, which Apollo's clients look for); the client then sends the
//!   query with its hash, which is checked and, once the document passed the limits,
//!   remembered. The cache is bounded in bytes (`GRAPHQL_APQ_CACHE_BYTES`, oldest out
//!   first; 0 turns APQ off).
//! - Trusted documents (`GRAPHQL_TRUSTED_DOCUMENTS`, an Apollo persisted query manifest):
//!   only the manifest's documents run, by hash or by their exact text; anything else is
//!   `PERSISTED_QUERY_NOT_IN_LIST`, and nothing is registered.
//!
//! This runs before the document limits (see `limits.rs`), which measure the text it fills
//! in, so a persisted document costs what it would cost sent in full.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextPrepareRequest,
};
use async_graphql::{ErrorExtensionValues, Request, ServerError, ServerResult, Value};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::bounded_cache::BoundedCache;

/// Documents registered by clients, by hash, bounded by their total size.
type DocumentCache = BoundedCache<String>;

/// The documents of a trusted-documents manifest, by the hex SHA-256 of their text.
#[derive(Debug, Clone)]
pub struct TrustedDocuments(Arc<HashMap<String, String>>);

#[derive(Deserialize)]
struct Manifest {
    format: String,
    version: u32,
    operations: Vec<ManifestOperation>,
}

#[derive(Deserialize)]
struct ManifestOperation {
    id: String,
    body: String,
}

impl TrustedDocuments {
    /// Reads an Apollo persisted query manifest (`{"format":
    /// "apollo-persisted-query-manifest", "version": 1, "operations": [{"id", "body", ...}]}`);
    /// every `id` must be the SHA-256 of its `body`.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
        let manifest: Manifest = serde_json::from_str(&text).map_err(|error| {
            format!(
                "{} is not a persisted query manifest: {error}",
                path.display()
            )
        })?;
        if manifest.format != "apollo-persisted-query-manifest" || manifest.version != 1 {
            return Err(format!(
                "{}: expected format \"apollo-persisted-query-manifest\", version 1",
                path.display()
            ));
        }
        let mut documents = HashMap::new();
        for operation in manifest.operations {
            let hash = sha256_hex(&operation.body);
            if operation.id != hash {
                return Err(format!(
                    "{}: operation {} is not the SHA-256 of its body ({hash})",
                    path.display(),
                    operation.id
                ));
            }
            documents.insert(hash, operation.body);
        }
        Ok(Self(Arc::new(documents)))
    }

    /// How many documents the manifest holds.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Which documents may run, and where persisted ones come from.
#[derive(Debug, Clone)]
pub enum PersistedQueries {
    /// Any document; hashes registered automatically in a cache of at most this many bytes
    /// (0: persisted queries are refused, every request sends its query).
    Automatic(u64),
    /// Only the manifest's documents.
    Trusted(TrustedDocuments),
}

/// The extension serving persisted queries in one mode, with its cache.
pub struct PersistedQueryStore {
    mode: PersistedQueries,
    cache: Arc<Mutex<DocumentCache>>,
}

impl PersistedQueryStore {
    /// An empty store for `mode`.
    pub fn new(mode: PersistedQueries) -> Self {
        Self {
            mode,
            cache: Arc::default(),
        }
    }
}

impl ExtensionFactory for PersistedQueryStore {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(PersistedQueriesExtension {
            mode: self.mode.clone(),
            cache: Arc::clone(&self.cache),
        })
    }
}

struct PersistedQueriesExtension {
    mode: PersistedQueries,
    cache: Arc<Mutex<DocumentCache>>,
}

/// A refusal with `extensions.code`.
fn refusal(message: &str, code: &str) -> ServerError {
    let mut error = ServerError::new(message, None);
    let mut extensions = ErrorExtensionValues::default();
    extensions.set("code", Value::String(code.to_owned()));
    error.extensions = Some(extensions);
    error
}

/// The `persistedQuery` extension's hash, if the request has one.
fn requested_hash(request: &mut Request) -> ServerResult<Option<String>> {
    let Some(value) = request.extensions.remove("persistedQuery") else {
        return Ok(None);
    };
    let malformed = || {
        refusal(
            "extensions.persistedQuery must be {\"version\": 1, \"sha256Hash\": \"<64 hex digits>\"}",
            "BAD_USER_INPUT",
        )
    };
    let json = value.into_json().map_err(|_| malformed())?;
    let version = json.get("version").and_then(serde_json::Value::as_i64);
    let hash = json.get("sha256Hash").and_then(serde_json::Value::as_str);
    match (version, hash) {
        (Some(1), Some(hash))
            if hash.len() == 64 && hash.bytes().all(|byte| byte.is_ascii_hexdigit()) =>
        {
            Ok(Some(hash.to_ascii_lowercase()))
        }
        _ => Err(malformed()),
    }
}

impl PersistedQueriesExtension {
    fn cached(&self, hash: &str) -> Option<String> {
        self.cache.lock().expect("never poisoned").get(hash)
    }

    fn remember(&self, hash: String, text: String, budget: u64) {
        let cost = text.len() as u64;
        self.cache
            .lock()
            .expect("never poisoned")
            .insert(hash, text, cost, budget);
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for PersistedQueriesExtension {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        mut request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        let hash = requested_hash(&mut request)?;
        let sent_text = !request.query.is_empty();
        if let (Some(hash), true) = (&hash, sent_text) {
            if sha256_hex(&request.query) != *hash {
                return Err(refusal(
                    "provided sha does not match query",
                    "PERSISTED_QUERY_HASH_MISMATCH",
                ));
            }
        }
        match &self.mode {
            PersistedQueries::Trusted(trusted) => {
                let known = match &hash {
                    Some(hash) => trusted.0.get(hash),
                    None => trusted.0.get(&sha256_hex(&request.query)),
                };
                let Some(text) = known else {
                    return Err(refusal(
                        "only the trusted documents (GRAPHQL_TRUSTED_DOCUMENTS) may run",
                        "PERSISTED_QUERY_NOT_IN_LIST",
                    ));
                };
                if !sent_text {
                    request.query = text.clone();
                }
                next.run(ctx, request).await
            }
            PersistedQueries::Automatic(budget) => {
                let Some(hash) = hash else {
                    return next.run(ctx, request).await;
                };
                if *budget == 0 {
                    return Err(refusal(
                        "persisted queries are off (GRAPHQL_APQ_CACHE_BYTES=0): send the query",
                        "PERSISTED_QUERY_NOT_SUPPORTED",
                    ));
                }
                if sent_text {
                    let text = request.query.clone();
                    let prepared = next.run(ctx, request).await?;
                    self.remember(hash, text, *budget);
                    return Ok(prepared);
                }
                match self.cached(&hash) {
                    Some(text) => {
                        request.query = text;
                        next.run(ctx, request).await
                    }
                    None => Err(refusal(
                        "PersistedQueryNotFound",
                        "PERSISTED_QUERY_NOT_FOUND",
                    )),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_lowercase_hex_sha256() {
        assert_eq!(
            sha256_hex("{ __typename }"),
            "7f56e67dd21ab3f30d1ff8b7bed08893f0a0db86449836189b361dd1e56ddb4b"
        );
    }
}
