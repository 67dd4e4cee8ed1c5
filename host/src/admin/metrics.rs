//! `GET /metrics`: every family the node exposes, read from the live tenant
//! table at scrape time (so a deleted tenant, backend or version leaves no
//! series behind), in the OpenMetrics text format. The README lists them.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;

use crate::control::Control;
use crate::fleet::FleetStatus;
use crate::metrics::{Event, Histogram, Metrics, Outcome, Process, Protocol, Scrape, CLASSES};
use crate::origin::{Backend, MemberState};
use crate::tenant::{Tenant, TenantTable};

/// OpenMetrics 1.0 text; Prometheus reads it.
pub(super) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Written = Result<(), std::fmt::Error>;

/// The label set of a family with one series.
/// The labels of a series without any.
const NONE: [(&str, &str); 0] = [];

/// One scrape's view of the node.
struct Live {
    table: Arc<TenantTable>,
    metrics: Arc<Metrics>,
    /// Access log lines dropped, when the log is on.
    log_dropped: Option<u64>,
    fleet: Option<Arc<FleetStatus>>,
    ctx: Arc<crate::proxy::Context>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Live")
    }
}

pub(super) fn render(control: &Control, fleet: Option<Arc<FleetStatus>>) -> String {
    let ctx = control.context();
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Live {
        table: ctx.tenants.load_full(),
        metrics: ctx.metrics.clone(),
        log_dropped: ctx.access_log.as_ref().map(|log| log.dropped()),
        fleet,
        ctx: ctx.clone(),
    }));
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

impl Collector for Live {
    fn encode(&self, encoder: DescriptorEncoder) -> Written {
        let mut scrape = Scrape(encoder);
        let tenants: Vec<&Arc<Tenant>> = self.table.tenants().collect();
        node(&mut scrape, &self.metrics, tenants.len())?;
        scrape.counters(
            "outpost_access_log_dropped",
            "Access log lines dropped because stdout could not keep up.",
            self.log_dropped.map(|n| (NONE, n)),
        )?;
        requests(&mut scrape, &tenants)?;
        guests(&mut scrape, &tenants)?;
        events(&mut scrape, &tenants)?;
        platform(&mut scrape, &tenants)?;
        stores(&mut scrape, &tenants)?;
        if let Some(fleet) = &self.fleet {
            super::fleet::metrics(&mut scrape, fleet, &self.ctx.pop)?;
        }
        origins(&mut scrape, &tenants)
    }
}

fn node(scrape: &mut Scrape, metrics: &Metrics, tenants: usize) -> Written {
    let node = &metrics.node;
    let info = [
        ("version", env!("CARGO_PKG_VERSION")),
        ("wit_versions", crate::runtime::SUPPORTED_WIT),
    ];
    scrape.info(
        "outpost_build",
        "The node's version and the WIT versions it runs.",
        info,
    )?;
    scrape.gauges(
        "outpost_uptime_seconds",
        "Seconds since the node started.",
        [(NONE, node.uptime_seconds())],
    )?;
    let process = Process::read();
    scrape.gauges(
        "outpost_process_resident_memory_bytes",
        "Resident memory of the process (VmRSS).",
        [(NONE, process.resident_bytes as f64)],
    )?;
    scrape.gauges(
        "outpost_process_open_fds",
        "Open file descriptors of the process.",
        [(NONE, process.open_fds as f64)],
    )?;
    scrape.gauges(
        "outpost_tenants",
        "Tenants the node serves.",
        [(NONE, tenants as f64)],
    )?;
    let open = Protocol::ALL.into_iter().flat_map(|p| {
        [false, true].map(|tls| {
            let labels = [("protocol", p.as_str()), ("tls", bool_str(tls))];
            (labels, node.open(p, tls) as f64)
        })
    });
    scrape.gauges(
        "outpost_client_connections",
        "Client connections open now, by protocol.",
        open,
    )?;
    scrape.counters(
        "outpost_client_connections_accepted",
        "Client connections accepted.",
        [(NONE, node.accepted.get())],
    )?;
    scrape.counters(
        "outpost_tls_handshakes",
        "TLS handshakes completed with clients.",
        [(NONE, node.tls_handshakes.get())],
    )?;
    scrape.counters(
        "outpost_tls_handshake_failures",
        "TLS handshakes with clients that failed or timed out.",
        [(NONE, node.tls_handshake_failures.get())],
    )?;
    scrape.counters(
        "outpost_refused_requests",
        "Requests refused before a tenant took them, by reason.",
        node.refusals()
            .into_iter()
            .map(|(r, n)| ([("reason", r)], n)),
    )
}

