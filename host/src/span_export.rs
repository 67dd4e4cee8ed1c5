//! Spans sent to an OpenTelemetry collector over OTLP/HTTP (protobuf),
//! when `server.otlp` names one: one server span per sampled request, with
//! its tenant, module version, cache outcome, guest time and origin time.
//!
//! The span's id is the one the node already tells origins in
//! `traceparent` (see [`crate::http::TraceContext`]), so an origin's own
//! spans hang under the edge's. Spans go through the SDK's batch processor:
//! a bounded queue drained by a thread of its own, so the request path
//! never waits on the collector (a full queue drops spans, and the SDK
//! counts them). The exporter's HTTP requests run on the node's runtime.

use std::borrow::Cow;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry::trace::{SpanContext, SpanKind, Status, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue, SpanId, TraceFlags, TraceId};
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SpanData, SpanEvents, SpanLinks, SpanProcessor,
};
use opentelemetry_sdk::Resource;

use crate::access_log::Entry;
use crate::config::{FieldError, OtlpConfig};
use crate::http::TraceContext;

/// Spans queued at most; past it new ones are dropped.
const QUEUE: usize = 8 * 1024;

/// Largest collector answer read (it only says what it refused).
const MAX_ANSWER: usize = 64 * 1024;

/// The handle the request path records spans through.
pub struct SpanExport {
    processor: BatchSpanProcessor,
    sample_ratio: f64,
    scope: InstrumentationScope,
}

impl SpanExport {
    /// Builds the exporter; `None` when `server.otlp` is not set or the
    /// node is not running (a config check exports nothing).
    pub fn start(
        config: Option<&OtlpConfig>,
        base_dir: &std::path::Path,
        node_id: &str,
    ) -> Result<Option<SpanExport>, FieldError> {
        let Some(config) = config else {
            return Ok(None);
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Ok(None);
        };
        let tls = crate::tls::client_config(config.tls.as_ref(), base_dir)
            .map_err(|e| e.within("server.otlp."))?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let timeout = Duration::from_millis(config.timeout_ms);
        let client = Collector {
            client: Client::builder(TokioExecutor::new()).build(https),
            runtime,
            timeout,
        };
        let exporter = SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(config.endpoint.clone())
            .with_timeout(timeout)
            .with_headers(config.headers.clone().into_iter().collect())
            .build()
            .map_err(|e| FieldError::new("server.otlp.endpoint", e.to_string()))?;
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(QUEUE)
            .with_scheduled_delay(Duration::from_millis(config.flush_interval_ms))
            .build();
        let mut processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(batch)
            .build();
        processor.set_resource(
            &Resource::builder_empty()
                .with_service_name("outpost")
                .with_attributes([
                    KeyValue::new("service.instance.id", node_id.to_string()),
                    KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
                ])
                .build(),
        );
        Ok(Some(SpanExport {
            processor,
            sample_ratio: config.sample_ratio,
            scope: InstrumentationScope::builder("outpost")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        }))
    }

    /// Whether a trace that starts at the node is sampled.
    pub fn sample_new_trace(&self) -> bool {
        self.sample_ratio >= 1.0 || rand::random::<f64>() < self.sample_ratio
    }

    /// Queues the span of a finished request, if its trace is sampled.
    /// Attribute names follow the OpenTelemetry HTTP semantic conventions;
    /// the node's own are under `outpost.`.
    pub fn record(&self, trace: &TraceContext, entry: &Entry) {
        if !trace.sampled() {
            return;
        }
        let context = SpanContext::new(
            TraceId::from_bytes(trace.trace_id),
            SpanId::from_bytes(trace.span_id),
            TraceFlags::new(trace.flags),
            false,
            trace
                .state
                .as_ref()
                .and_then(|s| s.to_str().ok()?.parse().ok())
                .unwrap_or(TraceState::NONE),
        );
        let mut attributes = vec![
            KeyValue::new("http.request.method", entry.method.to_string()),
            KeyValue::new("server.address", entry.host.to_string()),
            KeyValue::new("url.path", entry.path.to_string()),
            KeyValue::new("http.response.status_code", i64::from(entry.status)),
            KeyValue::new("outpost.tenant", entry.tenant.to_string()),
            KeyValue::new("outpost.version", entry.version.to_string()),
            KeyValue::new("outpost.cache", entry.outcome.to_string()),
            KeyValue::new("outpost.guest_time_s", entry.guest.as_secs_f64()),
            KeyValue::new("outpost.origin_time_s", entry.origin.as_secs_f64()),
            KeyValue::new("outpost.bytes_sent", entry.bytes as i64),
            KeyValue::new("outpost.request_id", entry.request_id.to_string()),
        ];
        if entry.backend != "-" {
            attributes.push(KeyValue::new("outpost.backend", entry.backend.to_string()));
        }
        // Server errors are the node's; a 4xx is the client's (semantic
        // conventions for HTTP server spans).
        let status = if entry.status >= 500 {
            Status::error(format!("status {}", entry.status))
        } else {
            Status::Unset
        };
        self.processor.on_end(SpanData {
            span_context: context,
            parent_span_id: trace.parent_id.map_or(SpanId::INVALID, SpanId::from_bytes),
            parent_span_is_remote: trace.parent_id.is_some(),
            span_kind: SpanKind::Server,
            name: Cow::Owned(entry.method.to_string()),
            start_time: entry.time,
            end_time: entry.time + entry.duration,
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: self.scope.clone(),
        });
    }

    /// Sends what is queued, waiting up to the export timeout (on
    /// shutdown).
    pub fn flush(&self) {
        if let Err(e) = self.processor.force_flush() {
            tracing::warn!("spans not exported: {e}");
        }
    }
}

/// The exporter's HTTP client: hyper on the node's runtime. The SDK calls
/// it from its own thread, so the request is spawned onto the runtime and
/// awaited from there.
struct Collector {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[async_trait::async_trait]
impl HttpClient for Collector {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let exchange = async move {
            let response = client.request(request.map(Full::new)).await?;
            let (head, body) = response.into_parts();
            let body = Limited::new(body, MAX_ANSWER).collect().await?.to_bytes();
            Ok::<_, HttpError>(Response::from_parts(head, body))
        };
        let timeout = self.timeout;
        self.runtime
            .spawn(async move {
                tokio::time::timeout(timeout, exchange)
                    .await
                    .map_err(|_| HttpError::from("the collector did not answer in time"))?
            })
            .await?
    }
}
