//! The policy platform of `outpost:edge@0.3.0`: signed links checked by
//! the node before the policy runs, rate limits, counters, secrets that
//! never show, rewritten targets, and response edits on every source. Each
//! through the examples a policy author starts from (`signed-downloads`,
//! `api-gateway`, `security-headers`), on a real node with real origins.

use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, Mac};
use http::Method;
use md5::{Digest, Md5};
use outpost_e2e::metrics::Scrape;
use outpost_e2e::*;
use sha2::Sha256;

/// The signing key, as the node reads it from its environment.
const KEY: &str = "e2e-signing-key-0123456789abcdef";
const KEY_VAR: &str = "OUTPOST_E2E_URL_KEY";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A node on `config` with the signing key in its environment, and the
/// config's path.
fn start_with_key(config: &str) -> (Node, std::path::PathBuf) {
    Node::start_env(config, &[(KEY_VAR, KEY)])
}

/// `outpost sign` with the key in its environment.
fn sign(config: &std::path::Path, tenant: &str, path: &str, extra: &[&str]) -> String {
    let out = Command::new(outpost_bin())
        .args(["sign", "--config", config.to_str().unwrap()])
        .args(["--tenant", tenant, "--path", path, "--expires-in", "1h"])
        .args(extra)
        .env(KEY_VAR, KEY)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success(),
        "outpost sign failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// An `hmac-sha256` link made here, independently of the node's code.
fn hmac_link(path: &str, exp: u64, kid: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(KEY.as_bytes()).unwrap();
    mac.update(format!("{path}?exp={exp}&kid={kid}").as_bytes());
    let sig: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{path}?exp={exp}&kid={kid}&sig={sig}")
}

/// The site's own key, with which it asks the policy for links.
const APP_KEY: &str = "app-key-for-e2e-tests-0123456789";

fn files_tenant(origin: &Origin) -> String {
    let app_key_file = scratch_dir().join("app.key");
    std::fs::write(&app_key_file, format!("{APP_KEY}\n")).unwrap();
    format!(
        r#"
[[tenant]]
id = "files"
hosts = ["files.test"]
policy = {}
vars = {{ daily_quota = "3" }}
[tenant.secrets.url_key]
env = "{KEY_VAR}"
[tenant.secrets.app_key]
file = {app_key_file:?}
[tenant.signed_urls]
format = "hmac-sha256"
keys = {{ k1 = "url_key" }}
paths = ["/dl/"]
on_invalid = "policy"
[tenant.counters.downloads]
reset = "daily"
[tenant.backends.files]
url = {:?}
"#,
        example("signed-downloads"),
        origin.url()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn signed_links_pass_tampered_ones_get_403_expired_ones_410_and_every_users_link_is_one_entry(
) {
    let origin = Origin::start("files").await;
    origin.reply(
        "/files/report.pdf",
        Reply::ok()
            .header("cache-control", "max-age=600")
            .body("the report"),
    );
    let (node, config) = start_with_key(&(admin_section() + &files_tenant(&origin)));
    let client = Client::new();

    let alice = sign(&config, "files", "/dl/alice/report.pdf", &[]);
    let bob = sign(&config, "files", "/dl/bob/report.pdf", &[]);
    let r = client.get(&node, "files.test", &alice).await;
    assert_eq!((r.status.as_u16(), r.text()), (200, "the report".into()));
    let r = client.get(&node, "files.test", &bob).await;
    assert_eq!((r.status.as_u16(), r.text()), (200, "the report".into()));
    assert!(r.cache_status().contains("hit"), "{}", r.cache_status());
    // One cache entry, one origin fetch, and the origin never sees a token.
    assert_eq!(origin.hits("/files/report.pdf"), 1);
    assert_eq!(origin.total(), 1);

    // Alice's token on Carol's path, a changed expiry, no token: 403.
    let query = alice.split_once('?').unwrap().1;
    let moved = format!("/dl/carol/report.pdf?{query}");
    let later = alice.replace("exp=", "exp=9");
    for target in [moved.as_str(), later.as_str(), "/dl/alice/report.pdf"] {
        let r = client.get(&node, "files.test", target).await;
        assert_eq!(r.status, 403, "{target}: {}", r.text());
        assert!(r.text().contains("not valid"), "{}", r.text());
    }
    // The site asks the policy for a link (`sign-url`), proving itself
    // with an HMAC of the path under its key (`hmac-sha256` in the policy).
    let mint = "/link/gina/report.pdf";
    let mut mac = Hmac::<Sha256>::new_from_slice(APP_KEY.as_bytes()).unwrap();
    mac.update(mint.as_bytes());
    let mac: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let minted = client
        .get_with(&node, "files.test", mint, &[("x-app-signature", &mac)])
        .await;
    assert_eq!(minted.status, 200, "{}", minted.text());
    assert!(minted.text().starts_with("/dl/gina/report.pdf?exp="));
    let r = client.get(&node, "files.test", &minted.text()).await;
    assert_eq!((r.status.as_u16(), r.text()), (200, "the report".into()));
    let refused = client
        .get_with(&node, "files.test", mint, &[("x-app-signature", "00")])
        .await;
    assert_eq!(refused.status, 403);

    // Correctly signed but past its expiry (beyond the 30 s skew): 410.
    let expired = hmac_link("/dl/alice/report.pdf", now() - 100, "k1");
    let r = client.get(&node, "files.test", &expired).await;
    assert_eq!(r.status, 410, "{}", r.text());
    // The same link made independently of the node passes while valid.
    let fresh = hmac_link("/dl/dave/report.pdf", now() + 60, "k1");
    assert_eq!(client.get(&node, "files.test", &fresh).await.status, 200);

    // Alice's downloads are counted, refused links are not; past the
    // quota of 3, a 429 page with Retry-After.
    let count = |user: &'static str| {
        let client = client.clone();
        let node = &node;
        async move {
            let r = client
                .get(node, "files.test", &format!("/downloads/{user}"))
                .await;
            json(&r)["downloads_today"].as_u64().unwrap()
        }
    };
    assert_eq!(count("alice").await, 1);
    assert_eq!(client.get(&node, "files.test", &alice).await.status, 200);
    assert_eq!(client.get(&node, "files.test", &alice).await.status, 200);
    let r = client.get(&node, "files.test", &alice).await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("3600"));
    assert_eq!(count("bob").await, 1);

    // Counted per tenant, by verdict.
    let m = Scrape::of(&client, &node).await;
    let checks = |verdict| {
        m.value(
            "outpost_signed_url_checks_total",
            &[("tenant", "files"), ("verdict", verdict)],
        )
    };
    assert_eq!(checks("invalid"), 2.0);
    assert_eq!(checks("missing"), 1.0);
    assert_eq!(checks("expired"), 1.0);
    assert!(checks("valid") >= 6.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_policy_page_the_node_refuses_bad_links_itself_nginx_md5_included() {
    let origin = Origin::start("origin").await;
    origin.reply_to_all(Reply::ok().header("cache-control", "max-age=60"));
    let config = format!(
        r#"
[server]
access_log = "plain"

[[tenant]]
id = "legacy"
hosts = ["legacy.test"]
policy = "builtin:default"
[tenant.secrets.md5_key]
env = "{KEY_VAR}"
[tenant.signed_urls]
format = "nginx-md5"
keys = {{ old = "md5_key" }}
paths = ["/s/"]
md5_template = "$secure_link_expires$uri$remote_addr $secret"
[tenant.backends.origin]
url = {:?}
"#,
        origin.url()
    );
    let (node, path) = start_with_key(&config);
    let client = Client::new();
    let link = sign(&path, "legacy", "/s/a.zip", &["--client-ip", "127.0.0.1"]);
    assert!(link.starts_with("/s/a.zip?md5="), "{link}");
    let r = client.get(&node, "legacy.test", &link).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(origin.seen()[0].target, "/s/a.zip");
    // The MD5 as nginx computes it, for a link already expired: 410.
    let expires = now() - 100;
    let text = format!("{expires}/s/a.zip127.0.0.1 {KEY}");
    let md5 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Md5::digest(text));
    let expired = format!("/s/a.zip?md5={md5}&expires={expires}");
    let r = client.get(&node, "legacy.test", &expired).await;
    assert_eq!(r.status, 410, "{}", r.text());
    let r = client
        .get(&node, "legacy.test", &expired.replace("/s/a", "/s/b"))
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(
        client.get(&node, "legacy.test", "/s/a.zip").await.status,
        403
    );
    // Refused links are logged like any request (the token gone): wait for
    // the access log's line, written as the response goes.
    assert!(node.wait_for_stdout(" 410 ", 0, Duration::from_secs(10)));
    let logged = node.stdout();
    let line = logged.iter().find(|l| l.contains(" 410 ")).unwrap();
    assert!(
        line.contains("/s/a.zip") && !line.contains("md5="),
        "{line}"
    );
    // Paths outside `paths` need no token.
    assert_eq!(
        client.get(&node, "legacy.test", "/public/x").await.status,
        200
    );
}

fn gateway_tenant(billing: &Origin, search: &Origin, limiter: &str) -> String {
    format!(
        r#"
[[tenant]]
id = "api"
hosts = ["api.test"]
policy = {}
{limiter}
[tenant.backends.billing]
url = {:?}
[tenant.backends.search]
url = {:?}
[tenant.backends.users]
url = {:?}
"#,
        example("api-gateway"),
        billing.url(),
        search.url(),
        search.url(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_strips_the_prefix_and_holds_each_key_to_its_rate() {
    let billing = Origin::start("billing").await;
    let search = Origin::start("search").await;
    billing.reply_to_all(
        Reply::ok()
            .header("set-cookie", "session=1")
            .header("cache-control", "max-age=600"),
    );
    let limiter = "[tenant.limiters.per-key]\nrate = 10\nburst = 5\n";
    let config = admin_section() + &gateway_tenant(&billing, &search, limiter);
    let node = Node::start(&config);
    let client = Client::new();

    // The prefix is stripped before forwarding; the response hook stored
    // the answer without its cookie, tagged with the service, for the
    // lifetime the origin gave.
    let invoices = |key: &'static str| {
        let client = client.clone();
        let node = &node;
        async move {
            client
                .get_with(
                    node,
                    "api.test",
                    "/billing/v1/invoices?id=3",
                    &[("x-api-key", key)],
                )
                .await
        }
    };
    let r = invoices("w1").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("set-cookie"), None);
    let seen = &billing.seen()[0];
    assert_eq!(seen.target, "/v1/invoices?id=3");
    assert_eq!(seen.headers["host"], "api.test");
    let r = invoices("w2").await;
    assert!(r.cache_status().contains("hit"), "{}", r.cache_status());
    let purged = Client::new()
        .admin(
            &node,
            Method::POST,
            "/tenants/api/purge",
            Some(ADMIN_TOKEN),
            r#"{"tag": "billing"}"#,
        )
        .await;
    assert_eq!(purged.status, 200, "{}", purged.text());
    let r = invoices("w3").await;
    assert!(!r.cache_status().contains("hit"), "{}", r.cache_status());
    assert_eq!(billing.total(), 2);

    // 100 requests of one key at once: the first and the burst of 5 pass
    // (as nginx's `limit_req ... burst=5 nodelay` counts), plus what the
    // rate of 10 per second let through while they were sent.
    let started = Instant::now();
    let answers = futures::future::join_all((0..100).map(|i| {
        let client = client.clone();
        let node = &node;
        async move {
            client
                .get_with(
                    node,
                    "api.test",
                    &format!("/search/q?i={i}"),
                    &[("x-api-key", "k1")],
                )
                .await
        }
    }))
    .await;
    let took = started.elapsed();
    let passed = answers.iter().filter(|r| r.status == 200).count();
    let drained = (took.as_secs_f64() * 10.0).ceil() as usize;
    assert!(
        (6..=6 + drained).contains(&passed),
        "{passed} passed in {took:?}"
    );
    for r in answers.iter().filter(|r| r.status != 200) {
        assert_eq!(r.status, 429, "{}", r.text());
        let wait: u32 = r.header("retry-after").unwrap().parse().unwrap();
        assert!(wait >= 1);
    }
    // Another key is not held back by k1.
    let r = client
        .get_with(&node, "api.test", "/search/q", &[("x-api-key", "k2")])
        .await;
    assert_eq!(r.status, 200);
    // A second later, at the rate: 10 more, one every 100 ms (a slower
    // client only drains more).
    tokio::time::sleep(Duration::from_secs(1)).await;
    for i in 0..10 {
        let r = client
            .get_with(
                &node,
                "api.test",
                &format!("/search/later?{i}"),
                &[("x-api-key", "k1")],
            )
            .await;
        assert_eq!(r.status, 200, "request {i} after a second: {}", r.text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = Scrape::of(&Client::new(), &node).await;
    assert!(
        m.value(
            "outpost_rate_limit_checks_total",
            &[
                ("tenant", "api"),
                ("limiter", "per-key"),
                ("verdict", "denied")
            ]
        ) >= 90.0 - drained as f64
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_undeclared_limiter_is_an_answer_the_policy_handles_and_a_deploy_warning() {
    let billing = Origin::start("billing").await;
    let search = Origin::start("search").await;
    let node = Node::start(&(admin_section() + &gateway_tenant(&billing, &search, "")));
    let client = Client::new();
    let r = client.get(&node, "api.test", "/search/q").await;
    assert_eq!(r.status, 500);
    assert!(
        r.text().contains("the limiter per-key is not declared"),
        "{}",
        r.text()
    );
    assert_eq!(search.total(), 0);
    let deployed = client
        .admin(
            &node,
            Method::PUT,
            "/tenants/api/modules",
            Some(ADMIN_TOKEN),
            example_wasm("api-gateway"),
        )
        .await;
    assert_eq!(deployed.status, 201, "{}", deployed.text());
    let warnings = json(&deployed)["warnings"].to_string();
    assert!(
        warnings.contains("undeclared limiter \\\"per-key\\\""),
        "{warnings}"
    );
    // `outpost check` says the same, and still passes.
    let dir = scratch_dir();
    let path = dir.join("outpost.toml");
    std::fs::write(&path, gateway_tenant(&billing, &search, "")).unwrap();
    let out = Command::new(outpost_bin())
        .args(["check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{printed}");
    assert!(
        printed.contains("warning: tenant api: the policy calls an undeclared limiter \"per-key\""),
        "{printed}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn security_headers_reach_misses_hits_and_errors_and_browsers_get_their_own_lifetime() {
    let origin = Origin::start("origin").await;
    origin.reply_to_all(
        Reply::ok()
            .header("server", "origin/1.0")
            .header("cache-control", "max-age=5"),
    );
    let tenant = |id: &str, url: &str| {
        format!(
            "[[tenant]]\nid = \"{id}\"\nhosts = [\"{id}.test\"]\npolicy = {}\n\
             vars = {{ cors_origins = \"https://app.example\" }}\n\
             [tenant.backends.origin]\nurl = {url:?}\n",
            example("security-headers")
        )
    };
    let config = tenant("site", &origin.url()) + &tenant("down", &closed_port_url());
    let node = Node::start(&config);
    let client = Client::new();
    let cors = [("origin", "https://app.example")];
    let miss = client.get_with(&node, "site.test", "/page", &cors).await;
    let hit = client.get_with(&node, "site.test", "/page", &cors).await;
    assert!(hit.cache_status().contains("hit"), "{}", hit.cache_status());
    let failed = client.get_with(&node, "down.test", "/page", &cors).await;
    assert_eq!(failed.status, 502);
    for r in [&miss, &hit, &failed] {
        assert_eq!(
            r.header("strict-transport-security"),
            Some("max-age=63072000; includeSubDomains")
        );
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(r.header("server"), None);
        assert_eq!(r.header("cache-control"), Some("public, max-age=60"));
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some("https://app.example")
        );
    }
    // The edge keeps it an hour though the origin said 5 s: the policy's
    // TTL, not the browser's lifetime, is what was stored.
    assert!(
        hit.cache_status().contains("ttl=3"),
        "{}",
        hit.cache_status()
    );
    let other = client
        .get_with(
            &node,
            "site.test",
            "/page",
            &[("origin", "https://evil.example")],
        )
        .await;
    assert_eq!(other.header("access-control-allow-origin"), None);
    assert_eq!(origin.total(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secrets_value_appears_nowhere_in_logs_status_metrics_the_preview_or_errors() {
    let origin = Origin::start("files").await;
    origin.reply_to_all(Reply::ok().header("cache-control", "max-age=60"));
    let config = format!(
        "{}[server]\naccess_log = \"json\"\n{}",
        admin_section(),
        files_tenant(&origin)
    );
    let (node, path) = Node::start_env(&config, &[(KEY_VAR, KEY), ("OUTPOST_LOG", "debug")]);
    let client = Client::new();
    let link = sign(&path, "files", "/dl/erin/a.txt", &[]);
    for target in [
        link.as_str(),
        "/dl/erin/a.txt?exp=1&sig=00",
        "/downloads/erin",
    ] {
        client.get(&node, "files.test", target).await;
    }
    let admin = |method, path: &'static str, body: String| {
        let client = client.clone();
        let node = &node;
        async move {
            client
                .admin(node, method, path, Some(ADMIN_TOKEN), body)
                .await
                .text()
        }
    };
    let active = json(
        &client
            .admin(&node, Method::GET, "/tenants/files", Some(ADMIN_TOKEN), "")
            .await,
    )["active"]
        .as_str()
        .unwrap()
        .to_string();
    let mut seen = vec![
        admin(Method::GET, "/status", String::new()).await,
        admin(Method::GET, "/metrics", String::new()).await,
        admin(Method::GET, "/tenants/files", String::new()).await,
        admin(Method::GET, "/tenants", String::new()).await,
        admin(
            Method::POST,
            "/tenants/files/preview",
            format!("{{\"version\": \"{active}\"}}"),
        )
        .await,
    ];
    // A tenant whose key is too short, one whose secret is missing: both
    // refused, naming the field, not the value.
    let short = format!(
        "hosts = [\"short.test\"]\npolicy = \"builtin:default\"\n\
         [secrets.k]\nenv = \"{KEY_VAR}\"\nencoding = \"hex\"\n\
         [signed_urls]\nformat = \"hmac-sha256\"\nkeys = {{ a = \"k\" }}\n"
    );
    let refused = admin(Method::PUT, "/tenants/short", short).await;
    assert!(refused.contains("secrets.k.env"), "{refused}");
    seen.push(refused);
    let missing = "hosts = [\"m.test\"]\npolicy = \"builtin:default\"\n\
                   [secrets.k]\nenv = \"OUTPOST_E2E_NOT_SET\"\n"
        .to_string();
    let refused = admin(Method::PUT, "/tenants/missing", missing).await;
    assert!(
        refused.contains("OUTPOST_E2E_NOT_SET is not set"),
        "{refused}"
    );
    seen.push(refused);
    // An update of a serving tenant whose secret is missing is refused;
    // the tenant keeps serving as it was.
    let broken = files_tenant(&origin)
        .replace("[[tenant]]\nid = \"files\"\n", "")
        .replace("[tenant.", "[")
        .replace(KEY_VAR, "OUTPOST_E2E_NOT_SET");
    let refused = admin(Method::PUT, "/tenants/files", broken).await;
    assert!(refused.contains("secrets.url_key.env"), "{refused}");
    seen.push(refused);
    assert_eq!(client.get(&node, "files.test", &link).await.status, 200);
    seen.push(node.log());
    // The access log's lines of the requests above, once written.
    assert!(node.wait_for_stdout("/downloads/erin", 0, Duration::from_secs(10)));
    seen.push(node.stdout().join("\n"));
    let hex: String = KEY.bytes().map(|b| format!("{b:02x}")).collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(KEY);
    for text in &seen {
        for form in [KEY, &hex, &b64, &KEY[..16], APP_KEY] {
            assert!(!text.contains(form), "the secret shows in:\n{text}");
        }
    }
    // The log and the access log were written to (the grep saw them).
    assert!(node.log().contains("files"));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_signed_url_configs_are_refused_with_file_field_and_line() {
    let dir = scratch_dir();
    let check = |body: &str| {
        let path = dir.join("outpost.toml");
        std::fs::write(
            &path,
            format!(
                "[[tenant]]\nid = \"t\"\nhosts = [\"t.test\"]\npolicy = \"builtin:default\"\n{body}"
            ),
        )
        .unwrap();
        let out = Command::new(outpost_bin())
            .args(["check", "--config", path.to_str().unwrap()])
            .env(KEY_VAR, KEY)
            .env("OUTPOST_E2E_SHORT", "short")
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let unknown = check("[tenant.signed_urls]\nformat = \"md6\"\nkeys = { a = \"k\" }\n");
    assert!(
        unknown.contains("outpost.toml") && unknown.contains("line 6"),
        "{unknown}"
    );
    assert!(unknown.contains("format"), "{unknown}");
    let no_key = check("[tenant.signed_urls]\nformat = \"hmac-sha256\"\nkeys = {}\n");
    assert!(no_key.contains("tenant[0].signed_urls.keys"), "{no_key}");
    assert!(no_key.contains("line 7"), "{no_key}");
    let short = check(
        "[tenant.secrets.k]\nenv = \"OUTPOST_E2E_SHORT\"\n\
         [tenant.signed_urls]\nformat = \"edge-auth\"\nkeys = { a = \"k\" }\n",
    );
    assert!(short.contains("tenant[0].signed_urls.keys.a"), "{short}");
    assert!(short.contains("at least 16"), "{short}");
    assert!(short.contains("line 9"), "{short}");
    assert!(!short.contains("\"short\""), "{short}");
    let missing = check("[tenant.secrets.k]\nenv = \"OUTPOST_E2E_NOT_SET\"\n");
    assert!(missing.contains("tenant[0].secrets.k.env"), "{missing}");
    assert!(missing.contains("line 6"), "{missing}");
}

/// A node of POP `ams` of the fleet on `etcd`, with the signing key.
fn pop_node(etcd: &outpost_e2e::etcd::Etcd, id: &str) -> Node {
    outpost_e2e::fleet::fleet_node_env(&etcd.url, id, "ams", &scratch_dir(), &[(KEY_VAR, KEY)])
}

#[tokio::test(flavor = "multi_thread")]
async fn a_counter_incremented_through_both_nodes_of_a_pop_ends_at_the_exact_total() {
    let etcd = outpost_e2e::etcd::Etcd::start();
    let origin = Origin::start("files").await;
    origin.reply_to_all(Reply::ok().header("cache-control", "max-age=600"));
    let doc = format!(
        r#"hosts = ["files.test"]
policy = {}
vars = {{ daily_quota = "100000" }}
[secrets.url_key]
env = "{KEY_VAR}"
[signed_urls]
format = "hmac-sha256"
keys = {{ k1 = "url_key" }}
paths = ["/dl/"]
on_invalid = "policy"
[counters.downloads]
reset = "daily"
[backends.files]
url = {:?}
"#,
        example("signed-downloads"),
        origin.url()
    );
    let mut kv = etcd_client::Client::connect([&etcd.url], None)
        .await
        .unwrap();
    kv.put("/outpost/tenants/files", doc, None).await.unwrap();
    let client = Client::new();
    let nodes = [pop_node(&etcd, "edge-1"), pop_node(&etcd, "edge-2")];
    for node in &nodes {
        outpost_e2e::fleet::ready(&client, node).await;
    }
    // Both see the POP of two before counting.
    let start = Instant::now();
    for node in &nodes {
        while Scrape::of(&client, node)
            .await
            .value("outpost_pop_members", &[])
            != 2.0
        {
            assert!(start.elapsed() < Duration::from_secs(40), "no POP of 2");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Eight users, each downloading through both nodes in turn, at once.
    let users: Vec<String> = (0..8).map(|i| format!("user{i}")).collect();
    let per_user = 12;
    let downloads = users
        .iter()
        .flat_map(|user| (0..per_user).map(move |i| (user.clone(), i)));
    let answers = futures::future::join_all(downloads.map(|(user, i)| {
        let client = client.clone();
        let node = &nodes[i % 2];
        let link = hmac_link(&format!("/dl/{user}/f.bin"), now() + 600, "k1");
        async move { client.get(node, "files.test", &link).await.status }
    }))
    .await;
    assert!(answers.iter().all(|s| *s == 200), "{answers:?}");
    // Every node reads the exact total of every user.
    for user in &users {
        for node in &nodes {
            let r = client
                .get(node, "files.test", &format!("/downloads/{user}"))
                .await;
            assert_eq!(
                json(&r)["downloads_today"].as_u64(),
                Some(per_user as u64),
                "{user} through {}",
                node.addr
            );
        }
    }
    // Each key was kept by one node: some by each, the other asked it.
    for node in &nodes {
        let m = Scrape::of(&client, node).await;
        assert!(m.value("outpost_pop_served_for_peers_total", &[]) > 0.0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn counters_survive_a_policy_swap_and_a_rebuild_of_the_tenant() {
    let origin = Origin::start("files").await;
    origin.reply_to_all(Reply::ok().header("cache-control", "max-age=60"));
    let (node, _) = start_with_key(&(admin_section() + &files_tenant(&origin)));
    let client = Client::new();
    let link = hmac_link("/dl/frank/x", now() + 600, "k1");
    assert_eq!(client.get(&node, "files.test", &link).await.status, 200);
    // A policy swap (a deploy, activated) and a new config for the tenant
    // (its quota changed: the tenant is built again) keep the count.
    let deployed = client
        .admin(
            &node,
            Method::PUT,
            "/tenants/files/modules?activate=true",
            Some(ADMIN_TOKEN),
            example_wasm("signed-downloads"),
        )
        .await;
    assert_eq!(deployed.status, 201, "{}", deployed.text());
    assert_eq!(client.get(&node, "files.test", &link).await.status, 200);
    let tenant = files_tenant(&origin)
        .replace("[[tenant]]\nid = \"files\"\n", "")
        .replace("daily_quota = \"3\"", "daily_quota = \"4\"");
    let put = client
        .admin(
            &node,
            Method::PUT,
            "/tenants/files",
            Some(ADMIN_TOKEN),
            tenant.replace("[tenant.", "["),
        )
        .await;
    assert!(put.status.is_success(), "{}", put.text());
    assert_eq!(client.get(&node, "files.test", &link).await.status, 200);
    let r = client.get(&node, "files.test", "/downloads/frank").await;
    assert_eq!(json(&r)["downloads_today"], 3);
    // The new quota of 4 applies: one more, then 429.
    assert_eq!(client.get(&node, "files.test", &link).await.status, 200);
    assert_eq!(client.get(&node, "files.test", &link).await.status, 429);
}
