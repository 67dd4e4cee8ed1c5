//! `outpost status`: the status page in the terminal (as `varnishstat -1`
//! prints its counters): two snapshots of the admin API's `/status` one
//! second apart, so rates are rates. With `--etcd`, the fleet instead
//! (`fleet_status`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::config::BackendTlsConfig;

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// The admin listener.
    #[arg(long, default_value = "http://127.0.0.1:9090")]
    admin: String,
    /// The admin token (default: `OUTPOST_ADMIN_TOKEN`).
    #[arg(long, env = "OUTPOST_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A CA file (PEM) the admin listener's certificate chains to, for an
    /// https admin URL with a private CA (default: the Mozilla roots).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Show the fleet from its etcd instead (comma-separated URLs): every
    /// live node and what it runs.
    #[arg(long, value_delimiter = ',')]
    etcd: Vec<String>,
    /// Where the fleet's keys live in etcd.
    #[arg(long, default_value = "/outpost", requires = "etcd")]
    prefix: String,
    /// Wait until every live node runs every tenant's selected version.
    #[arg(long, requires = "etcd")]
    wait: bool,
    /// How long `--wait` waits, in seconds.
    #[arg(long, default_value_t = 60, requires = "wait")]
    timeout_s: u64,
}

pub fn run(args: StatusArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if !args.etcd.is_empty() {
        let timeout = Duration::from_secs(args.timeout_s);
        return runtime.block_on(super::fleet_status::run(
            &args.etcd,
            &args.prefix,
            args.wait,
            timeout,
        ));
    }
    let text = runtime.block_on(async {
        let first = fetch(&args).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let second = fetch(&args).await?;
        Ok::<_, anyhow::Error>(summary(&first, &second, 1.0))
    })?;
    print!("{text}");
    Ok(())
}

async fn fetch(args: &StatusArgs) -> anyhow::Result<Value> {
    let tls = BackendTlsConfig {
        ca: args.ca.clone(),
        ..BackendTlsConfig::default()
    };
    let config = crate::tls::client_config(Some(&tls), std::path::Path::new("."))
        .map_err(|e| anyhow::anyhow!("--ca: {}", e.message))?;
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    let url = format!("{}/status", args.admin.trim_end_matches('/'));
    let request = http::Request::get(&url)
        .header(
            http::header::AUTHORIZATION,
            format!(
                "Bearer {}",
                args.token
                    .as_deref()
                    .context("the admin token is needed: --token or OUTPOST_ADMIN_TOKEN")?
            ),
        )
        .body(Empty::new())
        .with_context(|| format!("--admin {:?} is not a URL", args.admin))?;
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .with_context(|| format!("{url}: no answer within 10 s"))?
        .with_context(|| format!("{url}: cannot connect"))?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if status == http::StatusCode::UNAUTHORIZED {
        bail!("{url}: the admin token was refused");
    }
    if !status.is_success() {
        bail!("{url}: {status}: {}", String::from_utf8_lossy(&body));
    }
    serde_json::from_slice(&body).with_context(|| format!("{url}: not the status JSON"))
}

/// The terminal summary: the node, a row per tenant (rates from the two
/// snapshots `seconds` apart), a row per backend member.
fn summary(first: &Value, second: &Value, seconds: f64) -> String {
    let node = &second["node"];
    let mut out = format!(
        "node {}  version {}  up {:.0} s  memory {:.1} MiB  client connections {}\n\n",
        node["node_id"].as_str().unwrap_or("?"),
        node["version"].as_str().unwrap_or("?"),
        node["uptime_s"].as_f64().unwrap_or(0.0),
        node["rss_bytes"].as_f64().unwrap_or(0.0) / 1048576.0,
        node["client_connections"],
    );
    out.push_str(&format!(
        "{:<16} {:<20} {:>9} {:>7} {:>8} {:>8} {:>7} {:>8} {:>9}\n",
        "tenant", "active", "req/s", "hit%", "p50 ms", "p99 ms", "5xx", "guest!", "objects"
    ));
    let empty = Vec::new();
    let before = first["tenants"].as_array().unwrap_or(&empty);
    let tenants = second["tenants"].as_array().unwrap_or(&empty);
    for t in tenants {
        let id = t["id"].as_str().unwrap_or("?");
        let earlier = before.iter().find(|b| b["id"] == t["id"]);
        let requests = |v: &Value| v["requests"].as_u64().unwrap_or(0);
        let rate = earlier.map(|b| requests(t).saturating_sub(requests(b)) as f64 / seconds);
        let number =
            |v: Option<f64>, digits: usize| v.map_or("-".to_string(), |v| format!("{v:.digits$}"));
        out.push_str(&format!(
            "{:<16} {:<20} {:>9} {:>7} {:>8} {:>8} {:>7} {:>8} {:>9}\n",
            id,
            t["active"].as_str().unwrap_or("?").get(..19).unwrap_or("?"),
            number(rate, 1),
            number(t["hit_ratio"].as_f64().map(|r| r * 100.0), 1),
            number(t["p50_ms"].as_f64(), 2),
            number(t["p99_ms"].as_f64(), 2),
            t["errors_5xx"],
            t["guest_failures"],
            t["cache"]["objects"],
        ));
    }
    out.push('\n');
    for t in tenants {
        for b in t["backends"].as_array().unwrap_or(&empty) {
            for m in b["members"].as_array().unwrap_or(&empty) {
                out.push_str(&format!(
                    "backend {}/{}  {}  {}  in flight {}  connections {}\n",
                    t["id"].as_str().unwrap_or("?"),
                    b["name"].as_str().unwrap_or("?"),
                    m["url"].as_str().unwrap_or("?"),
                    m["state"].as_str().unwrap_or("?"),
                    m["in_flight"],
                    m["open_connections"],
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_summary_shows_rates_from_two_snapshots_and_every_member() {
        let snapshot = |requests: u64| {
            json!({
                "node": { "node_id": "n1", "version": "0.1.0", "uptime_s": 12.0,
                          "rss_bytes": 10485760, "client_connections": 3 },
                "tenants": [{
                    "id": "shop", "active": "sha256:0123456789abcdef", "requests": requests,
                    "errors_5xx": 1, "hit_ratio": 0.75, "p50_ms": 0.5, "p99_ms": 3.25,
                    "guest_failures": 0, "cache": { "objects": 42 },
                    "backends": [{ "name": "origin", "members": [
                        { "url": "http://10.0.0.1", "state": "ejected", "in_flight": 0, "open_connections": 2 }
                    ]}]
                }]
            })
        };
        let text = summary(&snapshot(100), &snapshot(350), 1.0);
        assert!(text.contains("node n1"), "{text}");
        assert!(text.contains("10.0 MiB"), "{text}");
        let row = text.lines().find(|l| l.starts_with("shop")).unwrap();
        for field in ["250.0", "75.0", "0.50", "3.25", "42", "sha256:0123456789ab"] {
            assert!(row.contains(field), "{field} in {row}");
        }
        assert!(
            text.contains("backend shop/origin  http://10.0.0.1  ejected"),
            "{text}"
        );
    }
}
