//! Canaries, preview, runtime tenant changes, sandbox limits and isolation,
//! and the dev server.

use std::time::Duration;

use http::Method;
use outpost_e2e::{
    example_wasm as wasm, json, tenant, tenant_with, Client, Node, Origin, Reply, Resp,
    ADMIN_TOKEN as TOKEN,
};

fn admin_config(origin: &Origin, extra_limits: &str) -> String {
    let mut config = outpost_e2e::one_tenant(origin);
    if !extra_limits.is_empty() {
        config.push_str(&format!("[tenant.limits]\n{extra_limits}\n"));
    }
    config
}

async fn deploy(client: &Client, node: &Node, name: &str) -> String {
    let r = client
        .admin(
            node,
            Method::PUT,
            "/tenants/t/modules",
            Some(TOKEN),
            wasm(name),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    json(&r)["version"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_canary_takes_its_share_of_requests_sticky_by_header() {
    let origin = Origin::start("origin").await;
    let node = Node::start(&admin_config(&origin, ""));
    let client = Client::new();
    let candidate = deploy(&client, &node, "misbehaving").await;
    let body =
        format!("{{\"version\": \"{candidate}\", \"percent\": 30, \"sticky_header\": \"x-user\"}}");
    let r = client
        .admin(&node, Method::POST, "/tenants/t/canary", Some(TOKEN), body)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());

    let mut on_candidate = 0;
    for user in 0..1000 {
        let user = user.to_string();
        let r = client
            .get_with(&node, "t.test", "/vars/greeting", &[("x-user", &user)])
            .await;
        assert_eq!(r.status, 200);
        if r.text() == "<unset>" {
            on_candidate += 1;
            // Sticky: the same user stays on the candidate.
            let again = client
                .get_with(&node, "t.test", "/vars/greeting", &[("x-user", &user)])
                .await;
            assert_eq!(again.text(), "<unset>");
        }
    }
    assert!(
        (250..=350).contains(&on_candidate),
        "{on_candidate} of 1000 on the candidate"
    );

    let r = client
        .admin(
            &node,
            Method::POST,
            "/tenants/t/canary/promote",
            Some(TOKEN),
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        client.get(&node, "t.test", "/vars/greeting").await.text(),
        "<unset>"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_canary_is_aborted_automatically() {
    let origin = Origin::start("origin").await;
    let node = Node::start(&admin_config(&origin, ""));
    let client = Client::new();
    let candidate = deploy(&client, &node, "misbehaving").await;
    let body = format!(
        "{{\"version\": \"{candidate}\", \"percent\": 50, \"sticky_header\": \"x-user\", \
         \"auto_rollback\": {{\"margin\": 0.1, \"min_requests\": 10}}}}"
    );
    client
        .admin(&node, Method::POST, "/tenants/t/canary", Some(TOKEN), body)
        .await;
    // The candidate traps on /trap; the active version fetches it.
    for user in 0..200 {
        let user = user.to_string();
        client
            .get_with(&node, "t.test", "/trap", &[("x-user", &user)])
            .await;
    }
    let info = json(
        &client
            .admin(&node, Method::GET, "/tenants/t", Some(TOKEN), "")
            .await,
    );
    assert!(info["canary"].is_null(), "canary still running: {info}");
    assert!(node.log().contains("canary aborted"), "{}", node.log());
    // Everything is served by the active version again.
    for user in 0..20 {
        let r = client
            .get_with(&node, "t.test", "/trap", &[("x-user", &user.to_string())])
            .await;
        assert_eq!(r.status, 200);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn preview_reports_changed_cache_keys_and_nothing_for_the_same_policy() {
    let origin = Origin::start("origin").await;
    let node = Node::start(&admin_config(&origin, ""));
    let client = Client::new();
    for path in ["/a?b=2&a=1", "/a?a=1&b=2", "/c?utm_source=x"] {
        client.get(&node, "t.test", path).await;
    }
    let active = json(
        &client
            .admin(&node, Method::GET, "/tenants/t", Some(TOKEN), "")
            .await,
    )["active"]
        .as_str()
        .unwrap()
        .to_string();
    let same = client
        .admin(
            &node,
            Method::POST,
            "/tenants/t/preview",
            Some(TOKEN),
            format!("{{\"version\": \"{active}\"}}"),
        )
        .await;
    let same = json(&same);
    assert_eq!(same["requests"], 3, "{same}");
    assert_eq!(same["changed"], 0, "{same}");

    let candidate = deploy(&client, &node, "cache-key").await;
    let report = client
        .admin(
            &node,
            Method::POST,
            "/tenants/t/preview",
            Some(TOKEN),
            format!("{{\"version\": \"{candidate}\"}}"),
        )
        .await;
    let report = json(&report);
    assert_eq!(report["changed"], 3, "{report}");
    assert_eq!(report["distinct_cache_keys"]["active"], 3, "{report}");
    assert_eq!(report["distinct_cache_keys"]["candidate"], 2, "{report}");
    assert!(report["differences"][0]["candidate"]["lookup"]["key"]
        .as_str()
        .unwrap()
        .starts_with("desktop|"));
    // The preview sent nothing to the origin.
    assert_eq!(origin.total(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn tenants_are_added_and_removed_at_runtime() {
    let origin = Origin::start("origin").await;
    let node = Node::start(&admin_config(&origin, ""));
    let client = Client::new();
    assert_eq!(client.get(&node, "new.test", "/x").await.status, 404);
    let body = format!(
        "hosts = [\"new.test\"]\npolicy = \"builtin:default\"\n[backends.origin]\nurl = \"{}\"\n",
        origin.url()
    );
    let r = client
        .admin(&node, Method::PUT, "/tenants/new", Some(TOKEN), body)
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        client.get(&node, "new.test", "/x").await.text(),
        "origin /x"
    );
    // The other tenant kept its state (its cache).
    client.get(&node, "t.test", "/kept").await;

    let bad = client
        .admin(
            &node,
            Method::PUT,
            "/tenants/bad",
            Some(TOKEN),
            "hosts = [\"t.test\"]\npolicy = \"builtin:default\"\n",
        )
        .await;
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("hosts"), "{}", bad.text());

    let r = client
        .admin(&node, Method::DELETE, "/tenants/new", Some(TOKEN), "")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(client.get(&node, "new.test", "/x").await.status, 404);
    client
        .expect_cache_status(&node, "t.test", "/kept", "hit")
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_config_file() {
    let origin = Origin::start("origin").await;
    let dir = outpost_e2e::scratch_dir();
    let path = dir.join("outpost.toml");
    let one = tenant(
        "a",
        &["a.test"],
        "builtin:default",
        &[("origin", &origin.url())],
    );
    std::fs::write(&path, &one).unwrap();
    let node = Node::spawn(
        &[
            "serve",
            "--config",
            path.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        &dir,
    );
    let client = Client::new();
    assert_eq!(client.get(&node, "b.test", "/x").await.status, 404);

    // A broken file is refused and the running tenants stay.
    std::fs::write(&path, "[[tenant]]\nid = 3\n").unwrap();
    node.hangup();
    let two = format!(
        "{one}\n{}",
        tenant(
            "b",
            &["b.test"],
            "builtin:default",
            &[("origin", &origin.url())]
        )
    );
    let mut served = false;
    let mut refused = false;
    for _ in 0..100 {
        if node.log().contains("reload failed") {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused, "no \"reload failed\" line: {}", node.log());
    // The refusal names the file and the field at fault.
    assert!(node.log().contains("tenant[0].id"), "{}", node.log());
    assert_eq!(client.get(&node, "a.test", "/x").await.status, 200);
    std::fs::write(&path, two).unwrap();
    node.hangup();
    for _ in 0..100 {
        if client.get(&node, "b.test", "/x").await.status == 200 {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "b.test never served: {}", node.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_subrequest_limit_is_enforced() {
    let origin = Origin::start("origin").await;
    let mut config = tenant(
        "t",
        &["t.test"],
        "example:misbehaving",
        &[("origin", &origin.url())],
    );
    config.push_str("[tenant.limits]\nmax_subrequests = 2\n");
    let node = Node::start(&config);
    let client = Client::new();
    assert_eq!(
        client
            .get(&node, "t.test", "/fetch-many/2/origin")
            .await
            .text(),
        "2 fetches\n"
    );
    let r = client.get(&node, "t.test", "/fetch-many/3/origin").await;
    assert_eq!(r.status, 502);
    assert!(
        r.text().contains("fetch 2 failed: LimitExceeded"),
        "{}",
        r.text()
    );
    assert_eq!(origin.total(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_concurrency_limit_turns_excess_requests_into_503() {
    let origin = Origin::start("origin").await;
    origin.reply(
        "/slow",
        Reply::ok()
            .only("cache-control", "no-store")
            .delay(Duration::from_millis(1500)),
    );
    // A policy with a response hook (its lookups end in `on_response`): a
    // request holds its instance, and so the slot, through the origin's
    // round trip. (One that declares none gives the slot back as soon as
    // its request hook returns.)
    let mut config = tenant(
        "t",
        &["t.test"],
        "example:misbehaving",
        &[("origin", &origin.url())],
    );
    config.push_str("[tenant.limits]\nmax_concurrent = 1\n");
    let node = Node::start(&config);
    let client = Client::new();
    let (a, b) = tokio::join!(client.get(&node, "t.test", "/slow"), async {
        // The first request holds the tenant's only slot once it reached
        // the origin (which answers after 1.5 s). A new URL, so the policy
        // must run for it (a repeat could be decided by the memo).
        while origin.total() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        client.get(&node, "t.test", "/slow?other").await
    });
    assert_eq!(a.status, 200);
    assert_eq!(b.status, 503);
    assert_eq!(b.header("x-outpost-error"), Some("concurrency_limit"));
    assert_eq!(client.get(&node, "t.test", "/slow").await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_looping_tenant_does_not_stop_a_healthy_one_from_answering() {
    let origin = Origin::start("origin").await;
    let mut config = tenant(
        "bad",
        &["bad.test"],
        "example:misbehaving",
        &[("origin", &origin.url())],
    );
    config.push_str("[tenant.limits]\ncpu_ms = 100\n");
    config.push_str(&tenant(
        "good",
        &["good.test"],
        "builtin:default",
        &[("origin", &origin.url())],
    ));
    let node = Node::start(&config);
    let client = Client::new();
    let loops = (0..16).map(|_| client.get(&node, "bad.test", "/loop"));
    let healthy = async {
        let mut statuses = Vec::new();
        for i in 0..100 {
            statuses.push(
                client
                    .get(&node, "good.test", &format!("/ok/{}", i % 10))
                    .await
                    .status
                    .as_u16(),
            );
        }
        statuses
    };
    let (looped, statuses) = tokio::join!(futures::future::join_all(loops), healthy);
    // Each looping request is cut at its CPU deadline (500), unless the
    // node's fair share held the looping tenant first: then it is shed
    // with a 503 that says so and when to retry (tests/fair_share.rs
    // covers the share).
    fn outcome(r: &Resp) -> (u16, Option<&str>, Option<&str>) {
        (
            r.status.as_u16(),
            r.header("x-outpost-error"),
            r.header("retry-after"),
        )
    }
    assert!(
        looped.iter().all(|r| matches!(
            outcome(r),
            (500, Some("cpu_limit"), _) | (503, Some("cpu_share"), Some("1"))
        )),
        "{:?}",
        looped.iter().map(outcome).collect::<Vec<_>>()
    );
    assert!(
        looped.iter().any(|r| r.status == 500),
        "at least one looping guest ran to its deadline"
    );
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert!(
        node.log().contains("tenant=\"bad\""),
        "the failure log names the tenant"
    );
}

/// A policy crate outside the repository, as a developer would have.
fn scratch_policy_crate(body: &str) -> std::path::PathBuf {
    let dir = outpost_e2e::scratch_dir().join("my-policy");
    std::fs::create_dir_all(dir.join("src")).unwrap();
    let guest = concat!(env!("CARGO_MANIFEST_DIR"), "/../guest");
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"my-policy\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[lib]\ncrate-type = [\"cdylib\"]\n\n\
             [dependencies]\noutpost-guest = {{ path = {guest:?} }}\n\n[workspace]\n"
        ),
    )
    .unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/../rust-toolchain.toml"),
        dir.join("rust-toolchain.toml"),
    )
    .unwrap();
    write_policy(&dir, body);
    dir
}

fn write_policy(dir: &std::path::Path, body: &str) {
    let source = format!(
        "use outpost_guest::{{export_policy, Decision, Policy, Request, Response}};\n\
         struct Dev;\n\
         impl Policy for Dev {{\n    fn on_request(_req: &Request) -> Decision {{\n        {body}\n    }}\n}}\n\
         export_policy!(Dev);\n"
    );
    std::fs::write(dir.join("src/lib.rs"), source).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dev_server_rebuilds_and_swaps_on_a_source_change() {
    let origin = Origin::start("origin").await;
    let crate_dir = scratch_policy_crate("Decision::respond(Response::text(200, \"version one\"))");
    let log_dir = outpost_e2e::scratch_dir();
    // Builds share one target dir across test runs, so only the first run
    // compiles the SDK's dependencies.
    let target = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/dev-server-test");
    let node = Node::spawn_env(
        &[
            "dev",
            "--listen",
            "127.0.0.1:0",
            "--backend",
            &origin.url(),
            crate_dir.to_str().unwrap(),
        ],
        &log_dir,
        &[("CARGO_TARGET_DIR", target)],
    );
    let client = Client::new();
    assert_eq!(
        client.get(&node, "any.test", "/").await.text(),
        "version one"
    );

    let before = node.stdout_lines();
    // Version two reads the clock through WASI, as a policy using `std`
    // may: the node gives such a guest its WASI context on first use.
    write_policy(
        &crate_dir,
        "let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);\n        \
         Decision::respond(Response::text(200, if now.is_ok() { \"version two\" } else { \"no clock\" }))",
    );
    assert!(
        node.wait_for_stdout("reloaded", before, Duration::from_secs(300)),
        "no reload"
    );
    assert_eq!(
        client.get(&node, "any.test", "/").await.text(),
        "version two"
    );
    assert!(
        node.log().contains("respond 200"),
        "the request log shows the decision: {}",
        node.log()
    );

    let before = node.stdout_lines();
    write_policy(&crate_dir, "this is not rust");
    assert!(
        node.wait_for_stdout("build failed", before, Duration::from_secs(300)),
        "no build failure reported"
    );
    assert_eq!(
        client.get(&node, "any.test", "/").await.text(),
        "version two"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_can_reuse_instances_and_a_failed_one_is_retired() {
    let origin = Origin::start("origin").await;
    let reusing = tenant_with(
        "r",
        &["r.test"],
        "example:misbehaving",
        &[("origin", &origin.url())],
        "reuse_instances = true",
    );
    let config = format!(
        "{reusing}{}",
        tenant(
            "f",
            &["f.test"],
            "example:misbehaving",
            &[("origin", &origin.url())]
        )
    );
    let node = Node::start(&config);
    let client = Client::new();
    // Fresh instance per request: the guest's counter always starts over.
    for _ in 0..3 {
        assert_eq!(client.get(&node, "f.test", "/count").await.text(), "1");
    }
    // Reused instance: it keeps its memory between this tenant's requests.
    let counts: Vec<String> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(client.get(&node, "r.test", "/count").await.text());
        }
        v
    };
    assert_eq!(counts, ["1", "2", "3"]);
    // A trap retires the instance: the next request gets a fresh one.
    assert_eq!(client.get(&node, "r.test", "/trap").await.status, 500);
    assert_eq!(client.get(&node, "r.test", "/count").await.text(), "1");
}