fn requests(scrape: &mut Scrape, tenants: &[&Arc<Tenant>]) -> Written {
    scrape.counters(
        "outpost_requests",
        "Requests answered, by tenant and status class.",
        tenants.iter().flat_map(|t| {
            let counts = t.metrics.requests();
            CLASSES
                .iter()
                .zip(counts)
                .map(move |(class, n)| ([("tenant", &*t.id), ("code", class)], n))
        }),
    )?;
    scrape.counters(
        "outpost_cache_outcomes",
        "Requests by what the cache did: hit, miss, stale, revalidated, pass, synthetic, collapsed.",
        tenants.iter().flat_map(|t| {
            let counts = t.metrics.outcomes();
            Outcome::ALL
                .iter()
                .zip(counts)
                .map(move |(o, n)| ([("tenant", &*t.id), ("outcome", o.as_str())], n))
        }),
    )?;
    scrape.counters(
        "outpost_sent_bytes",
        "Response body bytes sent to clients.",
        tenants
            .iter()
            .map(|t| ([("tenant", &*t.id)], t.metrics.bytes_sent())),
    )?;
    scrape.histograms(
        "outpost_request_duration_seconds",
        "From a request's head to its response's last byte, as the client sees it.",
        tenants
            .iter()
            .map(|t| ([("tenant", &*t.id)], t.metrics.duration())),
    )
}

fn guests(scrape: &mut Scrape, tenants: &[&Arc<Tenant>]) -> Written {
    let mut modules = Vec::new();
    for tenant in tenants {
        let deployments = tenant.deployments.lock().unwrap_or_else(|p| p.into_inner());
        for module in &deployments.versions {
            modules.push((tenant.id.clone(), module.clone()));
        }
    }
    let hooks = modules.iter().flat_map(|(tenant, module)| {
        let labels = |hook| {
            [
                ("tenant", &**tenant),
                ("version", &*module.version),
                ("hook", hook),
            ]
        };
        [
            (labels("request"), &module.request_hook_time),
            (labels("response"), &module.response_hook_time),
        ]
        .into_iter()
        // Versions kept for rollback that never ran add no series (a node
        // of many tenants keeps several versions each).
        .filter(|(_, histogram)| histogram.count() > 0)
    });
    scrape.histograms(
        "outpost_guest_duration_seconds",
        "Time in a policy hook per module version; a request hook's includes instantiation.",
        hooks,
    )?;
    scrape.counters(
        "outpost_guest_cpu_seconds",
        "CPU worker threads spent running the tenant's guests (instantiation and hooks).",
        tenants
            .iter()
            .map(|t| ([("tenant", &*t.id)], t.metrics.guest_cpu_seconds())),
    )?;
    scrape.gauges(
        "outpost_tenant_cpu_held",
        "1 while the tenant is held to its share of guest CPU (the node is contended and it used more).",
        tenants
            .iter()
            .map(|t| ([("tenant", &*t.id)], f64::from(u8::from(t.cpu.is_held())))),
    )?;
    scrape.gauges(
        "outpost_tenant_quarantined",
        "1 while a version of the tenant is quarantined after repeated CPU limit cuts.",
        tenants.iter().map(|t| {
            let held = t.quarantine.held().is_some();
            ([("tenant", &*t.id)], f64::from(u8::from(held)))
        }),
    )?;
    scrape.counters(
        "outpost_decision_memo_hits",
        "Requests whose policy decision came from the decision memo (no guest ran).",
        tenants
            .iter()
            .map(|t| ([("tenant", &*t.id)], t.metrics.memo_hits())),
    )?;
    let canaries: Vec<_> = tenants
        .iter()
        .filter_map(|t| Some((t.id.clone(), t.canary.load_full()?)))
        .collect();
    let arms = |failures: bool| {
        canaries.iter().flat_map(move |(tenant, canary)| {
            let ((an, af), (cn, cf)) = canary.stats();
            let pick = |n, f| if failures { f } else { n };
            [
                ([("tenant", &**tenant), ("arm", "active")], pick(an, af)),
                ([("tenant", &**tenant), ("arm", "candidate")], pick(cn, cf)),
            ]
        })
    };
    scrape.counters(
        "outpost_canary_requests",
        "Requests of a running canary, by arm.",
        arms(false),
    )?;
    scrape.counters(
        "outpost_canary_failures",
        "5xx answers of a running canary, by arm.",
        arms(true),
    )
}

