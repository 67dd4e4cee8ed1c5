//! State 1, received: what is checked of a request head before its
//! tenant's policy runs. Each refusal is the status the RFCs give, sent
//! before anything reaches a guest or an origin.

use std::sync::Arc;

use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::{respond, Context};
use crate::http::{headers, Connection, ProxyBody};
use crate::tenant::Tenant;

/// Why a request is refused before its tenant's policy runs.
#[derive(Debug)]
pub(super) enum Refusal {
    /// RFC 9110 section 9.3.6: a reverse proxy does not open tunnels.
    Connect,
    /// RFC 9112 section 6.1: the only coding this node decodes is chunked;
    /// forwarding the body without the others would corrupt it.
    TransferCoding,
    /// RFC 9112 section 3, RFC 9110 section 15.5.15.
    TargetTooLong,
    /// RFC 6585 section 5: the head is over `server.max_header_bytes`.
    HeadTooLarge,
    /// No usable Host (RFC 9112 section 3.2): why.
    Authority(&'static str),
    UnknownHost,
    /// RFC 9110 section 15.5.20: the connection was made with a
    /// certificate that is not the one of the tenant the request names,
    /// so the node is not authoritative for it here. HTTP/2 clients reuse
    /// a connection for every name its certificate covers (RFC 9113
    /// section 9.1.1); this keeps such reuse from reaching another tenant
    /// and tells the client to connect again for that host.
    Misdirected {
        host: String,
    },
    /// `force_https`: RFC 9110 section 15.4.9, the same URL on the TLS
    /// listener, method and body kept.
    ToHttps {
        location: String,
    },
    /// Content-Length over the tenant's `max_body_mb`.
    BodyTooLarge,
    /// RFC 8586 section 3: `CDN-Loop` already names this node, so the
    /// request came round (a parent that is its own child, a backend that
    /// points back); answered 508 (RFC 5842 section 7.2) instead of
    /// forwarded again.
    Loop {
        node: String,
    },
}

/// The tenant a request goes to and its authority, or why it is refused.
/// `https`: the client's request came over TLS (here, or to the POP member
/// that forwarded it).
pub(super) fn admit(
    ctx: &Context,
    request: &Request<Incoming>,
    connection: &Connection,
    https: bool,
) -> Result<(Arc<Tenant>, String), Refusal> {
    if request.method() == Method::CONNECT {
        return Err(Refusal::Connect);
    }
    if unknown_transfer_coding(request.headers()) {
        return Err(Refusal::TransferCoding);
    }
    let target = target_len(request.uri());
    if target > ctx.max_target_bytes {
        return Err(Refusal::TargetTooLong);
    }
    if target + fields_len(request.headers()) > ctx.max_header_bytes {
        return Err(Refusal::HeadTooLarge);
    }
    if names_node(request.headers(), &ctx.node_id) {
        return Err(Refusal::Loop {
            node: ctx.node_id.clone(),
        });
    }
    let authority = authority_of(request.uri(), request.headers()).map_err(Refusal::Authority)?;
    let table = ctx.tenants.load();
    let host = headers::host_of(&authority);
    let tenant = table.find(host).ok_or(Refusal::UnknownHost)?;
    match &connection.tls {
        Some(session) if table.certificate_owner(tenant) != session.certificate => {
            return Err(Refusal::Misdirected {
                host: host.to_string(),
            });
        }
        None if tenant.config.force_https && !https => {
            return Err(Refusal::ToHttps {
                location: https_url(ctx, host, request.uri()),
            });
        }
        _ => {}
    }
    if declared_length(request.headers()).is_some_and(|len| len > tenant.max_body_bytes()) {
        // The tenant's limit, counted as the one a streamed body hits.
        tenant
            .metrics
            .event(crate::metrics::Event::Limit, "request_body_bytes");
        return Err(Refusal::BodyTooLarge);
    }
    Ok((tenant.clone(), authority))
}

impl Refusal {
    /// A short stable name for metrics.
    pub(super) fn as_str(&self) -> &'static str {
        match self {
            Refusal::Connect => "connect",
            Refusal::TransferCoding => "transfer_coding",
            Refusal::TargetTooLong => "target_too_long",
            Refusal::HeadTooLarge => "head_too_large",
            Refusal::Authority(_) => "bad_authority",
            Refusal::UnknownHost => "unknown_host",
            Refusal::Misdirected { .. } => "misdirected",
            Refusal::ToHttps { .. } => "to_https",
            Refusal::BodyTooLarge => "body_too_large",
            Refusal::Loop { .. } => "loop",
        }
    }

    /// The response that tells the client.
    pub(super) fn response(self) -> Response<ProxyBody> {
        match self {
            Refusal::Connect => {
                let mut r =
                    respond::plain(StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not supported\n");
                r.headers_mut().insert(
                    http::header::ALLOW,
                    HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS"),
                );
                r
            }
            Refusal::TransferCoding => {
                respond::plain(StatusCode::NOT_IMPLEMENTED, "unsupported transfer coding\n")
            }
            Refusal::TargetTooLong => {
                respond::plain(StatusCode::URI_TOO_LONG, "request target too long\n")
            }
            Refusal::HeadTooLarge => respond::plain(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request header fields too large\n",
            ),
            Refusal::Authority(why) => respond::plain(StatusCode::BAD_REQUEST, why),
            Refusal::UnknownHost => respond::plain(StatusCode::NOT_FOUND, "unknown host\n"),
            Refusal::Misdirected { host } => respond::plain(
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "this connection's certificate is not the one for {host}; \
                     connect again for that host\n"
                ),
            ),
            Refusal::ToHttps { location } => {
                let mut r = respond::plain(StatusCode::PERMANENT_REDIRECT, format!("{location}\n"));
                if let Ok(v) = HeaderValue::from_str(&location) {
                    r.headers_mut().insert(http::header::LOCATION, v);
                }
                r
            }
            Refusal::BodyTooLarge => respond::body_too_large(),
            Refusal::Loop { node } => respond::plain(
                StatusCode::LOOP_DETECTED,
                format!(
                    "loop detected: the request already went through this node ({node}), \
                     its CDN-Loop says; not forwarded again\n"
                ),
            ),
        }
    }
}

