//! The admin API: a separate listener, every request authenticated with a
//! bearer token.
//!
//! | method and path | what |
//! |---|---|
//! | `GET /` | the status page (HTML; asks for the token, no data inside) |
//! | `GET /status` | tenants, rates' counters, hit ratio, latency, backends (JSON) |
//! | `GET /ready` | 200 once the node serves its desired state (in a fleet: after its first full read of etcd), else 503 |
//! | `GET /metrics` | every metric family, OpenMetrics text |
//! | `GET /debug/pprof/profile?seconds=N` | a CPU profile (pprof protobuf; `&format=flamegraph`: SVG) |
//! | `GET /tenants` | tenants and their active versions |
//! | `GET /tenants/{id}` | active version, deployed versions, history, limits |
//! | `PUT /tenants/{id}/modules` | deploy a component (body); `?activate=true` activates it |
//! | `POST /tenants/{id}/activate` | `{"version": "sha256:..."}` |
//! | `POST /tenants/{id}/rollback` | back to the previously active version |
//! | `POST /tenants/{id}/purge` | `{"url"}`, `{"key"}`, `{"tag"}` (each with `"soft": true` to mark stale), or `{"all": true}` |
//! | `POST /tenants/{id}/canary` | `{"version", "percent", "sticky_header"?, "auto_rollback"?: {"margin", "min_requests"}}` |
//! | `POST /tenants/{id}/canary/promote`, `.../canary/abort` | end a canary |
//! | `DELETE /tenants/{id}/quarantine` | lift the quarantine of a version (`limits.quarantine_cpu_cuts`) |
//! | `POST /tenants/{id}/preview` | `{"version"}`: replay recent requests through it, report differences |
//! | `POST /reload` | re-read the config file (tenants and certificates), as SIGHUP does |
//! | `PUT /tenants/{id}` | add or replace a tenant (TOML body: the fields of a `[[tenant]]`) |
//! | `DELETE /tenants/{id}` | remove a tenant |
//!
//! A source of desired state: every change goes through [`Control`].

mod bodies;
mod describe;
mod fleet;
mod metrics;
mod pprof;
mod status;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::control::{Control, ControlError, PurgeBody, Put};
use crate::tls::Terminator;
use bodies::{body_bytes, body_json, CanaryBody, VersionBody};

/// Largest component accepted by `PUT /tenants/{id}/modules`.
const MAX_MODULE_BYTES: usize = 64 * 1024 * 1024;

/// What the admin API serves with.
pub struct Admin {
    pub control: Arc<Control>,
    pub token: Arc<str>,
    /// The file `POST /reload` re-reads, when the node runs from one.
    pub config_path: Option<PathBuf>,
    /// Where the node stands with etcd, when it is part of a fleet.
    pub fleet: Option<Arc<crate::fleet::FleetStatus>>,
    /// The fleet's etcd, where a purge on a fleet node goes.
    pub fleet_link: Option<crate::fleet::Link>,
}

/// How long a client has for the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the admin API until the process ends, over TLS with `tls`.
pub async fn serve(listener: TcpListener, admin: Admin, tls: Option<Terminator>) {
    let admin = Arc::new(admin);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors and the like: back off, go on.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let admin = admin.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&admin, req).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = match tls {
                None => {
                    builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                }
                Some(tls) => match tls.handshake(stream, HANDSHAKE_TIMEOUT).await {
                    Some(accepted) => {
                        let io = TokioIo::new(accepted.stream);
                        builder.serve_connection(io, service).await
                    }
                    None => Ok(()),
                },
            };
        });
    }
}

type AdminResponse = Response<Full<Bytes>>;

