//! The status page in a real browser (headless Chromium): the token is
//! entered once and kept in session storage, never in the URL; the table
//! shows every tenant with its hit ratio. And `outpost status`, the same
//! summary in the terminal.

use std::process::Command;
use std::time::Duration;

use outpost_e2e::browser::Browser;
use outpost_e2e::*;

/// Two tenants; `shop` gets 1 miss and 2 hits (hit ratio 66.7 %), `blog`
/// 1 miss.
async fn node_with_traffic() -> (Origin, Node) {
    let origin = Origin::start("origin").await;
    let config = format!(
        "{}{}{}",
        admin_section(),
        tenant(
            "shop",
            &["shop.test"],
            "builtin:default",
            &[("origin", &origin.url())]
        ),
        tenant(
            "blog",
            &["blog.test"],
            "builtin:default",
            &[("origin", &origin.url())]
        ),
    );
    let node = Node::start(&config);
    let client = Client::new();
    for _ in 0..3 {
        client.get(&node, "shop.test", "/item").await;
    }
    client.get(&node, "blog.test", "/post").await;
    (origin, node)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_status_page_asks_for_the_token_once_and_shows_each_tenant_with_its_hit_ratio() {
    let (_origin, node) = node_with_traffic().await;
    let page = format!("http://{}/", node.admin.unwrap());
    let mut browser = Browser::start().await;
    browser.navigate(&page).await;
    let form = browser
        .wait_for(
            "!document.getElementById('login').hidden",
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(form, true, "the page asks for the token first");
    browser
        .eval(&format!(
            "document.getElementById('token').value = '{ADMIN_TOKEN}'; \
             document.getElementById('sign-in').click(); true"
        ))
        .await;
    let rows = browser
        .wait_for(
            "Array.from(document.querySelectorAll('#tenants tbody tr'))\
               .map(r => [r.dataset.tenant, r.querySelector('.hit-ratio').textContent])",
            Duration::from_secs(20),
        )
        .await;
    let rows: Vec<(String, String)> = serde_json::from_value(rows).unwrap();
    assert!(rows.contains(&("shop".into(), "66.7%".into())), "{rows:?}");
    assert!(rows.contains(&("blog".into(), "0.0%".into())), "{rows:?}");
    let members = browser
        .eval("document.querySelectorAll('#backends tbody tr').length")
        .await;
    assert_eq!(members, 2);
    // The token lives in the tab's session storage, not in the address.
    assert_eq!(
        browser
            .eval("sessionStorage.getItem('outpost-admin-token')")
            .await,
        ADMIN_TOKEN
    );
    let address = browser.eval("location.href").await;
    assert!(
        !address.as_str().unwrap().contains(ADMIN_TOKEN),
        "{address}"
    );
    // A second refresh computes a rate from two snapshots.
    browser
        .wait_for(
            "document.querySelector('#tenants tbody tr td:nth-child(4)').textContent !== '–'",
            Duration::from_secs(20),
        )
        .await;

    let png = browser.screenshot().await;
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let shot = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/status-page.png");
    std::fs::write(&shot, png).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_holds_no_data_and_the_status_api_needs_the_token() {
    let (_origin, node) = node_with_traffic().await;
    let client = Client::new();
    let page = client.admin(&node, http::Method::GET, "/", None, "").await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("<table id=\"tenants\">"));
    assert!(
        !page.text().contains("shop"),
        "no tenant data in the page itself"
    );
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    let anonymous = client
        .admin(&node, http::Method::GET, "/status", None, "")
        .await;
    assert_eq!(anonymous.status, 401);
    let status = json(
        &client
            .admin(&node, http::Method::GET, "/status", Some(ADMIN_TOKEN), "")
            .await,
    );
    let shop = status["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "shop")
        .unwrap();
    assert_eq!(shop["requests"], 3);
    assert!((shop["hit_ratio"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-9);
    assert!(shop["p99_ms"].as_f64().unwrap() > 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn outpost_status_prints_every_tenant_and_member_in_the_terminal() {
    let (_origin, node) = node_with_traffic().await;
    let out = Command::new(outpost_bin())
        .args([
            "status",
            "--admin",
            &format!("http://{}", node.admin.unwrap()),
        ])
        .env("OUTPOST_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shop = text.lines().find(|l| l.starts_with("shop ")).expect(&text);
    assert!(shop.contains("66.7"), "{shop}");
    assert!(text.lines().any(|l| l.starts_with("blog ")), "{text}");
    assert_eq!(text.matches("backend ").count(), 2, "{text}");

    let refused = Command::new(outpost_bin())
        .args([
            "status",
            "--admin",
            &format!("http://{}", node.admin.unwrap()),
        ])
        .env("OUTPOST_ADMIN_TOKEN", "wrong")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("token was refused"));
}