/// Whether a `CDN-Loop` element names `node` (RFC 8586 section 2: a list
/// of cdn-ids, each with optional parameters; compared as hosts are,
/// case-insensitively).
fn names_node(headers: &http::HeaderMap, node: &str) -> bool {
    headers
        .get_all(crate::origin::CDN_LOOP)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|element| {
            let id = element.split(';').next().unwrap_or("").trim();
            id.eq_ignore_ascii_case(node)
        })
}

/// The https URL of a request on the TLS listener's port.
fn https_url(ctx: &Context, host: &str, uri: &http::Uri) -> String {
    let port = match ctx.https_port.get() {
        Some(443) | None => String::new(),
        Some(port) => format!(":{port}"),
    };
    let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
    format!("https://{host}{port}{path}")
}

/// The body length a request's Content-Length announces (RFC 9112 section
/// 6.3; hyper has already refused an invalid one).
fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether the request names a transfer coding other than `chunked`.
fn unknown_transfer_coding(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .any(|v| {
            v.to_str().map_or(true, |v| {
                v.split(',')
                    .map(str::trim)
                    .any(|c| !c.is_empty() && !c.eq_ignore_ascii_case("chunked"))
            })
        })
}

/// The size of the header fields as sent in HTTP/1.1 (`name: value` and
/// CRLF each).
fn fields_len(headers: &http::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum()
}

/// The length of the request target as the client sent it (origin-form
/// or absolute-form), without formatting it.
fn target_len(uri: &http::Uri) -> usize {
    let scheme = uri.scheme_str().map_or(0, |s| s.len() + 3);
    let authority = uri.authority().map_or(0, |a| a.as_str().len());
    let path = uri.path_and_query().map_or(1, |pq| pq.as_str().len());
    scheme + authority + path
}

/// The authority the client asked for (RFC 9112 section 3.2, RFC 9113
/// section 8.3.1): the request target's authority if it has one, else the
/// single Host header. Lowercased.
fn authority_of(uri: &http::Uri, headers: &http::HeaderMap) -> Result<String, &'static str> {
    if let Some(authority) = uri.authority() {
        return Ok(authority.as_str().to_ascii_lowercase());
    }
    let mut hosts = headers.get_all(http::header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(host), None) => match host.to_str() {
            Ok(h) if !h.is_empty() && h.parse::<http::uri::Authority>().is_ok() => {
                Ok(h.to_ascii_lowercase())
            }
            _ => Err("invalid Host header\n"),
        },
        (Some(_), Some(_)) => Err("more than one Host header\n"),
        (None, _) => Err("missing Host header\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{RequestInfo, Scheme};
    use proptest::prelude::*;
    use std::net::IpAddr;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// RFC 9112 section 3.2 and RFC 9110 section 7.2: any request
        /// target and Host a client sends give an authority or a 400, and
        /// everything the request path then derives from them (the host to
        /// look up, the target sent to origins, the copy kept for previews,
        /// a backend URI) is computed without panic.
        #[test]
        fn any_target_and_host_are_handled_without_panic(
            target in "[a-zA-Z0-9:/\\[\\]@.%?#&=*+~-]{0,48}",
            host in crate::http::arbitrary::any_value(),
            second_host in proptest::option::of(crate::http::arbitrary::any_value()),
        ) {
            let Ok(uri) = target.parse::<http::Uri>() else {
                return Ok(());
            };
            let mut headers = http::HeaderMap::new();
            headers.append(http::header::HOST, host);
            if let Some(h) = second_host {
                headers.append(http::header::HOST, h);
            }
            if let Ok(authority) = authority_of(&uri, &headers) {
                let _ = headers::host_of(&authority);
                let info = RequestInfo {
                    method: Method::GET,
                    uri,
                    headers,
                    scheme: Scheme::Http,
                    authority,
                    client_ip: IpAddr::from([127, 0, 0, 1]),
                    request_id: crate::http::RequestId::generate(),
                    trace: crate::http::TraceContext::start(),
                    from_pop_member: false,
            signature: Default::default(),
                };
                let copy = info.owned_copy();
                prop_assert_eq!(copy.path_and_query(), info.path_and_query());
                let backend = crate::config::BackendUrl::parse("http://127.0.0.1:9/p").unwrap();
                let _ = backend.uri_for(info.path_and_query());
            }
        }
    }

    #[test]
    fn hosts_are_required_once_and_valid() {
        let uri: http::Uri = "/".parse().unwrap();
        let mut headers = http::HeaderMap::new();
        assert!(authority_of(&uri, &headers).is_err());
        headers.append(http::header::HOST, "A.test:8080".parse().unwrap());
        assert_eq!(authority_of(&uri, &headers).unwrap(), "a.test:8080");
        headers.append(http::header::HOST, "b.test".parse().unwrap());
        assert!(authority_of(&uri, &headers).is_err());
        let absolute: http::Uri = "http://C.test/x".parse().unwrap();
        assert_eq!(authority_of(&absolute, &headers).unwrap(), "c.test");
    }
}
