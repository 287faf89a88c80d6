//! The domain's error type. Each variant says which side is at fault, so the edges (REST,
//! GraphQL, CLI) can map it once to a status code or an error code.

/// Everything that can go wrong below the gateway and the workers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database refused or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying migrations failed.
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// An upstream system failed, timed out or answered something we cannot use.
    #[error("{0}")]
    Upstream(String),
    /// An upstream record broke the contract (missing field, wrong type, too long).
    #[error("{0}")]
    InvalidRecord(String),
    /// A request field is invalid; the message names it.
    #[error("{message}")]
    InvalidInput {
        /// The offending field, as the client named it.
        field: &'static str,
        /// What is wrong, naming the field.
        message: String,
    },
    /// No customer with this id (of the source the operation needs).
    #[error("customer {0} not found")]
    CustomerNotFound(String),
    /// An idempotency key was replayed with a different request.
    #[error("idempotency key {0:?} was already used with a different request")]
    IdempotencyKeyReused(String),
    /// The search engine (Meilisearch) failed or refused.
    #[error("search engine error: {0}")]
    Search(String),
    /// A message broker failed or refused.
    #[error("broker error: {0}")]
    Broker(String),
    /// The broker refused to declare a queue or exchange because one of that name exists
    /// with other arguments (see `amqp::TopologyConflict`): final, an operator must act.
    #[error("{0}")]
    TopologyRefused(String),
    /// A dependency accepted the connection but did not answer in time.
    #[error("{variable}: no answer within {seconds} s (is the address right, and is the service up and not stuck?)")]
    NoAnswer {
        /// The variable that names the dependency (`DATABASE_URL`).
        variable: &'static str,
        /// How long it was given.
        seconds: u64,
    },
    /// Telemetry could not be set up.
    #[error("telemetry setup failed: {0}")]
    Telemetry(String),
}

/// Result with the domain [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
