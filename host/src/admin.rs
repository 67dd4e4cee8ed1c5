//! The admin API: a separate listener, every request authenticated with a
//! bearer token.
//!
//! | method and path | what |
//! |---|---|
//! | `GET /metrics` | Prometheus counters |
//! | `GET /tenants` | tenants and their active versions |
//! | `GET /tenants/{id}` | active version, deployed versions, history, limits |
//! | `PUT /tenants/{id}/modules` | deploy a component (body); `?activate=true` activates it |
//! | `POST /tenants/{id}/activate` | `{"version": "sha256:..."}` |
//! | `POST /tenants/{id}/rollback` | back to the previously active version |
//! | `POST /tenants/{id}/purge` | `{"url"}`, `{"key"}`, `{"tag"}` (each with `"soft": true` to mark stale), or `{"all": true}` |
//! | `POST /tenants/{id}/canary` | `{"version", "percent", "sticky_header"?, "auto_rollback"?: {"margin", "min_requests"}}` |
//! | `POST /tenants/{id}/canary/promote`, `.../canary/abort` | end a canary |
//! | `POST /tenants/{id}/preview` | `{"version"}`: replay recent requests through it, report differences |
//! | `PUT /tenants/{id}` | add or replace a tenant (TOML body: the fields of a `[[tenant]]`) |
//! | `DELETE /tenants/{id}` | remove a tenant |

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::config::TenantConfig;
use crate::node::Node;
use crate::runtime::heads::RequestInfo;
use crate::runtime::{GuestContext, GuestSession, PolicyModule};
use crate::tenant::{AutoRollback, Canary, Sticky, Tenant};

/// Largest component accepted by `PUT /tenants/{id}/modules`.
const MAX_MODULE_BYTES: usize = 64 * 1024 * 1024;

/// Serves the admin API until the process ends.
pub async fn serve(listener: TcpListener, node: Arc<Node>, token: Arc<str>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors and the like: back off, go on.
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        let node = node.clone();
        let token = token.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let node = node.clone();
                let token = token.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&node, &token, req).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
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

