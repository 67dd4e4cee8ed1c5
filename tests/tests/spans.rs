//! Spans over OTLP/HTTP: a sampled request leaves one server span at the
//! collector, in the client's trace, with the span id the origin was told
//! as its parent, the tenant, the cache outcome, guest time and origin
//! time. The collector here is a real HTTP server that decodes the
//! exported protobuf with the OpenTelemetry protocol's own types.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use outpost_e2e::*;
use prost_otlp::Message;

const CLIENT_TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN_ID: &str = "00f067aa0ba902b7";

/// What the collector received: each export's resource attributes and
/// spans, and the requests' content types.
#[derive(Default)]
struct Received {
    spans: Vec<(Vec<(String, String)>, Span)>,
    content_types: Vec<String>,
}

/// An OTLP/HTTP trace receiver on 127.0.0.1.
struct Collector {
    url: String,
    received: Arc<Mutex<Received>>,
}

impl Collector {
    async fn start() -> Collector {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Received::default()));
        let state = received.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| receive(state.clone(), request));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Collector { url, received }
    }

    fn spans(&self) -> Vec<(Vec<(String, String)>, Span)> {
        self.received.lock().unwrap().spans.clone()
    }

    /// Waits (bounded) until `n` spans arrived.
    async fn wait_for(&self, n: usize) -> Vec<(Vec<(String, String)>, Span)> {
        for _ in 0..200 {
            if self.spans().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.spans()
    }
}

async fn receive(
    state: Arc<Mutex<Received>>,
    request: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<Full<Bytes>>, Infallible> {
    let content_type = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let path = request.uri().path().to_string();
    let body = request.into_body().collect().await.unwrap().to_bytes();
    let export = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
    let mut received = state.lock().unwrap();
    received.content_types.push(content_type);
    assert_eq!(path, "/v1/traces");
    for resource_spans in export.resource_spans {
        let resource: Vec<(String, String)> = resource_spans
            .resource
            .map(|r| {
                r.attributes
                    .into_iter()
                    .map(|kv| (kv.key, text(kv.value.and_then(|v| v.value))))
                    .collect()
            })
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                received.spans.push((resource.clone(), span));
            }
        }
    }
    let answer = ExportTraceServiceResponse::default().encode_to_vec();
    Ok(http::Response::builder()
        .header("content-type", "application/x-protobuf")
        .body(Full::new(Bytes::from(answer)))
        .unwrap())
}

fn text(value: Option<Value>) -> String {
    match value {
        Some(Value::StringValue(s)) => s,
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| text(kv.value.clone().and_then(|v| v.value)))
}

