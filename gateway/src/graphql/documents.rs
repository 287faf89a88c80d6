//! Parsed and validated documents, cached, so a repeated operation skips both. A document
//! is kept parsed by its text (the one a persisted-query hash stands for, once filled in)
//! and, once it passed async-graphql's validation, kept validated by its text, operation
//! name and variables (validation checks the variables' values too). Both caches are bounded
//! by `GRAPHQL_DOCUMENT_CACHE_BYTES` of the text they are keyed by, oldest out first; `0`
//! turns them off. The document limits (see `limits.rs`) are still measured on every
//! request that takes the full path: a cached document costs what it would cost sent anew.
//!
//! A request sent again exactly (same text, operation name and variables, no
//! `extensions`) after its first run passed every check runs on the [`RepeatedOperations`]
//! path: the same schema without extensions. async-graphql wraps every field of an operation
//! in each installed extension's resolve hook, which is a quarter of the CPU a page of
//! customers costs; none of the extensions needs a field, and what they check before an
//! operation runs (persisted or trusted documents, limits, validation) is the same for the
//! same request, except the caller's roles, which are checked again each time.

use std::sync::{Arc, Mutex};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextPrepareRequest, NextValidation,
};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{Request, ServerError, ServerResult, ValidationResult};

use super::bounded_cache::BoundedCache;
use super::HubSchema;
use crate::auth::Authenticator;
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

    /// The path for requests these caches have seen pass, running on `lean` (the schema
    /// without extensions); `None` when the caches are off.
    pub fn repeated_operations(
        &self,
        lean: HubSchema,
        authenticator: Arc<Authenticator>,
    ) -> Option<RepeatedOperations> {
        (self.budget > 0).then(|| RepeatedOperations {
            caches: self.caches.clone(),
            metrics: self.metrics.clone(),
            lean,
            authenticator,
        })
    }
}

/// What a request's validation is cached under: its operation name, variables and text.
fn validation_key(request: &Request) -> String {
    let variables = serde_json::to_string(&request.variables).unwrap_or_default();
    let operation = request.operation_name.as_deref().unwrap_or_default();
    format!("{operation}\0{variables}\0{}", request.query)
}

/// Requests that passed every check before (see the module's documentation), run again
/// without the extensions.
#[derive(Clone)]
pub struct RepeatedOperations {
    caches: Arc<Caches>,
    metrics: Arc<Metrics>,
    lean: HubSchema,
    authenticator: Arc<Authenticator>,
}

/// A request ready to run on the lean schema.
pub struct Repeated {
    lean: HubSchema,
    metrics: Arc<Metrics>,
    request: Request,
    operation: String,
}

impl RepeatedOperations {
    /// `request` ready to run without extensions, when its exact text, operation name and
    /// variables passed every check before and its caller has the roles it needs; else the
    /// request back, for the full schema. Requests with `extensions` (persisted-query
    /// hashes) always take the full path.
    pub fn prepare(&self, mut request: Request) -> Result<Repeated, Box<Request>> {
        if request.query.is_empty() || !request.extensions.is_empty() {
            return Err(Box::new(request));
        }
        let key = validation_key(&request);
        if !lock(&self.caches.validated).contains(&key) {
            return Err(Box::new(request));
        }
        let Some(document) = lock(&self.caches.parsed).get(&request.query) else {
            return Err(Box::new(request));
        };
        let identity = super::authorization::identity_in(&request.data)
            .cloned()
            .unwrap_or_else(|| self.authenticator.anonymous());
        let requested = request.operation_name.as_deref();
        if super::authorization::authorize(&identity, &document, requested).is_err() {
            return Err(Box::new(request));
        }
        let Some(operation) = operation_label(&document, requested) else {
            return Err(Box::new(request));
        };
        self.metrics
            .record_document_cache(DocumentStage::Parse, true);
        self.metrics
            .record_document_cache(DocumentStage::Validation, true);
        self.metrics.record_repeated_operation();
        request.set_parsed_query(document);
        Ok(Repeated {
            lean: self.lean.clone(),
            metrics: self.metrics.clone(),
            request,
            operation,
        })
    }
}

impl Repeated {
    /// Runs the operation in its `graphql.execute` span, counting it as the full schema's
    /// operation metrics would.
    pub async fn execute(self) -> async_graphql::Response {
        use tracing::Instrument;
        let span = crate::metrics::operation_span(&self.operation);
        let response = self.lean.execute(self.request).instrument(span).await;
        self.metrics
            .record_operation(&self.operation, response.errors.is_empty());
        response
    }
}

/// The name the selected operation runs under, as async-graphql names it: the one asked
/// for, else the document's only operation's (`anonymous` without one); `None` when the
/// document does not hold the operation asked for.
fn operation_label(document: &ExecutableDocument, requested: Option<&str>) -> Option<String> {
    use async_graphql::parser::types::DocumentOperations;
    match (requested, &document.operations) {
        (Some(name), DocumentOperations::Multiple(operations)) => {
            operations.contains_key(name).then(|| name.to_owned())
        }
        (Some(_), DocumentOperations::Single(_)) => None,
        (None, DocumentOperations::Multiple(operations)) => match operations.len() {
            1 => operations.keys().next().map(ToString::to_string),
            _ => None,
        },
        (None, DocumentOperations::Single(_)) => {
            Some(crate::metrics::ANONYMOUS_OPERATION.to_owned())
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
        *lock(&self.validation_key) = Some(validation_key(&request));
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
