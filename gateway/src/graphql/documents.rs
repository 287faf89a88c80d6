//! Parsed and validated documents, cached, so a repeated operation skips both. A document
//! is kept parsed by its text (the one a persisted-query hash stands for, once filled in)
//! and, once it passed async-graphql's validation, kept validated by its text, operation
//! name and variables (validation checks the variables' values too). Both caches are bounded
//! by `GRAPHQL_DOCUMENT_CACHE_BYTES` of the text they are keyed by, oldest out first; `0`
//! turns them off. The document limits (see `limits.rs`) are still measured on every
//! request: a cached document costs what it would cost sent anew.

use std::sync::{Arc, Mutex};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextPrepareRequest, NextValidation,
};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{Request, ServerError, ServerResult, ValidationResult};

use super::bounded_cache::BoundedCache;
use crate::metrics::{DocumentStage, Metrics};

#[derive(Default)]
struct Caches {
    parsed: Mutex<BoundedCache<ExecutableDocument>>,
    validated: Mutex<BoundedCache<ValidationResult>>,
}

/// The extension keeping documents parsed and validated, within `budget` bytes each.
pub struct DocumentCache {
    budget: u64,
    caches: Arc<Caches>,
    metrics: Arc<Metrics>,
}

impl DocumentCache {
    /// Empty caches of `budget` bytes each, counting hits and misses in `metrics`.
    pub fn new(budget: u64, metrics: Arc<Metrics>) -> Self {
        Self {
            budget,
            caches: Arc::default(),
            metrics,
        }
    }
}

impl ExtensionFactory for DocumentCache {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(DocumentCacheExtension {
            budget: self.budget,
            caches: self.caches.clone(),
            metrics: self.metrics.clone(),
            validation_key: Mutex::default(),
        })
    }
}

/// One request's view of the caches.
struct DocumentCacheExtension {
    budget: u64,
    caches: Arc<Caches>,
    metrics: Arc<Metrics>,
    /// What the request's validation is cached under, once it is prepared.
    validation_key: Mutex<Option<String>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().expect("never poisoned: no panics while held")
}

#[async_graphql::async_trait::async_trait]
impl Extension for DocumentCacheExtension {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        mut request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        if self.budget == 0 {
            return next.run(ctx, request).await;
        }
        let text = request.query.clone();
        let cached = lock(&self.caches.parsed).get(&text);
        self.metrics
            .record_document_cache(DocumentStage::Parse, cached.is_some());
        let was_cached = cached.is_some();
        if let Some(document) = cached {
            request.set_parsed_query(document);
        }
        // The limits and the roles are checked after this, on every request.
        let mut request = next.run(ctx, request).await?;
        if !was_cached {
            if let Ok(document) = request.parsed_query() {
                let document = document.clone();
                let cost = text.len() as u64;
                lock(&self.caches.parsed).insert(text.clone(), document, cost, self.budget);
            }
        }
        let variables = serde_json::to_string(&request.variables).unwrap_or_default();
        let operation = request.operation_name.as_deref().unwrap_or_default();
        *lock(&self.validation_key) = Some(format!("{operation}\0{variables}\0{text}"));
        Ok(request)
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let Some(key) = lock(&self.validation_key).take() else {
            return next.run(ctx).await;
        };
        let cached = lock(&self.caches.validated).get(&key);
        self.metrics
            .record_document_cache(DocumentStage::Validation, cached.is_some());
        if let Some(result) = cached {
            return Ok(result);
        }
        let result = next.run(ctx).await?;
        let cost = key.len() as u64;
        lock(&self.caches.validated).insert(key, result, cost, self.budget);
        Ok(result)
    }
}
