//! The admin API: auth, deploys (good and bad), activation, rollback,
//! purge, hot swap under load, restart without recompilation.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use outpost_e2e::{example_wasm as wasm, json, tenant, Client, Node, Origin, ADMIN_TOKEN as TOKEN};

fn admin_config(origin: &Origin) -> String {
    outpost_e2e::one_tenant(origin)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_refuses_requests_without_the_token() {
    let origin = Origin::start("origin").await;
    let node = Node::start(&admin_config(&origin));
    let client = Client::new();
    let none = client
        .admin(&node, Method::GET, "/tenants/t", None, "")
        .await;
    assert_eq!(none.status, 401);
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));
    let wrong = client
        .admin(
            &node,
            Method::GET,
            "/tenants/t",
            Some("wrong-token-0123456789abc"),
            "",
        )
        .await;
    assert_eq!(wrong.status, 401);
    let deploy = client
        .admin(
            &node,
            Method::PUT,
            "/tenants/t/modules",
            None,
            wasm("misbehaving"),
        )
        .await;
    assert_eq!(deploy.status, 401);
    let ok = client
        .admin(&node, Method::GET, "/tenants/t", Some(TOKEN), "")
        .await;
    assert_eq!(ok.status, 200);
    assert!(json(&ok)["active"].as_str().unwrap().starts_with("sha256:"));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_modules_are_rejected_with_a_reason_and_the_active_one_keeps_serving() {
    let origin = Origin::start("origin").await;
    let node = Node::start(&admin_config(&origin));
    let client = Client::new();
    let before = json(
        &client
            .admin(&node, Method::GET, "/tenants/t", Some(TOKEN), "")
            .await,
    )["active"]
        .clone();

    // The same policy, claiming a WIT package version this node does not
    // implement (same-length edit of its interface names).
    let mut other_version = wasm("misbehaving");
    for (from, to) in [
        (
            &b"outpost:edge/host@0.3.0"[..],
            &b"outpost:edge/host@0.9.0"[..],
        ),
        (b"outpost:edge/types@0.3.0", b"outpost:edge/types@0.9.0"),
        (b"outpost:edge/policy@0.3.0", b"outpost:edge/policy@0.9.0"),
    ] {
        let mut i = 0;
        while let Some(at) = other_version[i..]
            .windows(from.len())
            .position(|w| w == from)
        {
            other_version[i + at..i + at + from.len()].copy_from_slice(to);
            i += at + from.len();
        }
    }
    let cases: [(&str, Vec<u8>, &str); 5] = [
        ("text", b"hello".to_vec(), "not a WebAssembly binary"),
        ("other WIT version", other_version, "wrong WIT version"),
        (
            "core module",
            b"\0asm\x01\0\0\0".to_vec(),
            "not a component",
        ),
        ("no exports", wasm("no-exports"), "outpost:edge/policy"),
        ("traps", wasm("always-trap"), "trap in smoke call"),
    ];
    for (what, body, expected) in cases {
        let r = client
            .admin(
                &node,
                Method::PUT,
                "/tenants/t/modules?activate=true",
                Some(TOKEN),
                body,
            )
            .await;
        assert_eq!(r.status, 400, "{what}: {}", r.text());
        let message = json(&r)["error"].as_str().unwrap().to_string();
        assert!(message.contains(expected), "{what}: {message}");
    }
    let after = json(
        &client
            .admin(&node, Method::GET, "/tenants/t", Some(TOKEN), "")
            .await,
    )["active"]
        .clone();
    assert_eq!(before, after);
    assert_eq!(
        client.get(&node, "t.test", "/still").await.text(),
        "origin /still"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deployed_version_is_activated_and_rolled_back() {
    let origin = Origin::start("origin").await;
    let node = Node::start(&admin_config(&origin));
    let client = Client::new();
    let deployed = client
        .admin(
            &node,
            Method::PUT,
            "/tenants/t/modules",
            Some(TOKEN),
            wasm("misbehaving"),
        )
        .await;
    assert_eq!(deployed.status, 201, "{}", deployed.text());
    let version = json(&deployed)["version"].as_str().unwrap().to_string();
    // Deployed, not active yet.
    assert_eq!(
        client.get(&node, "t.test", "/vars/greeting").await.text(),
        "origin /vars/greeting"
    );

    let body = format!("{{\"version\": \"{version}\"}}");
    let r = client
        .admin(
            &node,
            Method::POST,
            "/tenants/t/activate",
            Some(TOKEN),
            body,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        client.get(&node, "t.test", "/vars/greeting").await.text(),
        "<unset>"
    );

    let r = client
        .admin(&node, Method::POST, "/tenants/t/rollback", Some(TOKEN), "")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        client.get(&node, "t.test", "/vars/other").await.text(),
        "origin /vars/other"
    );

    let info = json(
        &client
            .admin(&node, Method::GET, "/tenants/t", Some(TOKEN), "")
            .await,
    );
    assert_eq!(info["versions"].as_array().unwrap().len(), 2);
    let unknown = client
        .admin(
            &node,
            Method::POST,
            "/tenants/t/activate",
            Some(TOKEN),
            "{\"version\": \"sha256:00\"}",
        )
        .await;
    assert_eq!(unknown.status, 409);
}

#[tokio::test(flavor = "multi_thread")]
async fn purge_by_key_and_purge_all_make_the_next_request_a_miss() {
    let origin = Origin::start("origin").await;
    let node = Node::start(&admin_config(&origin));
    let client = Client::new();
    for path in ["/a", "/b"] {
        client.get(&node, "t.test", path).await;
        client
            .expect_cache_status(&node, "t.test", path, "hit")
            .await;
    }
    let r = client
        .admin(
            &node,
            Method::POST,
            "/tenants/t/purge",
            Some(TOKEN),
            "{\"key\": \"t.test/a\"}",
        )
        .await;
    assert_eq!(json(&r)["found"], true, "{}", r.text());
    client
        .expect_cache_status(&node, "t.test", "/a", "fwd=uri-miss")
        .await;
    client
        .expect_cache_status(&node, "t.test", "/b", "hit")
        .await;

    client
        .admin(
            &node,
            Method::POST,
            "/tenants/t/purge",
            Some(TOKEN),
            "{\"all\": true}",
        )
        .await;
    client
        .expect_cache_status(&node, "t.test", "/a", "fwd=uri-miss")
        .await;
    client
        .expect_cache_status(&node, "t.test", "/b", "fwd=uri-miss")
        .await;
    assert_eq!(origin.hits("/a"), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_activations_under_load_fail_no_request() {
    let origin = Origin::start("origin").await;
    let node = Arc::new(Node::start(&admin_config(&origin)));
    let client = Client::new();
    let initial = json(
        &client
            .admin(&node, Method::GET, "/tenants/t", Some(TOKEN), "")
            .await,
    )["active"]
        .as_str()
        .unwrap()
        .to_string();
    let deployed = client
        .admin(
            &node,
            Method::PUT,
            "/tenants/t/modules",
            Some(TOKEN),
            wasm("misbehaving"),
        )
        .await;
    let candidate = json(&deployed)["version"].as_str().unwrap().to_string();

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for _ in 0..8 {
        let (node, client, stop, ok, failed) = (
            node.clone(),
            client.clone(),
            stop.clone(),
            ok.clone(),
            failed.clone(),
        );
        load.push(tokio::spawn(async move {
            // Bounded: stops when told, or after 20,000 requests.
            for _ in 0..20_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let r = client.get(&node, "t.test", "/vars/greeting").await;
                let valid = r.status == 200
                    && (r.text() == "<unset>" || r.text() == "origin /vars/greeting");
                if valid {
                    ok.fetch_add(1, Ordering::Relaxed)
                } else {
                    failed.fetch_add(1, Ordering::Relaxed)
                };
            }
        }));
    }
    for i in 0..100 {
        let version = if i % 2 == 0 { &candidate } else { &initial };
        let body = format!("{{\"version\": \"{version}\"}}");
        let r = client
            .admin(
                &node,
                Method::POST,
                "/tenants/t/activate",
                Some(TOKEN),
                body,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("swap under load: {ok} requests answered, {failed} failed, 100 activations");
    assert_eq!(failed, 0);
    assert!(ok > 100, "only {ok} requests ran during the swaps");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_loads_policies_from_the_compiled_cache() {
    let origin = Origin::start("origin").await;
    let dir = outpost_e2e::scratch_dir();
    let config = format!(
        "[runtime]\ncompiled_cache_dir = {:?}\n\n{}",
        dir.join("compiled").display().to_string(),
        tenant(
            "t",
            &["t.test"],
            "builtin:default",
            &[("origin", &origin.url())]
        )
    );
    let first = Node::start(&config);
    assert!(first.log().contains("policy compiled"), "{}", first.log());
    first.stop();
    let second = Node::start(&config);
    assert!(
        !second.log().contains("policy compiled"),
        "{}",
        second.log()
    );
    assert!(second.log().contains("compiled cache"), "{}", second.log());
    assert_eq!(
        Client::new().get(&second, "t.test", "/x").await.text(),
        "origin /x"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn purge_by_url_uses_the_policys_key_for_that_url() {
    let origin = Origin::start("origin").await;
    let node = Node::start(&admin_config(&origin));
    let client = Client::new();
    client.get(&node, "t.test", "/page?x=1").await;
    client
        .expect_cache_status(&node, "t.test", "/page?x=1", "hit")
        .await;
    let r = client
        .admin(
            &node,
            Method::POST,
            "/tenants/t/purge",
            Some(TOKEN),
            "{\"url\": \"http://t.test/page?x=1\"}",
        )
        .await;
    assert_eq!(json(&r)["found"], true, "{}", r.text());
    client
        .expect_cache_status(&node, "t.test", "/page?x=1", "fwd=uri-miss")
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_concurrent_tenant_puts_leave_twenty_tenants() {
    let origin = Origin::start("origin").await;
    let node = Node::start(&admin_config(&origin));
    let client = Client::new();
    let puts = (0..20).map(|i| {
        let client = client.clone();
        let node = &node;
        let body = format!(
            "hosts = [\"c{i}.test\"]\npolicy = \"builtin:default\"\n\
             [backends.origin]\nurl = \"{}\"\n",
            origin.url()
        );
        async move {
            client
                .admin(
                    node,
                    Method::PUT,
                    &format!("/tenants/c{i}"),
                    Some(TOKEN),
                    body,
                )
                .await
        }
    });
    for r in futures::future::join_all(puts).await {
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let listed = json(
        &client
            .admin(&node, Method::GET, "/tenants", Some(TOKEN), "")
            .await,
    );
    let ids: Vec<&str> = listed["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 21, "{ids:?}");
    for i in 0..20 {
        let r = client.get(&node, &format!("c{i}.test"), "/p").await;
        assert_eq!(r.status, 200, "c{i}.test: {}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_put_with_a_bad_field_names_the_field_and_line() {
    let origin = Origin::start("origin").await;
    let node = Node::start(&admin_config(&origin));
    let client = Client::new();
    let body = "hosts = [\"n.test\"]\npolicy = \"builtin:default\"\n\
                [backends.origin]\nurl = \"gopher://x\"\n";
    let r = client
        .admin(&node, Method::PUT, "/tenants/n", Some(TOKEN), body)
        .await;
    assert_eq!(r.status, 400);
    let message = json(&r)["error"].as_str().unwrap().to_string();
    assert!(message.contains("PUT /tenants/n"), "{message}");
    assert!(message.contains("backends.origin.url"), "{message}");
    assert!(message.contains("line 4"), "{message}");
    assert!(!message.contains("config config"), "{message}");
    assert_eq!(client.get(&node, "n.test", "/").await.status, 404);
}
