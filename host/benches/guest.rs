//! Per-request guest cost: instantiate the `cache-key` policy from its
//! `InstancePre` with the pooling allocator, call the request hook, drop
//! the instance. `cargo bench -p outpost --bench guest`.
//!
//! With the node's allocator, so the figures are what `outpost serve` pays.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use outpost::config::Config;
use outpost::http::{RequestId, RequestInfo, Scheme, TraceContext};
use outpost::runtime::{GuestContext, GuestSession, Runtime};
use outpost::tenant::{Ledger, Tenant};

#[global_allocator]
static ALLOCATOR: outpost::alloc::Mimalloc = outpost::alloc::Mimalloc;

fn request() -> Arc<RequestInfo> {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "user-agent",
        "Mozilla/5.0 (X11; Linux x86_64) bench".parse().unwrap(),
    );
    headers.insert("accept", "*/*".parse().unwrap());
    headers.insert("accept-encoding", "gzip, br".parse().unwrap());
    Arc::new(RequestInfo {
        method: http::Method::GET,
        uri: "/a/b?z=1&a=2&utm_source=x".parse().unwrap(),
        headers,
        scheme: Scheme::Http,
        authority: "bench.test".into(),
        client_ip: IpAddr::from([127, 0, 0, 1]),
        request_id: RequestId::generate(),
        trace: TraceContext::start(),
        from_pop_member: false,
        signature: Default::default(),
    })
}

fn guest(c: &mut Criterion) {
    let text = r#"
        [[tenant]]
        id = "bench"
        hosts = ["bench.test"]
        policy = "builtin:cache-key"
        [tenant.backends.origin]
        url = "http://127.0.0.1:9"
    "#;
    let config = Config::from_toml(text, "bench", Path::new(".")).unwrap();
    let runtime = Runtime::new(&config.runtime).unwrap();
    let tenant = Arc::new(
        Tenant::build(
            &config.tenants[0],
            &runtime,
            &config,
            &Ledger::new(64 << 20),
            Default::default(),
        )
        .unwrap(),
    );
    let module = tenant.policy.load_full();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let info = request();
    let ctx = || GuestContext {
        env: tenant.clone(),
        version: module.version.clone(),
        offline: false,
        replayed: false,
    };
    // A fresh instance of the policy for the request.
    let start = || GuestSession::start(&runtime, &module, ctx(), info.clone());

    c.bench_function("instantiate + on-request + drop (cache-key)", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut session = start().await.unwrap();
                session.on_request().await.unwrap()
            })
        })
    });

    // The instance alone, mostly wasmtime's work: started and dropped
    // without a call into it (instantiation, then the pooling allocator's
    // reset of its memory and tables).
    c.bench_function("instantiate + drop, no hook (cache-key)", |b| {
        b.iter(|| rt.block_on(start()).unwrap())
    });

    // The SDK's bump allocator never frees (instances are per request), so
    // a reused instance is replaced every 1,000 calls, outside the timing.
    c.bench_function("on-request on a live instance (cache-key)", |b| {
        b.iter_custom(|iters| {
            let mut total = std::time::Duration::ZERO;
            let mut done = 0;
            while done < iters {
                let mut session = rt.block_on(start()).unwrap();
                let batch = (iters - done).min(1000);
                let start = std::time::Instant::now();
                for _ in 0..batch {
                    rt.block_on(session.on_request()).unwrap();
                }
                total += start.elapsed();
                done += batch;
            }
            total
        })
    });

    // A request whose decision is memoized skips wasm: this is its cost.
    let memo = module
        .memo
        .as_ref()
        .expect("cache-key imports nothing nondeterministic");
    rt.block_on(async {
        let mut session = start().await.unwrap();
        session.record_reads();
        let decision = session.on_request().await.unwrap();
        let reads = session.take_reads().unwrap();
        memo.remember(reads, &info, &tenant.vars, &decision);
    });
    c.bench_function("memoized decision (cache-key)", |b| {
        b.iter(|| memo.recall(&info, &tenant.vars).expect("memoized"))
    });
}

criterion_group!(benches, guest);
criterion_main!(benches);
