//! The request a backend is sent: the client's, as an intermediary
//! forwards it (RFC 9110 section 7.6), with the policy's edits; for a cache
//! fill, a GET with the stale copy's validators (RFC 9111 section 4.3.1).

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request};

use super::exchange::Exchange;
use super::respond;
use super::route::{Forward, Validators};
use crate::http::headers::{connection_options, is_hop_by_hop, via_value};
use crate::http::{empty, request_id, trace_context, watched, BodyLimits, ProxyBody};
use crate::origin::Backend;
use crate::runtime::Route;

impl Exchange {
    /// The request sent to a backend: the client's, minus hop-by-hop fields,
    /// plus Via and X-Forwarded-For, with the policy's edits (RFC 9110
    /// section 7.6). Returns whether it carries validators.
    pub(super) fn origin_request(
        &mut self,
        backend: &Backend,
        route: &Route,
        forward: &Forward,
    ) -> (Request<ProxyBody>, bool) {
        let info = &self.info;
        let fill = matches!(forward, Forward::Lookup { .. });
        let (mut headers, proxies) = forwarded_fields(&info.headers, fill);
        let (method, revalidating) = match forward {
            Forward::Lookup {
                validators, range, ..
            } => (Method::GET, for_lookup(&mut headers, validators, *range)),
            Forward::Pass => (info.method.clone(), false),
        };
        let host = backend
            .host_header
            .clone()
            .or_else(|| HeaderValue::from_str(&info.authority).ok());
        if let Some(host) = host {
            headers.insert(header::HOST, host);
        }
        headers.append(header::VIA, via_value(http::Version::HTTP_11));
        if let Some(v) = forwarded_for(proxies.as_ref(), info.client_ip) {
            headers.insert(X_FORWARDED_FOR, v);
        }
        headers.insert(
            X_FORWARDED_PROTO,
            HeaderValue::from_static(info.scheme.as_str()),
        );
        // The id the client gave (or the one made for it), so the origin's
        // logs and the node's tell of the same request.
        headers.insert(request_id::HEADER, info.request_id.header_value());
        // W3C Trace Context: the origin's parent is the node's span; the
        // client's tracestate goes on unchanged, or none when the node
        // started the trace.
        headers.insert(trace_context::TRACEPARENT, info.trace.traceparent());
        if let Some(state) = &info.trace.state {
            headers.insert(trace_context::TRACESTATE, state.clone());
        }
        super::edits::apply(&mut headers, &route.request_headers);
        let body = match forward {
            Forward::Pass => match self.body.take() {
                Some(body) => {
                    let limits = BodyLimits {
                        max_bytes: self.tenant.max_body_bytes(),
                        read_timeout: self.ctx.body_read_timeout,
                    };
                    watched(body, self.body_watch.clone(), limits)
                }
                None => empty(),
            },
            Forward::Lookup { .. } => empty(),
        };
        let mut request = Request::new(body);
        *request.method_mut() = method;
        // The member it goes to is the backend's choice (`Backend::send`).
        // The policy's target was checked when it decided (`edits::check`).
        let target = route
            .forward_target
            .as_deref()
            .unwrap_or(info.path_and_query());
        *request.uri_mut() = target
            .parse()
            .unwrap_or_else(|_| http::Uri::from_static("/"));
        *request.headers_mut() = headers;
        (request, revalidating)
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// The client's fields the node writes anew on every forwarded request.
const WRITTEN_HERE: [HeaderName; 5] = [
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    request_id::HEADER,
    trace_context::TRACEPARENT,
    trace_context::TRACESTATE,
];

/// The client's conditionals and range: a fill asks with the stored copy's
/// validators or its own range, or for the whole response (RFC 9111
/// section 4.3.1).
const CLIENT_CONDITIONS: [HeaderName; 4] = [
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_RANGE,
    header::RANGE,
];

/// The client's fields that go on to a backend, copied in one pass with
/// room for what is added: not the hop-by-hop ones (RFC 9110 section
/// 7.6.1, with those its `Connection` names), not those written here, and
/// for a cache fill (`fill`) not its conditionals and range. Also the
/// `X-Forwarded-For` earlier proxies wrote, if it is not hop-by-hop here.
fn forwarded_fields(client: &HeaderMap, fill: bool) -> (HeaderMap, Option<HeaderValue>) {
    let named = connection_options(client);
    let mut headers = HeaderMap::with_capacity(client.len() + WRITTEN_HERE.len() + 2);
    for (name, value) in client {
        let dropped = is_hop_by_hop(name)
            || WRITTEN_HERE.contains(name)
            || (fill && CLIENT_CONDITIONS.contains(name))
            || named.contains(name);
        if !dropped {
            headers.append(name.clone(), value.clone());
        }
    }
    let proxies = client
        .get(X_FORWARDED_FOR)
        .filter(|_| !named.contains(&X_FORWARDED_FOR))
        .cloned();
    (headers, proxies)
}

/// `X-Forwarded-For` with the client's address appended to what earlier
/// proxies wrote. An IPv4 address is written by hand: the formatter costs
/// over a thousand instructions, on every forwarded request.
fn forwarded_for(previous: Option<&HeaderValue>, client: IpAddr) -> Option<HeaderValue> {
    let mut value = Vec::with_capacity(previous.map_or(0, |p| p.len() + 2) + 15);
    if let Some(previous) = previous {
        value.extend_from_slice(previous.as_bytes());
        value.extend_from_slice(b", ");
    }
    match client {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    value.push(b'.');
                }
                if octet >= 100 {
                    value.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    value.push(b'0' + octet / 10 % 10);
                }
                value.push(b'0' + octet % 10);
            }
        }
        IpAddr::V6(v6) => value.extend_from_slice(v6.to_string().as_bytes()),
    }
    HeaderValue::from_maybe_shared(bytes::Bytes::from(value)).ok()
}

