//! TLS termination: certificates chosen by SNI per tenant, 421 across
//! tenants on one connection, reload of certificates without a restart,
//! force_https, refusal of bad certificates at load, and the admin API over
//! TLS. Certificates are made in each test by a test CA (rcgen); the client
//! is rustls.

use std::time::Duration;

use http::StatusCode;
use outpost_e2e::tls::{Issued, Pki, TlsConnection};
use outpost_e2e::*;

const H2: &[u8] = b"h2";
const HTTP1: &[u8] = b"http/1.1";

/// Tenants: `a` with its own certificate for `a.test`, `b` with its own
/// wildcard one for `*.b.test`, `c` on the default certificate (which also
/// names `unknown.test`, a host no tenant serves).
struct Fleet {
    origin: Origin,
    node: Node,
    pki: Pki,
    a: Issued,
    b: Issued,
    default: Issued,
    dir: std::path::PathBuf,
}

fn server_tls(default: Option<&Issued>) -> String {
    let cert = default.map(Issued::toml).unwrap_or_default();
    format!("[server.tls]\nlisten = \"127.0.0.1:0\"\n{cert}\n")
}

fn fleet_config(origin: &Origin, a: &Issued, b: &Issued, default: Option<&Issued>) -> String {
    let backends = [("origin", origin.url())];
    let backends: Vec<(&str, &str)> = backends.iter().map(|(n, u)| (*n, u.as_str())).collect();
    format!(
        "{}{}{}{}{}",
        admin_section(),
        server_tls(default),
        tenant_with(
            "a",
            &["a.test"],
            "builtin:default",
            &backends,
            &format!("force_https = true\n[tenant.tls]\n{}", a.toml()),
        ),
        tenant_with(
            "b",
            &["*.b.test"],
            "builtin:default",
            &backends,
            &format!("[tenant.tls]\n{}", b.toml()),
        ),
        tenant_with("c", &["c.test"], "builtin:default", &backends, ""),
    )
}