async fn handle(node: &Arc<Node>, token: &str, req: Request<Incoming>) -> AdminResponse {
    if !authorized(&req, token) {
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
    let path: Vec<String> = req
        .uri()
        .path()
        .trim_matches('/')
        .split('/')
        .map(str::to_owned)
        .collect();
    let segments: Vec<&str> = path.iter().map(String::as_str).collect();
    let method = req.method().clone();
    match (method, segments.as_slice()) {
        (Method::GET, ["metrics"]) => {
            let mut r = Response::new(Full::new(Bytes::from(node.metrics.render())));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        (Method::GET, ["tenants"]) => {
            let tenants: Vec<Value> = node
                .tenants
                .load()
                .tenants()
                .map(|t| json!({ "id": &*t.id, "active": &*t.policy.load().version }))
                .collect();
            reply(StatusCode::OK, json!({ "tenants": tenants }))
        }
        (Method::PUT, ["tenants", id]) => put_tenant(node, id, req).await,
        (Method::DELETE, ["tenants", id]) => delete_tenant(node, id).await,
        (method, ["tenants", id, rest @ ..]) => {
            let Some(tenant) = node.tenants.load().get(id).cloned() else {
                return error(StatusCode::NOT_FOUND, format!("no tenant {id:?}"));
            };
            match (method, rest) {
                (Method::GET, []) => reply(StatusCode::OK, describe(node, &tenant)),
                (Method::PUT, ["modules"]) => {
                    let activate = req
                        .uri()
                        .query()
                        .is_some_and(|q| q.split('&').any(|p| p == "activate=true"));
                    deploy(node, &tenant, req, activate).await
                }
                (Method::POST, ["activate"]) => match body_json::<VersionBody>(req).await {
                    Err(r) => r,
                    Ok(b) => match tenant.activate(&b.version) {
                        Ok(()) => {
                            tracing::info!(tenant = &*tenant.id, version = b.version, "activated");
                            reply(StatusCode::OK, json!({ "active": b.version }))
                        }
                        Err(m) => error(StatusCode::CONFLICT, m),
                    },
                },
                (Method::POST, ["rollback"]) => match tenant.rollback() {
                    Ok(version) => {
                        tracing::info!(tenant = &*tenant.id, version = &*version, "rolled back");
                        reply(StatusCode::OK, json!({ "active": &*version }))
                    }
                    Err(m) => error(StatusCode::CONFLICT, m),
                },
                (Method::POST, ["purge"]) => match body_json::<PurgeBody>(req).await {
                    Err(r) => r,
                    Ok(b) => purge(node, &tenant, b).await,
                },
                (Method::POST, ["canary"]) => match body_json::<CanaryBody>(req).await {
                    Err(r) => r,
                    Ok(b) => start_canary(&tenant, b),
                },
                (Method::POST, ["canary", "promote"]) => match tenant.canary.swap(None) {
                    None => error(StatusCode::CONFLICT, "no canary is running"),
                    Some(c) => match tenant.activate(&c.module.version) {
                        Ok(()) => {
                            tracing::info!(
                                tenant = &*tenant.id,
                                version = &*c.module.version,
                                "canary promoted"
                            );
                            reply(StatusCode::OK, json!({ "active": &*c.module.version }))
                        }
                        Err(m) => error(StatusCode::CONFLICT, m),
                    },
                },
                (Method::POST, ["canary", "abort"]) => match tenant.canary.swap(None) {
                    None => error(StatusCode::CONFLICT, "no canary is running"),
                    Some(c) => {
                        tracing::info!(
                            tenant = &*tenant.id,
                            version = &*c.module.version,
                            "canary aborted"
                        );
                        reply(StatusCode::OK, json!({ "aborted": &*c.module.version }))
                    }
                },
                (Method::POST, ["preview"]) => match body_json::<VersionBody>(req).await {
                    Err(r) => r,
                    Ok(b) => match crate::preview::run(node, &tenant, &b.version).await {
                        Ok(report) => reply(StatusCode::OK, report),
                        Err(m) => error(StatusCode::CONFLICT, m),
                    },
                },
                _ => error(StatusCode::NOT_FOUND, "no such admin endpoint"),
            }
        }
        _ => error(StatusCode::NOT_FOUND, "no such admin endpoint"),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionBody {
    version: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CanaryBody {
    version: String,
    percent: u32,
    /// Stick clients to a side by this header instead of their address.
    sticky_header: Option<String>,
    auto_rollback: Option<AutoRollbackBody>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AutoRollbackBody {
    /// Allowed excess of the candidate's failure rate, e.g. 0.05.
    margin: f64,
    /// Candidate requests before the rule applies.
    #[serde(default = "default_min_requests")]
    min_requests: u64,
}

fn default_min_requests() -> u64 {
    20
}

fn start_canary(tenant: &Tenant, body: CanaryBody) -> AdminResponse {
    if body.percent > 100 {
        return error(StatusCode::BAD_REQUEST, "percent must be between 0 and 100");
    }
    let Some(module) = tenant
        .deployments
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .find(&body.version)
    else {
        return error(
            StatusCode::CONFLICT,
            format!("version {} is not deployed", body.version),
        );
    };
    let sticky = match body.sticky_header {
        None => Sticky::ClientAddr,
        Some(h) => match http::HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()) {
            Ok(name) => Sticky::Header(name),
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("invalid header name {h:?}"),
                )
            }
        },
    };
    let auto = body.auto_rollback.map(|a| AutoRollback {
        margin: a.margin,
        min_requests: a.min_requests,
    });
    tenant.canary.store(Some(Arc::new(Canary::new(
        module,
        body.percent,
        sticky,
        auto,
    ))));
    tracing::info!(
        tenant = &*tenant.id,
        version = body.version,
        percent = body.percent,
        "canary started"
    );
    reply(
        StatusCode::OK,
        json!({ "canary": body.version, "percent": body.percent }),
    )
}

/// Adds or replaces a tenant from a TOML body with the fields of a
/// `[[tenant]]` table (`id` may be left out).
async fn put_tenant(node: &Node, id: &str, req: Request<Incoming>) -> AdminResponse {
    let bytes = match body_bytes(req, 1024 * 1024).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let text = String::from_utf8_lossy(&bytes);
    let mut table: toml::Table = match toml::from_str(&text) {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid TOML: {e}")),
    };
    match table.get("id").and_then(|v| v.as_str()) {
        Some(body_id) if body_id != id => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("field `id`: {body_id:?} does not match the URL's {id:?}"),
            )
        }
        _ => {
            table.insert("id".into(), toml::Value::String(id.into()));
        }
    }
    let tenant: TenantConfig = match TenantConfig::deserialize(toml::Value::Table(table)) {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid tenant: {e}")),
    };
    let mut config = node
        .config
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let existed = config.tenants.iter().any(|t| t.id == id);
    config.tenants.retain(|t| t.id != id);
    config.tenants.push(tenant);
    if let Err((field, message)) = config.validate() {
        return error(
            StatusCode::BAD_REQUEST,
            format!("field `{field}`: {message}"),
        );
    }
    match node.reload(config).await {
        Ok(()) => {
            tracing::info!(
                tenant = id,
                "tenant {}",
                if existed { "replaced" } else { "added" }
            );
            reply(
                if existed {
                    StatusCode::OK
                } else {
                    StatusCode::CREATED
                },
                json!({ "tenant": id }),
            )
        }
        Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

async fn delete_tenant(node: &Node, id: &str) -> AdminResponse {
    let mut config = node
        .config
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let before = config.tenants.len();
    config.tenants.retain(|t| t.id != id);
    if config.tenants.len() == before {
        return error(StatusCode::NOT_FOUND, format!("no tenant {id:?}"));
    }
    match node.reload(config).await {
        Ok(()) => {
            tracing::info!(tenant = id, "tenant removed");
            reply(StatusCode::OK, json!({ "removed": id }))
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeBody {
    /// One cache key (all its variants).
    key: Option<String>,
    /// One URL: its key is what the tenant's policy gives a GET of it.
    url: Option<String>,
    /// Every key carrying this surrogate key / cache tag.
    tag: Option<String>,
    /// Everything of the tenant.
    #[serde(default)]
    all: bool,
    /// Mark stale instead of removing (`key` and `tag` only): the object is
    /// revalidated before reuse but can still be served stale.
    #[serde(default)]
    soft: bool,
}

/// Carries out a purge before answering, so it has taken effect when the
/// caller gets the response.
async fn purge(node: &Node, tenant: &Arc<Tenant>, mut body: PurgeBody) -> AdminResponse {
    let store = &tenant.store;
    if let Some(url) = body.url.take() {
        if body.key.is_some() {
            return error(StatusCode::BAD_REQUEST, "give `url` or `key`, not both");
        }
        let Ok(uri) = url.parse::<http::Uri>() else {
            return error(StatusCode::BAD_REQUEST, format!("invalid url {url:?}"));
        };
        let authority = match uri.authority() {
            Some(a) => a.to_string(),
            None => tenant.config.hosts.first().cloned().unwrap_or_default(),
        };
        let target = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let client = IpAddr::from([127, 0, 0, 1]);
        match crate::proxy::invalidate::key_for(
            node,
            tenant,
            &authority,
            target,
            &http::HeaderMap::new(),
            client,
        )
        .await
        {
            Some(key) => body.key = Some(key),
            None => {
                return error(
                    StatusCode::CONFLICT,
                    format!("the policy does not cache {url}"),
                )
            }
        }
    }
    match body {
        PurgeBody { all: true, key: None, tag: None, soft: false, .. } => {
            tenant.purge_all();
            reply(StatusCode::OK, json!({ "purged": "all" }))
        }
        PurgeBody { key: Some(key), tag: None, all: false, soft, .. } => {
            let found = if soft { store.expire(&key) } else { store.remove(&key) };
            reply(StatusCode::OK, json!({ "purged": key, "found": found, "soft": soft }))
        }
        PurgeBody { tag: Some(tag), key: None, all: false, soft, .. } => {
            let keys = store.purge_tag(&tag, soft);
            reply(StatusCode::OK, json!({ "purged_tag": tag, "keys": keys, "soft": soft }))
        }
        _ => error(
            StatusCode::BAD_REQUEST,
            "give one of {\"key\": \"...\"}, {\"tag\": \"...\"} (each with optional \"soft\": true) or {\"all\": true}",
        ),
    }
}

async fn body_bytes(req: Request<Incoming>, limit: usize) -> Result<Bytes, AdminResponse> {
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("cannot read the body: {e}"),
        )),
    }
}

async fn body_json<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
) -> Result<T, AdminResponse> {
    let bytes = body_bytes(req, 64 * 1024).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

fn describe(node: &Node, tenant: &Tenant) -> Value {
    let d = tenant.deployments.lock().unwrap_or_else(|p| p.into_inner());
    let versions: Vec<&str> = d.versions.iter().map(|m| &*m.version).collect();
    let history: Vec<&str> = d.history.iter().map(|v| &**v).collect();
    let failures: serde_json::Map<String, Value> = [
        "trap",
        "cpu_limit",
        "memory_limit",
        "host_call_limit",
        "concurrency_limit",
        "unavailable",
    ]
    .iter()
    .map(|k| {
        (
            k.to_string(),
            json!(node.metrics.get("guest_failures", &tenant.id, k)),
        )
    })
    .collect();
    let canary = tenant.canary.load().as_ref().map(|c| {
        let ((an, af), (cn, cf)) = c.stats();
        json!({
            "version": &*c.module.version,
            "percent": c.percent,
            "active": { "requests": an, "failures": af },
            "candidate": { "requests": cn, "failures": cf },
        })
    });
    json!({
        "id": &*tenant.id,
        "active": &*tenant.policy.load().version,
        "canary": canary,
        "versions": versions,
        "history": history,
        "limits": {
            "memory_mb": tenant.limits.memory_mb,
            "cpu_ms": tenant.limits.cpu_ms,
            "max_host_calls": tenant.limits.max_host_calls,
            "max_subrequests": tenant.limits.max_subrequests,
        },
        "backends": tenant.backends.keys().collect::<Vec<_>>(),
        "guest_failures": failures,
    })
}

/// Validates a component (a component, fits the world, compiles,
/// instantiates under the tenant's limits, survives a smoke call) and adds
/// it to the tenant's versions. The active version is untouched unless
/// `activate` is set.
async fn deploy(
    node: &Arc<Node>,
    tenant: &Arc<Tenant>,
    req: Request<Incoming>,
    activate: bool,
) -> AdminResponse {
    let wasm = match body_bytes(req, MAX_MODULE_BYTES).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if wasm.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "empty body: send the component's bytes",
        );
    }
    if !wasm.starts_with(b"\0asm") {
        return error(
            StatusCode::BAD_REQUEST,
            "not a WebAssembly binary (no \\0asm header)",
        );
    }
    let runtime = node.runtime.clone();
    let loaded = tokio::task::spawn_blocking(move || runtime.load(&wasm)).await;
    let module = match loaded {
        Ok(Ok(m)) => m,
        Ok(Err(m)) => return error(StatusCode::BAD_REQUEST, m),
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("compilation failed: {e}"),
            )
        }
    };
    if let Err(m) = smoke_call(node, tenant, &module).await {
        return error(StatusCode::BAD_REQUEST, m);
    }
    let version = module.version.clone();
    tenant.deploy(module);
    tracing::info!(tenant = &*tenant.id, version = &*version, "deployed");
    if activate {
        if let Err(m) = tenant.activate(&version) {
            return error(StatusCode::CONFLICT, m);
        }
    }
    reply(
        StatusCode::CREATED,
        json!({ "version": &*version, "active": activate }),
    )
}

/// Runs the request hook once on `GET /` for the tenant, offline.
pub(crate) async fn smoke_call(
    node: &Node,
    tenant: &Arc<Tenant>,
    module: &PolicyModule,
) -> Result<(), String> {
    let info = Arc::new(RequestInfo {
        method: Method::GET,
        uri: http::Uri::from_static("/"),
        headers: http::HeaderMap::new(),
        scheme: "http",
        authority: "smoke-test.invalid".into(),
        client_ip: IpAddr::from([127, 0, 0, 1]),
    });
    let ctx = GuestContext {
        tenant: tenant.clone(),
        version: module.version.clone(),
        offline: true,
    };
    let mut session = GuestSession::start(&node.runtime, module, ctx, info)
        .await
        .map_err(|f| format!("cannot instantiate under the tenant's limits: {f}"))?;
    session
        .on_request()
        .await
        .map_err(|f| format!("trap in smoke call (GET /): {f}"))?;
    Ok(())
}
