//! Origins over HTTPS: verified against the backend's CA file and server
//! name, with a client certificate when the origin asks for one; a
//! certificate that does not fit is a fast 502 whose log line says why.
//! Certificates are made in each test (rcgen).

use std::time::Duration;

use outpost_e2e::tls::{Issued, Pki};
use outpost_e2e::*;

/// A node with tenant `t` whose backend `origin` is `origin` over HTTPS,
/// with these `[tenant.backends.origin.tls]` settings.
fn node_for(origin: &Origin, tls: &str) -> Node {
    let tenant = tenant_with(
        "t",
        &["t.test"],
        "builtin:default",
        &[("origin", &origin.url())],
        "",
    );
    Node::start(&format!("{tenant}[tenant.backends.origin.tls]\n{tls}"))
}

/// `ca` and `server_name` settings trusting `pki` for `origin.test`.
fn trusting(pki: &Pki, dir: &std::path::Path) -> String {
    let ca = pki.ca_file(dir).display().to_string();
    format!("ca = {ca:?}\nserver_name = \"origin.test\"\n")
}

async fn tls_origin(pki: &Pki, issued: &Issued, client_auth: bool) -> Origin {
    Origin::start_tls("secure", pki.acceptor(issued, client_auth)).await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_https_origin_trusted_by_the_backends_ca_is_served_and_cached() {
    let pki = Pki::new();
    let dir = scratch_dir();
    let cert = pki.issue(&dir, "origin", &["origin.test"]);
    let origin = tls_origin(&pki, &cert, false).await;
    origin.reply("/x", Reply::ok().header("cache-control", "max-age=60"));
    let node = node_for(&origin, &trusting(&pki, &dir));
    let client = Client::new();
    let first = client.get(&node, "t.test", "/x").await;
    assert_eq!(first.status, 200, "{}\n{}", first.text(), node.log());
    assert_eq!(first.text(), "secure /x");
    let second = client.get(&node, "t.test", "/x").await;
    assert!(
        second.cache_status().contains("hit"),
        "{}",
        second.cache_status()
    );
    assert_eq!(origin.hits("/x"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn certificates_that_do_not_fit_fail_fast_with_the_reason_logged() {
    let pki = Pki::new();
    let dir = scratch_dir();
    let other_name = pki.issue(&dir, "other", &["other.test"]);
    let expired = pki.issue_with(&dir, "expired", &["origin.test"], |p| {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    let valid = pki.issue(&dir, "valid", &["origin.test"]);
    let cases = [
        (
            &other_name,
            trusting(&pki, &dir),
            "tls: certificate not valid for \"origin.test\"",
        ),
        (&expired, trusting(&pki, &dir), "tls: certificate expired"),
        // Without a CA file the Mozilla roots decide: the test CA is not one.
        (
            &valid,
            "server_name = \"origin.test\"\n".to_string(),
            "tls: certificate issued by an unknown authority",
        ),
    ];
    for (cert, tls, reason) in cases {
        let origin = tls_origin(&pki, cert, false).await;
        let node = node_for(&origin, &tls);
        let started = std::time::Instant::now();
        let r = Client::new().get(&node, "t.test", "/x").await;
        assert_eq!(r.status, 502, "{reason}: {}", r.text());
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{reason}: not fast"
        );
        assert!(
            node.wait_for_log(reason, Duration::from_secs(5)).await,
            "{reason} not in the log:\n{}",
            node.log()
        );
        assert_eq!(origin.total(), 0, "{reason}: the origin saw a request");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_origin_that_asks_for_a_client_certificate_gets_the_backends() {
    let pki = Pki::new();
    let dir = scratch_dir();
    let cert = pki.issue(&dir, "origin", &["origin.test"]);
    let origin = tls_origin(&pki, &cert, true).await;
    let without = node_for(&origin, &trusting(&pki, &dir));
    assert_eq!(
        Client::new().get(&without, "t.test", "/x").await.status,
        502
    );
    assert_eq!(origin.total(), 0);

    let client_cert = pki.issue(&dir, "client", &["edge.test"]);
    let tls = format!("{}{}", trusting(&pki, &dir), client_cert.toml());
    let with = node_for(&origin, &tls);
    let r = Client::new().get(&with, "t.test", "/x").await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), with.log());
    assert_eq!(origin.hits("/x"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn backend_tls_settings_that_cannot_work_are_refused_at_load() {
    let dir = scratch_dir();
    let plain = tenant_with(
        "t",
        &["t.test"],
        "builtin:default",
        &[("origin", "http://127.0.0.1:9")],
        "",
    );
    let err = refused_config(
        &dir,
        "plain.toml",
        &format!("{plain}[tenant.backends.origin.tls]\nserver_name = \"x.test\"\n"),
    );
    assert!(
        err.contains("tenant[0].backends.origin.tls") && err.contains("https://"),
        "{err}"
    );

    let https = tenant_with(
        "t",
        &["t.test"],
        "builtin:default",
        &[("origin", "https://127.0.0.1:9")],
        "",
    );
    let err = refused_config(
        &dir,
        "ca.toml",
        &format!("{https}[tenant.backends.origin.tls]\nca = \"missing-ca.pem\"\n"),
    );
    assert!(
        err.contains("tenant[0].backends.origin.tls.ca") && err.contains("missing-ca.pem"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_reaches_an_https_origin_that_agrees_by_alpn_and_h2c_a_plain_one() {
    let pki = Pki::new();
    let dir = scratch_dir();
    let issued = pki.issue(&dir, "origin", &["origin.test"]);
    let secure = tls_origin(&pki, &issued, false).await;
    let plain = Origin::start("plain").await;
    let config = format!(
        "[[tenant]]\nid = \"t\"\nhosts = [\"t.test\"]\npolicy = \"builtin:default\"\n\
         [tenant.backends.origin]\nurl = {:?}\nprotocol = \"auto\"\n\
         [tenant.backends.origin.tls]\n{}\
         [[tenant]]\nid = \"c\"\nhosts = [\"c.test\"]\npolicy = \"builtin:default\"\n\
         [tenant.backends.origin]\nurl = {:?}\nprotocol = \"h2c\"\n\
         [[tenant]]\nid = \"one\"\nhosts = [\"one.test\"]\npolicy = \"builtin:default\"\n\
         [tenant.backends.origin]\nurl = {:?}\n",
        secure.url(),
        trusting(&pki, &dir),
        plain.url(),
        plain.url(),
    );
    let node = Node::start(&config);
    let client = Client::new();
    for (host, path) in [("t.test", "/a"), ("c.test", "/b"), ("one.test", "/c")] {
        let r = client.get(&node, host, path).await;
        assert_eq!(r.status, 200, "{host}: {}\n{}", r.text(), node.log());
    }
    let first = |o: &Origin| o.seen()[0].clone();
    let (over_tls, h2c, http1) = (first(&secure), first(&plain), plain.seen()[1].clone());
    assert_eq!(over_tls.version, http::Version::HTTP_2);
    assert_eq!(h2c.version, http::Version::HTTP_2);
    assert_eq!(
        http1.version,
        http::Version::HTTP_11,
        "HTTP/1.1 stays the default"
    );
    // HTTP/2's :authority is the Host the origin is asked for, not the
    // member's address (RFC 9113 section 8.3.1).
    assert_eq!(over_tls.authority.as_deref(), Some("t.test"));
    assert_eq!(h2c.authority.as_deref(), Some("c.test"));
    let err = refused_config(
        &dir,
        "h2c.toml",
        &config.replace("protocol = \"auto\"", "protocol = \"h2c\""),
    );
    assert!(err.contains("tenant[0].backends.origin.protocol"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_200_mib_put_streams_to_an_https_origin_with_bounded_memory() {
    let pki = Pki::new();
    let dir = scratch_dir();
    let issued = pki.issue(&dir, "origin", &["origin.test"]);
    let origin = tls_origin(&pki, &issued, false).await;
    origin.reply("/upload", Reply::status(201));
    let node = node_for(&origin, &trusting(&pki, &dir));
    const UPLOAD: u64 = 200 * 1024 * 1024;
    let body = upload_body(UPLOAD);
    let r = Client::new()
        .open(&node, http::Method::PUT, "t.test", "/upload", &[], body)
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let seen = origin
        .seen()
        .into_iter()
        .find(|s| s.target == "/upload")
        .unwrap();
    assert_eq!(seen.body_len, UPLOAD, "the origin got every byte");
    let peak = node.peak_rss_kib();
    assert!(
        peak < 128 * 1024,
        "peak RSS {} MiB for a 200 MiB upload",
        peak / 1024
    );
}