async fn fleet(with_default: bool) -> Fleet {
    let origin = Origin::start("origin").await;
    let pki = Pki::new();
    let dir = scratch_dir();
    let a = pki.issue(&dir, "a", &["a.test"]);
    let b = pki.issue(&dir, "b", &["*.b.test"]);
    let default = pki.issue(&dir, "default", &["c.test", "unknown.test"]);
    let config = fleet_config(&origin, &a, &b, with_default.then_some(&default));
    std::fs::write(dir.join("outpost.toml"), &config).unwrap();
    let node = Node::spawn(
        &[
            "serve",
            "--config",
            dir.join("outpost.toml").to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        &dir,
    );
    Fleet {
        origin,
        node,
        pki,
        a,
        b,
        default,
        dir,
    }
}

impl Fleet {
    fn tls(&self) -> std::net::SocketAddr {
        self.node.tls.expect("the node listens for TLS")
    }

    /// `POST /reload` on the admin API.
    async fn reload(&self) -> Resp {
        let post = http::Method::POST;
        Client::new()
            .admin(&self.node, post, "/reload", Some(ADMIN_TOKEN), "")
            .await
    }

    async fn connect(&self, sni: &str, alpn: &[&[u8]]) -> Result<TlsConnection, String> {
        TlsConnection::open(self.tls(), sni, self.pki.client(alpn)).await
    }
}

/// The status of a GET on an open connection.
async fn status(conn: &mut TlsConnection, host: &str, path: &str) -> StatusCode {
    conn.get(host, path).await.unwrap().status
}

#[tokio::test]
async fn sni_picks_each_tenants_certificate_and_other_names_get_the_default() {
    let f = fleet(true).await;
    for (sni, expected) in [
        ("a.test", &f.a),
        ("www.b.test", &f.b),
        ("c.test", &f.default),
        ("unknown.test", &f.default),
    ] {
        let conn = f.connect(sni, &[HTTP1]).await.unwrap();
        assert!(
            conn.certificate == expected.der,
            "SNI {sni} got another certificate"
        );
    }
    let mut conn = f.connect("www.b.test", &[HTTP1]).await.unwrap();
    let r = conn.get("www.b.test", "/wild").await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    let seen = f.origin.seen();
    let forwarded = seen.last().unwrap();
    assert_eq!(forwarded.target, "/wild");
    assert_eq!(
        forwarded.headers.get("x-forwarded-proto").unwrap(),
        "https",
        "the request's scheme is https"
    );
}

#[tokio::test]
async fn without_a_default_certificate_an_unknown_name_fails_the_handshake() {
    let f = fleet(false).await;
    let refused = f.connect("c.test", &[HTTP1]).await;
    assert!(refused.is_err(), "a handshake for c.test succeeded");
    // The tenants with certificates of their own are still served.
    let mut conn = f.connect("a.test", &[HTTP1]).await.unwrap();
    assert_eq!(status(&mut conn, "a.test", "/").await, StatusCode::OK);
}

#[tokio::test]
async fn h2_by_alpn_and_another_tenants_host_on_that_connection_gets_421() {
    let f = fleet(true).await;
    let mut conn = f.connect("a.test", &[H2, HTTP1]).await.unwrap();
    assert_eq!(conn.alpn.as_deref(), Some(H2));
    let r = conn.get("a.test", "/mine").await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    for host in ["c.test", "www.b.test"] {
        let r = conn.get(host, "/theirs").await.unwrap();
        assert_eq!(r.status, StatusCode::MISDIRECTED_REQUEST, "{host}");
    }
    assert_eq!(
        f.origin.hits("/theirs"),
        0,
        "a misdirected request was forwarded"
    );
    // The same holds on the default certificate's connections: a tenant
    // with its own certificate is not reachable through them.
    let mut shared = f.connect("c.test", &[H2]).await.unwrap();
    let r = shared.get("a.test", "/theirs").await.unwrap();
    assert_eq!(r.status, StatusCode::MISDIRECTED_REQUEST);
    assert_eq!(status(&mut shared, "c.test", "/c").await, StatusCode::OK);
    // And the connection is still good for its own tenant.
    assert_eq!(status(&mut conn, "a.test", "/again").await, StatusCode::OK);
}

#[tokio::test]
async fn a_certificate_replaced_on_disk_is_served_after_reload_and_open_connections_keep_working() {
    let f = fleet(true).await;
    let mut open = f.connect("a.test", &[H2]).await.unwrap();
    assert!(open.certificate == f.a.der);
    let renewed = f.pki.issue(&f.dir, "a", &["a.test"]);
    assert!(renewed.der != f.a.der);

    let r = f.reload().await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let fresh = f.connect("a.test", &[H2]).await.unwrap();
    assert!(
        fresh.certificate == renewed.der,
        "the old certificate is still served"
    );
    let r = open.get("a.test", "/still-open").await.unwrap();
    assert_eq!(r.status, StatusCode::OK);

    // SIGHUP does the same.
    let again = f.pki.issue(&f.dir, "a", &["a.test"]);
    f.node.hangup();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let conn = f.connect("a.test", &[H2]).await.unwrap();
        if conn.certificate == again.der {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP did not reload: {}",
            f.node.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_broken_certificate_on_reload_keeps_the_old_one_serving() {
    let f = fleet(true).await;
    std::fs::write(&f.a.cert, "not a certificate").unwrap();
    let r = f.reload().await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text().contains("tenant[0].tls.cert"), "{}", r.text());
    assert!(r.text().contains("a.pem"), "{}", r.text());
    let mut conn = f.connect("a.test", &[HTTP1]).await.unwrap();
    assert!(conn.certificate == f.a.der);
    assert_eq!(status(&mut conn, "a.test", "/").await, StatusCode::OK);
}

#[tokio::test]
async fn force_https_answers_plain_http_with_a_308_to_the_https_url() {
    let f = fleet(true).await;
    let client = Client::new();
    let r = client.get(&f.node, "a.test", "/page?x=1").await;
    assert_eq!(r.status, StatusCode::PERMANENT_REDIRECT);
    let port = f.tls().port();
    assert_eq!(
        r.header("location"),
        Some(format!("https://a.test:{port}/page?x=1").as_str())
    );
    assert_eq!(f.origin.hits("/page?x=1"), 0);
    // Tenants without force_https are served in plain text.
    assert_eq!(
        client.get(&f.node, "c.test", "/plain").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn tls_1_2_and_1_3_are_served_and_a_second_connection_resumes() {
    let f = fleet(true).await;
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let config = f.pki.client_versions(&[HTTP1], &[version]);
        let mut first = TlsConnection::open(f.tls(), "a.test", config.clone())
            .await
            .unwrap();
        assert!(!first.resumed);
        assert_eq!(status(&mut first, "a.test", "/").await, StatusCode::OK);
        let mut second = TlsConnection::open(f.tls(), "a.test", config)
            .await
            .unwrap();
        assert!(
            second.resumed,
            "{version:?}: the second handshake was a full one"
        );
        assert_eq!(status(&mut second, "a.test", "/").await, StatusCode::OK);
    }
}

#[tokio::test]
async fn an_ocsp_response_from_a_file_is_stapled() {
    let origin = Origin::start("origin").await;
    let pki = Pki::new();
    let dir = scratch_dir();
    let a = pki.issue(&dir, "a", &["a.test"]);
    let ocsp = b"an OCSP response, as the CA sent it".to_vec();
    std::fs::write(dir.join("a.ocsp"), &ocsp).unwrap();
    let ocsp_file = dir.join("a.ocsp").display().to_string();
    let tls = format!("{}ocsp = {ocsp_file:?}\n", a.toml());
    let node = Node::start(&tls_tenant(&tls, &[("origin", &origin.url())]));
    let (client, stapled) = pki.client_recording_ocsp();
    let mut conn = TlsConnection::open(node.tls.unwrap(), "a.test", client)
        .await
        .unwrap();
    assert_eq!(*stapled.lock().unwrap(), ocsp);
    assert_eq!(status(&mut conn, "a.test", "/").await, StatusCode::OK);
}

/// A TLS listener without a default certificate and tenant `a` (`a.test`)
/// with this `[tenant.tls]` table.
fn tls_tenant(tls: &str, backends: &[(&str, &str)]) -> String {
    let fields = format!("[tenant.tls]\n{tls}");
    let tenant = tenant_with("a", &["a.test"], "builtin:default", backends, &fields);
    format!("{}{tenant}", server_tls(None))
}

#[tokio::test]
async fn bad_certificates_are_refused_at_load_naming_the_field_and_file() {
    let pki = Pki::new();
    let dir = scratch_dir();
    let tenant = |tls: &str| tls_tenant(tls, &[]);
    let expired = pki.issue_with(&dir, "expired", &["a.test"], |p| {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    let err = refused_config(&dir, "expired.toml", &tenant(&expired.toml()));
    assert!(
        err.contains("tenant[0].tls.cert") && err.contains("expired.pem"),
        "{err}"
    );
    assert!(err.contains("expired on"), "{err}");

    let other = pki.issue(&dir, "other", &["a.test"]);
    let wrong = pki.issue(&dir, "wrong", &["a.test"]);
    let mismatched = format!(
        "cert = {:?}\nkey = {:?}\n",
        other.cert.display().to_string(),
        wrong.key.display().to_string()
    );
    let err = refused_config(&dir, "mismatched.toml", &tenant(&mismatched));
    assert!(
        err.contains("tenant[0].tls.key") && err.contains("wrong.key"),
        "{err}"
    );
    assert!(err.contains("is not the key of the certificate"), "{err}");

    let elsewhere = pki.issue(&dir, "elsewhere", &["b.test"]);
    let err = refused_config(&dir, "elsewhere.toml", &tenant(&elsewhere.toml()));
    assert!(err.contains("not valid for host \"a.test\""), "{err}");
    assert!(err.contains("\"b.test\""), "{err}");

    let missing = "cert = \"nowhere.pem\"\nkey = \"nowhere.key\"\n";
    let err = refused_config(&dir, "missing.toml", &tenant(missing));
    assert!(err.contains("nowhere.pem"), "{err}");

    let no_listener = tenant_with(
        "a",
        &["a.test"],
        "builtin:default",
        &[],
        &format!("[tenant.tls]\n{}", other.toml()),
    );
    let err = refused_config(&dir, "no-listener.toml", &no_listener);
    assert!(err.contains("needs a TLS listener"), "{err}");
}

#[tokio::test]
async fn the_admin_api_over_tls_requires_the_token() {
    let pki = Pki::new();
    let dir = scratch_dir();
    let admin = pki.issue(&dir, "admin", &["admin.test"]);
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = {ADMIN_TOKEN:?}\n[admin.tls]\n{}\n{}",
        admin.toml(),
        tenant("t", &["t.test"], "builtin:default", &[])
    );
    let node = Node::start(&config);
    let addr = node.admin.unwrap();
    let mut conn = TlsConnection::open(addr, "admin.test", pki.client(&[HTTP1]))
        .await
        .unwrap();
    assert!(conn.certificate == admin.der);
    let r = conn.get("admin.test", "/tenants").await.unwrap();
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let r = conn
        .request(
            http::Method::GET,
            "admin.test",
            "/tenants",
            &[("authorization", &auth)],
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.text().contains("\"t\""), "{}", r.text());
}
