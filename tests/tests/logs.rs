//! Request ids and the access log: one id follows a request from the
//! client to the origin and back, and each request leaves one log line with
//! its tenant, version, status, bytes, time, cache outcome and backend.

use std::time::Duration;

use outpost_e2e::*;

const CLIENT_TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn is_generated_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_request_id_reaches_the_origin_and_comes_back_and_a_bad_one_is_replaced() {
    let (origin, node, client) = start_one_tenant().await;
    origin.reply_to_all(Reply::ok().only("cache-control", "no-store"));

    let made = client.get(&node, "t.test", "/made").await;
    let id = made
        .header("x-request-id")
        .expect("an id on the response")
        .to_string();
    assert!(is_generated_id(&id), "{id}");

    let uuid = "0b6f8c1e-3f4a-4d2b-9c1d-6e2f7a8b9c0d";
    let kept = client
        .get_with(&node, "t.test", "/kept", &[("x-request-id", uuid)])
        .await;
    assert_eq!(kept.header("x-request-id"), Some(uuid));

    let bad = client
        .get_with(&node, "t.test", "/bad", &[("x-request-id", "two words")])
        .await;
    let replaced = bad.header("x-request-id").unwrap();
    assert!(is_generated_id(replaced), "{replaced}");

    let seen = origin.seen();
    let at = |target: &str| {
        seen.iter()
            .find(|s| s.target == target)
            .map(|s| s.values("x-request-id"))
            .unwrap()
    };
    assert_eq!(at("/made"), vec![id.clone()]);
    assert_eq!(at("/kept"), vec![uuid.to_string()]);
    assert_eq!(at("/bad"), vec![replaced.to_string()]);
    // Node answers that no tenant took carry one too.
    let refused = client.get(&node, "nobody.test", "/").await;
    assert!(is_generated_id(refused.header("x-request-id").unwrap()));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_json_access_log_has_one_line_per_request_with_what_happened() {
    let origin = Origin::start("origin").await;
    origin.reply("/page", Reply::ok().body("0123456789"));
    let config = format!(
        "[server]\naccess_log = \"json\"\n\n{}",
        tenant(
            "t",
            &["t.test"],
            "builtin:default",
            &[("origin", &origin.url())]
        )
    );
    let node = Node::start(&config);
    let client = Client::new();
    let before = node.stdout_lines();
    client.get(&node, "t.test", "/page").await;
    client
        .get_with(
            &node,
            "t.test",
            "/page",
            &[("x-request-id", "req-2"), ("traceparent", CLIENT_TRACE)],
        )
        .await;
    assert!(node.wait_for_stdout("req-2", before, Duration::from_secs(10)));

    let lines: Vec<serde_json::Value> = node
        .stdout()
        .iter()
        .skip(before)
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let (miss, hit) = (&lines[0], &lines[1]);
    for line in &lines {
        assert_eq!(line["tenant"], "t");
        assert_eq!(line["method"], "GET");
        assert_eq!(line["host"], "t.test");
        assert_eq!(line["path"], "/page");
        assert_eq!(line["status"], 200);
        assert_eq!(line["bytes"], 10);
        assert!(line["version"].as_str().unwrap().starts_with("sha256:"));
        assert!(line["duration_s"].as_f64().unwrap() > 0.0);
        assert!(line["time"].as_f64().unwrap() > 1.7e9);
    }
    assert_eq!(miss["cache"], "miss");
    assert_eq!(miss["backend"], "origin");
    assert!(is_generated_id(miss["request_id"].as_str().unwrap()));
    assert_eq!(hit["cache"], "hit");
    assert_eq!(hit["backend"], "-");
    assert_eq!(hit["request_id"], "req-2");
    assert_eq!(hit["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(miss["trace_id"].as_str().unwrap().len(), 32);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_plain_access_log_is_one_line_per_request_and_off_writes_nothing() {
    let origin = Origin::start("origin").await;
    let plain = Node::start(&format!(
        "[server]\naccess_log = \"plain\"\n\n{}",
        tenant(
            "t",
            &["t.test"],
            "builtin:default",
            &[("origin", &origin.url())]
        )
    ));
    let client = Client::new();
    let before = plain.stdout_lines();
    client
        .get_with(&plain, "t.test", "/x?y=1", &[("x-request-id", "plain-1")])
        .await;
    assert!(plain.wait_for_stdout("plain-1", before, Duration::from_secs(10)));
    let line = plain
        .stdout()
        .into_iter()
        .find(|l| l.contains("plain-1"))
        .unwrap();
    assert!(line.contains(" t sha256:"), "{line}");
    assert!(line.contains(" t.test \"GET /x?y=1\" 200 "), "{line}");
    assert!(line.contains(" miss origin plain-1 "), "{line}");
    // ... and the trace id last.
    assert_eq!(line.rsplit(' ').next().unwrap().len(), 32, "{line}");

    let off = Node::start(&tenant(
        "t",
        &["t.test"],
        "builtin:default",
        &[("origin", &origin.url())],
    ));
    let before = off.stdout_lines();
    client
        .get_with(&off, "t.test", "/x", &[("x-request-id", "off-1")])
        .await;
    // A node that logs writes the line within milliseconds (the plain one
    // above did); one with the default config writes none.
    assert!(!off.wait_for_stdout("off-1", before, Duration::from_millis(500)));
}

/// `traceparent` split into (version, trace id, parent id, flags).
fn fields(traceparent: &str) -> (String, String, String, String) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    let hex = |p: &str| {
        p.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    };
    assert!(parts.iter().all(|p| hex(p)), "{traceparent}");
    (
        parts[0].into(),
        parts[1].into(),
        parts[2].into(),
        parts[3].into(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_clients_trace_reaches_the_origin_under_the_nodes_span_and_an_invalid_one_restarts() {
    let (origin, node, client) = start_one_tenant().await;
    origin.reply_to_all(Reply::ok().only("cache-control", "no-store"));
    client
        .get_with(
            &node,
            "t.test",
            "/continued",
            &[
                ("traceparent", CLIENT_TRACE),
                ("tracestate", "vendor=abc,other=1"),
            ],
        )
        .await;
    client.get(&node, "t.test", "/started").await;
    client
        .get_with(
            &node,
            "t.test",
            "/invalid",
            &[
                (
                    "traceparent",
                    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
                ),
                ("tracestate", "vendor=abc"),
            ],
        )
        .await;
    let seen = origin.seen();
    let at = |target: &str| seen.iter().find(|s| s.target == target).unwrap().clone();

    let continued = at("/continued");
    let (version, trace, parent, flags) = fields(continued.values("traceparent")[0]);
    assert_eq!(version, "00");
    assert_eq!(trace, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_ne!(
        parent, "00f067aa0ba902b7",
        "the node's own span is the parent"
    );
    assert_eq!(parent.len(), 16);
    assert_eq!(flags, "01");
    assert_eq!(continued.values("tracestate"), vec!["vendor=abc,other=1"]);

    let started = at("/started");
    let (version, trace, parent, _) = fields(started.values("traceparent")[0]);
    assert_eq!(version, "00");
    assert_ne!(trace, "0".repeat(32));
    assert_ne!(parent, "0".repeat(16));
    assert!(started.values("tracestate").is_empty());

    let invalid = at("/invalid");
    let values = invalid.values("traceparent");
    assert_eq!(values.len(), 1, "{values:?}");
    let (_, trace, _, _) = fields(values[0]);
    assert_ne!(trace, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(invalid.values("tracestate").is_empty());
}