/// The fields of a cache fill's request: the client's own conditions and
/// ranges are answered from the cache, so they go; a slice's range and the
/// stale copy's validators come. Returns whether it revalidates.
fn for_lookup(
    headers: &mut HeaderMap,
    validators: &Option<Validators>,
    range: Option<(u64, u64)>,
) -> bool {
    if let Some((first, last)) = range {
        headers.insert(
            header::RANGE,
            respond::value(&format!("bytes={first}-{last}")),
        );
    }
    let mut revalidating = false;
    if let Some(v) = validators {
        if let Some(etag) = &v.etag {
            headers.insert(header::IF_NONE_MATCH, etag.clone());
            revalidating = true;
        }
        if let Some(modified) = &v.last_modified {
            headers.insert(header::IF_MODIFIED_SINCE, modified.clone());
            revalidating = true;
        }
    }
    revalidating
}

/// Applies a policy's header edits; invalid names or values are skipped.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_address_is_appended_to_x_forwarded_for() {
        let v4 = |ip: &str| forwarded_for(None, ip.parse().unwrap()).unwrap();
        assert_eq!(v4("127.0.0.1"), "127.0.0.1");
        assert_eq!(v4("10.200.99.255"), "10.200.99.255");
        assert_eq!(v4("0.0.0.0"), "0.0.0.0");
        let previous = HeaderValue::from_static("203.0.113.7");
        let chained = forwarded_for(Some(&previous), "::1".parse().unwrap()).unwrap();
        assert_eq!(chained, "203.0.113.7, ::1");
    }

    #[test]
    fn hop_by_hop_fields_and_those_the_node_writes_are_not_forwarded() {
        let mut client = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            ("x-forwarded-for", "203.0.113.7"),
            ("if-none-match", "\"a\""),
            ("accept", "text/html"),
            ("via", "1.1 upstream"),
        ] {
            client.append(name, HeaderValue::from_static(value));
        }
        let (pass, proxies) = forwarded_fields(&client, false);
        let names: Vec<&str> = pass.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["if-none-match", "accept", "via"]);
        assert_eq!(proxies.unwrap(), "203.0.113.7");
        let (fill, _) = forwarded_fields(&client, true);
        let names: Vec<&str> = fill.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["accept", "via"]);
        // A previous hop's X-Forwarded-For named by Connection ends here.
        client.insert("connection", HeaderValue::from_static("x-forwarded-for"));
        assert!(forwarded_fields(&client, false).1.is_none());
    }
}
