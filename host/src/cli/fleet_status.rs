//! `outpost status --etcd URL`: every live node of the fleet, its POP, and
//! per tenant the version it runs and since when, or why it refused what
//! etcd selects; with `--wait`, waits until every live node runs every
//! tenant's selected version (a rollout has converged).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use etcd_client::{Client, ConnectOptions, GetOptions};
use serde_json::Value;

use crate::fleet::desired::Selection;
use crate::fleet::keys::{FleetKey, Layout};

/// What etcd says of the fleet.
#[derive(Debug, Default)]
pub(super) struct Fleet {
    /// node -> its record.
    pub(super) nodes: BTreeMap<String, Value>,
    /// (node, tenant) -> its acknowledgement.
    pub(super) acks: BTreeMap<(String, String), Value>,
    /// tenant -> the active version selected.
    selected: BTreeMap<String, String>,
    /// tenant -> its staged rollout or canary, and the last one halted.
    rollouts: BTreeMap<String, Selection>,
}

impl Fleet {
    /// Tenants some live node does not run as selected: (tenant, node).
    fn lagging(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (tenant, version) in &self.selected {
            for node in self.nodes.keys() {
                let ack = self.acks.get(&(node.clone(), tenant.clone()));
                if ack.and_then(|a| a["version"].as_str()) != Some(version.as_str()) {
                    out.push((tenant.clone(), node.clone()));
                }
            }
        }
        out
    }

    fn print(&self) {
        for (node, record) in &self.nodes {
            let load = &record["load"];
            println!(
                "node {node}  pop {}  {}  outpost {}  {} req/s, {} 5xx/s, {} connections",
                record["pop"].as_str().unwrap_or("?"),
                record["address"].as_str().unwrap_or("?"),
                record["version"].as_str().unwrap_or("?"),
                load["requests_per_s"].as_f64().unwrap_or(0.0),
                load["errors_per_s"].as_f64().unwrap_or(0.0),
                load["open_connections"].as_i64().unwrap_or(0),
            );
            for ((_, tenant), ack) in self.acks.iter().filter(|((n, _), _)| n == node) {
                let ago = unix_now().saturating_sub(ack["at"].as_u64().unwrap_or(0));
                match ack["refused"].as_str() {
                    Some(why) => println!("  {tenant:<20} refused {ago} s ago: {why}"),
                    None => println!(
                        "  {tenant:<20} {} for {ago} s",
                        ack["version"].as_str().unwrap_or("?")
                    ),
                }
            }
        }
        for (tenant, selection) in &self.rollouts {
            if let Some(c) = &selection.canary {
                let pop = c
                    .pop
                    .as_deref()
                    .map_or("every POP".to_string(), |p| format!("POP {p}"));
                println!(
                    "tenant {tenant}: {} on {pop} for {}% of requests",
                    c.version, c.percent
                );
            }
            if let Some(h) = &selection.halted {
                println!(
                    "tenant {tenant}: rollout of {} halted by node {} {} s ago: {}",
                    h.version,
                    h.node,
                    unix_now().saturating_sub(h.at),
                    h.reason
                );
            }
        }
    }
}

/// The nodes, their acknowledgements and the selections (not the modules'
/// bytes: a status is read many times a second while waiting).
pub(super) async fn read(client: &mut Client, layout: &Layout) -> anyhow::Result<Fleet> {
    let mut kvs = Vec::new();
    for prefix in [layout.nodes(), layout.acks(), layout.selections()] {
        let got = client
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await?;
        kvs.extend_from_slice(got.kvs());
    }
    let mut fleet = Fleet::default();
    for kv in &kvs {
        let Ok(key) = std::str::from_utf8(kv.key()) else {
            continue;
        };
        let value = || serde_json::from_slice::<Value>(kv.value()).unwrap_or_default();
        match layout.parse(key) {
            Some(FleetKey::Node(node)) => {
                fleet.nodes.insert(node.to_string(), value());
            }
            Some(FleetKey::Ack { node, tenant }) => {
                fleet
                    .acks
                    .insert((node.to_string(), tenant.to_string()), value());
            }
            Some(FleetKey::Selection(tenant)) => {
                if let Ok(s) = serde_json::from_slice::<Selection>(kv.value()) {
                    fleet.selected.insert(tenant.to_string(), s.active.clone());
                    if s.canary.is_some() || s.halted.is_some() {
                        fleet.rollouts.insert(tenant.to_string(), s);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(fleet)
}

/// Prints the fleet; with `wait`, first waits up to `timeout` for every
/// live node to run every tenant's selected version.
pub async fn run(
    endpoints: &[String],
    prefix: &str,
    wait: bool,
    timeout: Duration,
) -> anyhow::Result<()> {
    let layout = Layout::new(prefix);
    let mut client = connect(endpoints).await?;
    let start = Instant::now();
    loop {
        let fleet = read(&mut client, &layout).await?;
        let lagging = fleet.lagging();
        if !wait || lagging.is_empty() {
            fleet.print();
            if wait {
                println!("converged in {:.2} s", start.elapsed().as_secs_f64());
            }
            return Ok(());
        }
        if start.elapsed() >= timeout {
            fleet.print();
            let list: Vec<String> = lagging.iter().map(|(t, n)| format!("{t} on {n}")).collect();
            bail!("not converged after {timeout:?}: {}", list.join(", "));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A client of the fleet's etcd, for the command line.
pub(super) async fn connect(endpoints: &[String]) -> anyhow::Result<Client> {
    let options = ConnectOptions::new().with_connect_timeout(Duration::from_secs(5));
    Client::connect(endpoints, Some(options))
        .await
        .with_context(|| format!("cannot connect to etcd at {}", endpoints.join(",")))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
