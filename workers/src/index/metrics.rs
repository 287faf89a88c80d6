//! The indexer's Prometheus metrics (served on `INDEX_ADMIN_ADDR`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct OutcomeLabels {
    pub(super) outcome: String,
}

/// The indexer's metrics.
#[derive(Debug, Clone, Default)]
pub struct IndexMetrics {
    pub(super) pages_fetched: Counter,
    pub(super) page_errors: Counter,
    pub(super) events_applied: Counter,
    pub(super) gaps_detected: Counter,
    pub(super) resyncs: Counter,
    pub(super) scans: Family<OutcomeLabels, Counter>,
    pub(super) ghosts_removed: Counter,
    pub(super) feed_seq: Gauge,
    pub(super) last_event_applied: Gauge,
    pub(super) feed_rejected: Counter,
    pub(super) epochs: Counter,
    pub(super) records_fixed: Counter,
    pub(super) last_exact_proof: Gauge,
    /// What the indexer's heartbeat reports (`syncStatus`).
    pub health: crate::health::Health,
}

impl IndexMetrics {
    /// Registers the indexer's metrics.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "index_pages_fetched",
            "API pages fetched",
            metrics.pages_fetched.clone(),
        );
        registry.register(
            "index_page_errors",
            "API page requests that failed or timed out",
            metrics.page_errors.clone(),
        );
        registry.register(
            "index_events_applied",
            "Feed events applied",
            metrics.events_applied.clone(),
        );
        registry.register(
            "index_gaps_detected",
            "Gaps in the feed's seq (lost events)",
            metrics.gaps_detected.clone(),
        );
        registry.register(
            "index_resyncs",
            "Resyncs marked due (gap, reconnect, restart)",
            metrics.resyncs.clone(),
        );
        registry.register(
            "index_scans",
            "Full scans by outcome (clean or dirty)",
            metrics.scans.clone(),
        );
        registry.register(
            "index_ghosts_removed",
            "Records deleted because a clean scan did not see them",
            metrics.ghosts_removed.clone(),
        );
        registry.register(
            "index_feed_seq",
            "The version clock: the feed's seq when it has one, else events received",
            metrics.feed_seq.clone(),
        );
        registry.register(
            "index_feed_rejected",
            "Feed messages that were not a change the indexer understands (dropped, logged)",
            metrics.feed_rejected.clone(),
        );
        registry.register(
            "index_upstream_epochs",
            "Signs that the upstream restarted: feed reconnects, seq starting over, deleted ids re-created",
            metrics.epochs.clone(),
        );
        registry.register(
            "index_records_fixed",
            "Records a scan added or corrected because no event had brought their content",
            metrics.records_fixed.clone(),
        );
        registry.register(
            "index_last_exact_proof_timestamp_seconds",
            "When a clean scan last proved the table equal to the upstream, content compared",
            metrics.last_exact_proof.clone(),
        );
        registry.register(
            "index_last_event_applied_timestamp_seconds",
            "When the last feed event was applied (lag = now - this)",
            metrics.last_event_applied.clone(),
        );
        metrics
    }
}
