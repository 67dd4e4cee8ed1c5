//! Outpost: a programmable CDN edge node.
//!
//! The modules are layers; data flows down, never back up (see the README's
//! "Architecture"):
//!
//! - leaves: [`alloc`] (the allocator), [`config`] (typed schema and loader), [`http`] (request head,
//!   body type, header rules), [`metrics`], [`guests`] (built-in policies), [`lane`] (which
//!   serving thread this is);
//! - engines: [`runtime`] (wasmtime, bindings, limits, memo), [`origin`]
//!   (backends and their errors), [`cache`] (storage and RFC 9111 rules),
//!   [`tls`] (rustls settings, certificates from files, handshakes),
//!   [`span_export`] (OTLP spans of requests), [`pop`] (the members of a
//!   POP and which of them owns a cache key), [`secrets`] (a tenant's
//!   secrets read on each node), [`signed_url`] (tokens checked and made),
//!   [`ratelimit`] and [`counters`] (what policies count, on this node);
//! - [`tenant`]: a tenant's policy, backends, store and canary, and the
//!   guest environment it gives its instances;
//! - data plane: [`proxy`] (the request path) and [`server`] (listeners);
//! - control plane: [`control`] (desired state, validate and apply) with
//!   its sources, the config file and [`admin`];
//! - entry: [`cli`].

pub(crate) mod access_log;
pub(crate) mod admin;
pub mod alloc;
pub(crate) mod cache;
pub mod cli;
pub mod config;
pub(crate) mod control;
pub(crate) mod counters;
pub(crate) mod demo_origin;
pub(crate) mod fleet;
pub mod guests;
pub mod http;
pub(crate) mod lane;
pub(crate) mod metrics;
pub(crate) mod origin;
pub(crate) mod pop;
pub(crate) mod proxy;
pub(crate) mod ratelimit;
pub mod runtime;
pub(crate) mod secrets;
pub(crate) mod server;
pub(crate) mod signed_url;
pub(crate) mod span_export;
pub mod tenant;
pub(crate) mod tls;