fn seconds(span: &Span, key: &str) -> f64 {
    attribute(span, key)
        .unwrap_or_else(|| panic!("{key} missing"))
        .parse()
        .unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The parent id the origin was told in `traceparent` for `target`.
fn parent_told_to_origin(origin: &Origin, target: &str) -> (String, String) {
    let seen = origin.seen();
    let request = seen.iter().find(|s| s.target == target).unwrap();
    let traceparent = request.values("traceparent")[0].to_string();
    let parts: Vec<&str> = traceparent.split('-').collect();
    (parts[1].to_string(), parts[2].to_string())
}

fn node_exporting_to(origin: &Origin, otlp: &str) -> Node {
    let config = format!(
        "[server.otlp]\n{otlp}\n\n{}",
        tenant(
            "t",
            &["t.test"],
            "builtin:default",
            &[("origin", &origin.url())]
        )
    );
    Node::start(&config)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sampled_request_leaves_a_server_span_in_the_clients_trace_with_tenant_cache_and_times() {
    let collector = Collector::start().await;
    let origin = Origin::start("origin").await;
    origin.reply("/page", Reply::ok().body("0123456789"));
    origin.reply_to_all(Reply::ok().body("other"));
    let node = node_exporting_to(
        &origin,
        &format!(
            "endpoint = \"{}\"\nsample_ratio = 0.0\nflush_interval_ms = 100",
            collector.url
        ),
    );
    let client = Client::new();
    let sampled = format!("00-{CLIENT_TRACE_ID}-{CLIENT_SPAN_ID}-01");
    let miss = client
        .get_with(&node, "t.test", "/page", &[("traceparent", &sampled)])
        .await;
    assert_eq!(miss.status, 200);
    let hit = client
        .get_with(&node, "t.test", "/page", &[("traceparent", &sampled)])
        .await;
    assert!(hit.cache_status().contains("hit"), "{}", hit.cache_status());
    // Not sampled by the client; and a trace the node starts is not
    // sampled with sample_ratio 0.
    let unsampled = format!("00-{CLIENT_TRACE_ID}-{CLIENT_SPAN_ID}-00");
    client
        .get_with(
            &node,
            "t.test",
            "/unsampled",
            &[("traceparent", &unsampled)],
        )
        .await;
    client.get(&node, "t.test", "/no-trace").await;

    collector.wait_for(2).await;
    // Time for a wrongly exported third span to arrive too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let spans: Vec<Span> = collector.spans().into_iter().map(|(_, s)| s).collect();
    assert_eq!(spans.len(), 2, "only the two sampled requests: {spans:?}");
    let (_, told_span) = parent_told_to_origin(&origin, "/page");
    let [miss_span, hit_span] = [&spans[0], &spans[1]];
    for span in [miss_span, hit_span] {
        assert_eq!(hex(&span.trace_id), CLIENT_TRACE_ID);
        assert_eq!(hex(&span.parent_span_id), CLIENT_SPAN_ID);
        assert_eq!(span.kind, SpanKind::Server as i32);
        assert_eq!(span.name, "GET");
        assert_eq!(attribute(span, "outpost.tenant").as_deref(), Some("t"));
        assert_eq!(attribute(span, "url.path").as_deref(), Some("/page"));
        assert_eq!(
            attribute(span, "http.response.status_code").as_deref(),
            Some("200")
        );
        assert!(span.end_time_unix_nano > span.start_time_unix_nano);
    }
    // The origin's parent is the edge's span of the miss.
    assert_eq!(hex(&miss_span.span_id), told_span);
    assert_ne!(miss_span.span_id, hit_span.span_id);
    assert_eq!(
        attribute(miss_span, "outpost.cache").as_deref(),
        Some("miss")
    );
    assert_eq!(attribute(hit_span, "outpost.cache").as_deref(), Some("hit"));
    assert_eq!(
        attribute(miss_span, "outpost.backend").as_deref(),
        Some("origin")
    );
    assert!(seconds(miss_span, "outpost.guest_time_s") > 0.0);
    assert!(seconds(miss_span, "outpost.origin_time_s") > 0.0);
    assert_eq!(seconds(hit_span, "outpost.origin_time_s"), 0.0);
    assert!(attribute(miss_span, "outpost.version")
        .unwrap()
        .starts_with("sha256:"));

    let (resource, _) = &collector.wait_for(1).await[0];
    assert!(resource.contains(&("service.name".into(), "outpost".into())));
    let content_types = collector.received.lock().unwrap().content_types.clone();
    assert!(content_types.iter().all(|t| t == "application/x-protobuf"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trace_started_at_the_edge_is_exported_as_a_root_span_and_flushed_on_shutdown() {
    let collector = Collector::start().await;
    let origin = Origin::start("origin").await;
    origin.reply_to_all(Reply::ok().only("cache-control", "no-store"));
    // An hour between exports: only the shutdown sends the span.
    let node = node_exporting_to(
        &origin,
        &format!(
            "endpoint = \"{}\"\nflush_interval_ms = 3600000",
            collector.url
        ),
    );
    let client = Client::new();
    let response = client.get(&node, "t.test", "/root").await;
    assert_eq!(response.status, 200);
    assert!(collector.spans().is_empty());
    assert!(node.stop().success());

    let spans = collector.wait_for(1).await;
    assert_eq!(spans.len(), 1);
    let span = &spans[0].1;
    let (told_trace, told_span) = parent_told_to_origin(&origin, "/root");
    assert_eq!(hex(&span.trace_id), told_trace);
    assert_eq!(hex(&span.span_id), told_span);
    assert!(span.parent_span_id.is_empty(), "a root span");
    assert_eq!(attribute(span, "outpost.cache").as_deref(), Some("miss"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_collector_that_is_down_costs_no_request() {
    let origin = Origin::start("origin").await;
    origin.reply_to_all(Reply::ok().body("fine"));
    let node = node_exporting_to(
        &origin,
        &format!(
            "endpoint = \"{}/v1/traces\"\nflush_interval_ms = 50\ntimeout_ms = 200",
            closed_port_url()
        ),
    );
    let client = Client::new();
    for i in 0..50 {
        let response = client.get(&node, "t.test", &format!("/r{i}")).await;
        assert_eq!(response.status, 200);
        assert_eq!(response.text(), "fine");
    }
}