fn reply(status: StatusCode, body: Value) -> AdminResponse {
    let mut r = Response::new(Full::new(Bytes::from(format!("{body:#}\n"))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, message: impl Into<String>) -> AdminResponse {
    reply(status, json!({ "error": message.into() }))
}

/// `GET /`: the status page, locked down (its own script and styles
/// only, talking to this listener only, never framed, never cached).
fn status_page() -> AdminResponse {
    let mut r = Response::new(Full::new(Bytes::from_static(status::PAGE.as_bytes())));
    let headers = r.headers_mut();
    let set = |h: &mut http::HeaderMap, name, value| {
        h.insert(name, header::HeaderValue::from_static(value));
    };
    set(headers, header::CONTENT_TYPE, "text/html; charset=utf-8");
    set(
        headers,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
         connect-src 'self'; form-action 'none'; frame-ancestors 'none'",
    );
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::REFERRER_POLICY, "no-referrer");
    set(headers, header::CACHE_CONTROL, "no-store");
    r
}

/// Compares the bearer token in constant time.
fn authorized(req: &Request<Incoming>, token: &str) -> bool {
    let Some(given) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (a, b) = (given.trim().as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The status a control-plane error is answered with.
fn failed(e: ControlError) -> AdminResponse {
    let status = match &e {
        ControlError::UnknownTenant(_) => StatusCode::NOT_FOUND,
        ControlError::Config(_) | ControlError::Deploy(_) | ControlError::Invalid(_) => {
            StatusCode::BAD_REQUEST
        }
        ControlError::Version(_) | ControlError::NoCanary | ControlError::NotCached(_) => {
            StatusCode::CONFLICT
        }
        ControlError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, e.to_string())
}

/// `Ok` as a 200 with `body`, `Err` as [`failed`].
fn answer<T>(result: Result<T, ControlError>, body: impl FnOnce(T) -> Value) -> AdminResponse {
    match result {
        Ok(value) => reply(StatusCode::OK, body(value)),
        Err(e) => failed(e),
    }
}

async fn handle(admin: &Admin, req: Request<Incoming>) -> AdminResponse {
    let control = &admin.control;
    // The status page holds no data: it asks for the token itself.
    if req.method() == Method::GET && req.uri().path() == "/" {
        return status_page();
    }
    if !authorized(&req, &admin.token) {
        // Read (and drop) a modest body first, so a client still sending
        // gets the 401 instead of a reset; larger bodies are not read.
        let _ = Limited::new(req.into_body(), 1024 * 1024).collect().await;
        let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return r;
    }
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = req.method().clone();
    match (method, segments.as_slice()) {
        (Method::GET, ["debug", "pprof", "profile"]) => pprof::profile(req.uri().query()).await,
        (Method::GET, ["status"]) => reply(
            StatusCode::OK,
            status::status(control, admin.fleet.as_deref()),
        ),
        (Method::GET, ["ready"]) => fleet::ready(admin.fleet.as_deref()),
        (Method::GET, ["metrics"]) => {
            let text = metrics::render(control, admin.fleet.clone());
            let mut r = Response::new(Full::new(Bytes::from(text)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(metrics::CONTENT_TYPE),
            );
            r
        }
        (Method::GET, ["tenants"]) => {
            let tenants: Vec<Value> = control
                .context()
                .tenants
                .load()
                .tenants()
                .map(|t| json!({ "id": &*t.id, "active": &*t.policy.load().version }))
                .collect();
            reply(StatusCode::OK, json!({ "tenants": tenants }))
        }
        (Method::POST, ["reload"]) => match &admin.config_path {
            None => error(
                StatusCode::CONFLICT,
                "the node does not run from a config file; nothing to reload",
            ),
            Some(path) => answer(
                control.reload_file(path).await,
                |()| json!({ "reloaded": path.display().to_string() }),
            ),
        },
        (Method::PUT, ["tenants", id]) => put_tenant(control, id, req).await,
        (Method::DELETE, ["tenants", id]) => answer(control.delete_tenant(id).await, |()| {
            tracing::info!(tenant = id, "tenant removed");
            json!({ "removed": id })
        }),
        (Method::POST, ["tenants", id, "purge"]) if admin.fleet_link.is_some() => {
            match control.tenant(id) {
                Err(e) => failed(e),
                Ok(_) => match body_json::<PurgeBody>(req).await {
                    Err(r) => r,
                    Ok(b) => fleet::purge(admin.fleet_link.as_ref(), id, b).await,
                },
            }
        }
        (method, ["tenants", id, rest @ ..]) => match control.tenant(id) {
            Err(e) => failed(e),
            Ok(_) => tenant_endpoint(control, id, method, rest, req).await,
        },
        _ => error(StatusCode::NOT_FOUND, "no such admin endpoint"),
    }
}

/// `/tenants/{id}/...` of an existing tenant.
async fn tenant_endpoint(
    control: &Control,
    id: &str,
    method: Method,
    rest: &[&str],
    req: Request<Incoming>,
) -> AdminResponse {
    let active = |version: Arc<str>| json!({ "active": &*version });
    match (method, rest) {
        (Method::GET, []) => match control.tenant(id) {
            Ok(tenant) => reply(StatusCode::OK, describe::tenant(&tenant)),
            Err(e) => failed(e),
        },
        (Method::PUT, ["modules"]) => deploy(control, id, req).await,
        (Method::POST, ["activate"]) => match body_json::<VersionBody>(req).await {
            Err(r) => r,
            Ok(b) => answer(
                control.activate(id, &b.version).await,
                |()| json!({ "active": b.version }),
            ),
        },
        (Method::POST, ["rollback"]) => answer(control.rollback(id).await, active),
        (Method::POST, ["purge"]) => match body_json::<PurgeBody>(req).await {
            Err(r) => r,
            Ok(b) => match b.into_purge() {
                Err(message) => error(StatusCode::BAD_REQUEST, message),
                Ok(purge) => answer(control.purge(id, purge).await, bodies::purged_json),
            },
        },
        (Method::POST, ["canary"]) => match body_json::<CanaryBody>(req).await {
            Err(r) => r,
            Ok(b) => match b.into_request() {
                Err(message) => error(StatusCode::BAD_REQUEST, message),
                Ok(canary) => {
                    let shown = json!({ "canary": canary.version, "percent": canary.percent });
                    answer(control.start_canary(id, canary).await, |()| shown)
                }
            },
        },
        (Method::POST, ["canary", "promote"]) => answer(control.promote_canary(id).await, active),
        (Method::POST, ["canary", "abort"]) => answer(
            control.abort_canary(id).await,
            |v| json!({ "aborted": &*v }),
        ),
        (Method::DELETE, ["quarantine"]) => answer(
            control.lift_quarantine(id).await,
            |held| json!({ "lifted": held.map(|h| h.version) }),
        ),
        (Method::POST, ["preview"]) => match body_json::<VersionBody>(req).await {
            Err(r) => r,
            Ok(b) => answer(control.preview(id, &b.version).await, |report| {
                serde_json::to_value(report).unwrap_or_default()
            }),
        },
        _ => error(StatusCode::NOT_FOUND, "no such admin endpoint"),
    }
}

/// `PUT /tenants/{id}/modules[?activate=true]`: the body is the component.
async fn deploy(control: &Control, id: &str, req: Request<Incoming>) -> AdminResponse {
    let activate = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "activate=true"));
    let wasm = match body_bytes(req, MAX_MODULE_BYTES).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    match control.deploy(id, wasm, activate).await {
        Ok(deployed) => reply(
            StatusCode::CREATED,
            json!({
                "version": &*deployed.version,
                "active": activate,
                "warnings": deployed.warnings,
            }),
        ),
        Err(e) => failed(e),
    }
}

/// `PUT /tenants/{id}`: adds or replaces a tenant from a TOML body with the
/// fields of a `[[tenant]]` table (`id` may be left out).
async fn put_tenant(control: &Control, id: &str, req: Request<Incoming>) -> AdminResponse {
    let source_name = format!("PUT /tenants/{id}");
    let bytes = match body_bytes(req, 1024 * 1024).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return error(StatusCode::BAD_REQUEST, "the body is not UTF-8 TOML");
    };
    let mut tenant = match crate::config::TenantConfig::from_toml(text, &source_name) {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    if tenant.id.is_empty() {
        tenant.id = id.to_string();
    } else if tenant.id != id {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "field `id`: {:?} does not match the URL's {id:?}",
                tenant.id
            ),
        );
    }
    match control.put_tenant(tenant, &source_name).await {
        Ok(put) => {
            let (status, what) = match put {
                Put::Added => (StatusCode::CREATED, "added"),
                Put::Replaced => (StatusCode::OK, "replaced"),
            };
            tracing::info!(tenant = id, "tenant {what}");
            reply(status, json!({ "tenant": id }))
        }
        Err(e) => failed(e),
    }
}