fn events(scrape: &mut Scrape, tenants: &[&Arc<Tenant>]) -> Written {
    for event in Event::ALL {
        let (name, help) = event.family();
        let samples = tenants.iter().flat_map(|t| {
            t.metrics
                .events(event)
                .into_iter()
                .map(move |(reason, n)| ([("tenant", &*t.id), ("reason", reason)], n))
        });
        scrape.counters(name, help, samples)?;
    }
    Ok(())
}

/// What tenants' signed-URL checks and rate limiters decided.
fn platform(scrape: &mut Scrape, tenants: &[&Arc<Tenant>]) -> Written {
    use crate::metrics::SIGNATURE_VERDICTS;
    use std::sync::atomic::Ordering;
    let signatures = tenants
        .iter()
        .filter(|t| t.signed_urls.is_some())
        .flat_map(|t| {
            let counts = t.metrics.signatures();
            SIGNATURE_VERDICTS
                .iter()
                .zip(counts)
                .map(move |(v, n)| ([("tenant", &*t.id), ("verdict", v.as_str())], n))
        });
    scrape.counters(
        "outpost_signed_url_checks",
        "Requests whose signed-URL token was checked, by verdict (missing and invalid are \
         answered 403, expired 410).",
        signatures,
    )?;
    let limiters = tenants.iter().flat_map(|t| {
        t.limiters.iter().flat_map(move |(name, l)| {
            [
                ("allowed", l.allowed.load(Ordering::Relaxed)),
                ("denied", l.denied.load(Ordering::Relaxed)),
            ]
            .map(|(verdict, n)| {
                (
                    [
                        ("tenant", &*t.id),
                        ("limiter", name.as_str()),
                        ("verdict", verdict),
                    ],
                    n,
                )
            })
        })
    });
    scrape.counters(
        "outpost_rate_limit_checks",
        "rate-check calls of a tenant's limiters, by verdict.",
        limiters,
    )
}

fn stores(scrape: &mut Scrape, tenants: &[&Arc<Tenant>]) -> Written {
    let usage: Vec<_> = tenants.iter().map(|t| (&*t.id, t.store.usage())).collect();
    scrape.gauges(
        "outpost_cache_objects",
        "Keys stored in the tenant's cache.",
        usage
            .iter()
            .map(|(t, u)| ([("tenant", *t)], u.objects as f64)),
    )?;
    scrape.gauges(
        "outpost_cache_bytes",
        "Bytes the tenant's stored objects are charged, borrowed ones included.",
        usage
            .iter()
            .map(|(t, u)| ([("tenant", *t)], u.bytes as f64)),
    )?;
    scrape.gauges(
        "outpost_cache_guaranteed_bytes",
        "Bytes of the node's cache the tenant is guaranteed; it may hold more while the node has room.",
        usage.iter().map(|(t, u)| ([("tenant", *t)], u.guaranteed as f64)),
    )?;
    scrape.counters(
        "outpost_cache_evictions",
        "Keys evicted to make room in the tenant's cache.",
        usage.iter().map(|(t, u)| ([("tenant", *t)], u.evictions)),
    )
}

