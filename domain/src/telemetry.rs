//! Logs and traces. `tracing` everywhere; logs as text or JSON lines filtered by
//! `RUST_LOG`; spans exported over OTLP/HTTP (protobuf) when an endpoint is configured,
//! every span at `info` and above whatever `RUST_LOG` says (quieter logs must not cut
//! traces short).
//! The exporter runs on the SDK's own batch thread with a blocking HTTP client, so export
//! never competes with the async runtime.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, TelemetryArgs};
use crate::{Error, Result};

/// Keeps the trace exporter alive; dropping it flushes pending spans.
#[must_use = "dropping the guard stops trace export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(error) = provider.shutdown() {
                eprintln!("trace export shutdown failed: {error}");
            }
        }
    }
}

/// Installs the global subscriber for a binary named `service_name`.
pub fn init(args: &TelemetryArgs, service_name: &'static str) -> Result<TelemetryGuard> {
    let provider = match &args.otel_exporter_otlp_endpoint {
        Some(endpoint) => Some(otlp_tracer_provider(endpoint, service_name)?),
        None => None,
    };
    let mut filter = EnvFilter::try_new(&args.log_filter)
        .map_err(|error| Error::Telemetry(format!("invalid RUST_LOG: {error}")))?;
    // lapin logs every channel the broker closes at ERROR, as a debug dump, before the
    // error reaches the code that reports it in its own words (a refused queue, say).
    if !args.log_filter.contains("lapin") {
        filter = filter.add_directive("lapin::channel=off".parse().expect("a valid directive"));
    }
    let log_layer = match args.log_format {
        // Colours only for a person at a terminal: escape codes in a file, a pipe or a
        // log collector are noise (and formatting them costs every span).
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let trace_layer = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(service_name))
            .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
    });
    tracing_subscriber::registry()
        .with(log_layer.with_filter(filter))
        .with(trace_layer)
        .try_init()
        .map_err(|error| Error::Telemetry(error.to_string()))?;
    Ok(TelemetryGuard { provider })
}

/// A tracer provider exporting to `<endpoint>/v1/traces` over OTLP/HTTP protobuf, as the
/// OTLP spec prescribes for the generic `OTEL_EXPORTER_OTLP_ENDPOINT`.
pub fn otlp_tracer_provider(
    endpoint: &str,
    service_name: &'static str,
) -> Result<SdkTracerProvider> {
    let traces_url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    // The blocking HTTP client must not be created on an async runtime thread.
    let exporter = std::thread::spawn(move || {
        opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(traces_url)
            .build()
    })
    .join()
    .map_err(|_| Error::Telemetry("exporter setup panicked".into()))?
    .map_err(|error| Error::Telemetry(error.to_string()))?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service_name).build())
        .build())
}

/// What caused an event: the request's W3C `traceparent` and its `x-request-id`. The
/// outbox carries both as message headers, so the relay's and the consumer's spans, and
/// every log line inside them, name the same trace and request as the gateway's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The W3C trace context of the span that caused the event.
    pub traceparent: String,
    /// The request's id, when a request caused it.
    pub request_id: Option<String>,
}

impl Origin {
    /// The current span's trace context (see [`traceparent_of`]) and `request_id`.
    pub fn current(request_id: Option<String>) -> Self {
        Self::of_span(&tracing::Span::current(), request_id)
    }

    /// `span`'s trace context (see [`traceparent_of`]) and `request_id`.
    pub fn of_span(span: &tracing::Span, request_id: Option<String>) -> Self {
        Self {
            traceparent: traceparent_of(span),
            request_id,
        }
    }

    /// The trace id (32 hex digits) its `traceparent` names.
    pub fn trace_id(&self) -> &str {
        trace_id_of(&self.traceparent).unwrap_or_default()
    }
}

/// The trace id (32 hex digits) a W3C `traceparent` names, if it has the format's shape.
pub fn trace_id_of(traceparent: &str) -> Option<&str> {
    traceparent
        .trim()
        .split('-')
        .nth(1)
        .filter(|id| id.len() == 32 && id.bytes().all(|byte| byte.is_ascii_hexdigit()))
}

/// The W3C `traceparent` of `span`, to carry a trace across a broker. Without a trace
/// exporter the span has no trace id, so a fresh random one is made: consumers can still
/// correlate what one request caused.
pub fn traceparent_of(span: &tracing::Span) -> String {
    use opentelemetry::trace::TraceContextExt;
    use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    let context = span.context();
    let span = context.span();
    let span_context = span.span_context();
    if span_context.is_valid() {
        format!(
            "00-{}-{}-{:02x}",
            span_context.trace_id(),
            span_context.span_id(),
            span_context.trace_flags().to_u8()
        )
    } else {
        let ids = RandomIdGenerator::default();
        format!("00-{}-{}-01", ids.new_trace_id(), ids.new_span_id())
    }
}

/// Makes `span` a child of the remote span a W3C `traceparent` names (as a broker message
/// carries it), so the work it covers joins the trace of the request that caused it, and
/// records that trace's id in the span's `trace_id` field (when it declares one), so every
/// log line inside it names the trace. A `traceparent` that does not parse leaves the span
/// as it was; a process without a trace exporter gets the field only.
pub fn continue_trace(span: &tracing::Span, traceparent: &str) {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    let mut parts = traceparent.trim().split('-');
    let (Some("00"), Some(trace_id), Some(span_id), Some(flags), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return;
    };
    let hex_trace_id = trace_id;
    let (Ok(trace_id), Ok(span_id), Ok(flags)) = (
        TraceId::from_hex(trace_id),
        SpanId::from_hex(span_id),
        u8::from_str_radix(flags, 16),
    ) else {
        return;
    };
    let remote = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    );
    if remote.is_valid() {
        span.record("trace_id", hex_trace_id);
        // Without the OpenTelemetry layer (no exporter) there is nothing to attach to.
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
    }
}