fn origins(scrape: &mut Scrape, tenants: &[&Arc<Tenant>]) -> Written {
    let backends: Vec<(&str, &str, &Backend)> = tenants
        .iter()
        .flat_map(|t| {
            t.backends
                .iter()
                .map(|(name, b)| (&*t.id, name.as_str(), &**b))
        })
        .collect();
    let members: Vec<_> = backends
        .iter()
        .flat_map(|(tenant, backend, b)| b.members().map(move |m| (*tenant, *backend, m)))
        .collect();
    let labels = |(tenant, backend, m): &(&str, &str, crate::origin::MemberReport<'_>)| {
        vec![
            ("tenant", tenant.to_string()),
            ("backend", backend.to_string()),
            ("member", m.url.clone()),
        ]
    };
    scrape.gauges(
        "outpost_origin_member_up",
        "1 when the member takes requests, 0 when its probes fail or it is ejected.",
        members
            .iter()
            .map(|m| (labels(m), f64::from(m.2.state == MemberState::Up))),
    )?;
    let states = members.iter().flat_map(|m| {
        [
            MemberState::Up,
            MemberState::ProbeDown,
            MemberState::Ejected,
        ]
        .map(|s| {
            let mut l = labels(m);
            l.push(("state", s.as_str().to_string()));
            (l, f64::from(m.2.state == s))
        })
    });
    scrape.gauges(
        "outpost_origin_member_state",
        "The member's state: 1 for the one it is in (up, probe_down, ejected).",
        states,
    )?;
    let first_byte = members
        .iter()
        .map(|m| (labels(m), &m.2.stats.first_byte as &Histogram));
    scrape.histograms(
        "outpost_origin_first_byte_seconds",
        "From sending a request to a member to its response head.",
        first_byte,
    )?;
    scrape.counters(
        "outpost_origin_received_bytes",
        "Response body bytes read from the member.",
        members
            .iter()
            .map(|m| (labels(m), m.2.stats.received_bytes.get())),
    )?;
    scrape.counters(
        "outpost_origin_ejections",
        "Times the member was taken out after consecutive failures.",
        members
            .iter()
            .map(|m| (labels(m), m.2.stats.ejections.get())),
    )?;
    connections(scrape, &members, labels)?;
    scrape.counters(
        "outpost_origin_retries",
        "Attempts sent to another member of the backend after one failed.",
        backends
            .iter()
            .map(|(t, name, b)| ([("tenant", *t), ("backend", *name)], b.retries())),
    )
}

type MemberRow<'a> = (&'a str, &'a str, crate::origin::MemberReport<'a>);

fn connections<'a>(
    scrape: &mut Scrape,
    members: &'a [MemberRow<'a>],
    labels: impl Fn(&MemberRow<'a>) -> Vec<(&'static str, String)>,
) -> Written {
    scrape.gauges(
        "outpost_origin_in_flight",
        "Requests sent to the member whose response has not ended.",
        members
            .iter()
            .map(|m| (labels(m), f64::from(m.2.in_flight))),
    )?;
    let pooled = members.iter().flat_map(|m| {
        let open =
            m.2.stats
                .open_connections
                .load(std::sync::atomic::Ordering::Relaxed);
        // Over HTTP/1.1 each request in flight holds one connection.
        let idle = (open - i64::from(m.2.in_flight)).max(0);
        [("open", open), ("idle", idle)].map(|(state, n)| {
            let mut l = labels(m);
            l.push(("state", state.to_string()));
            (l, n as f64)
        })
    });
    scrape.gauges(
        "outpost_origin_connections",
        "Connections to the member: open, and idle in the pool (open less requests in flight).",
        pooled,
    )
}

fn bool_str(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}
