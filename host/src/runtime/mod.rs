//! The wasm runtime: one engine for the node, a compiled policy per tenant
//! module version, and a fresh, limited instance per request.
//!
//! Instances come from wasmtime's pooling allocator with the settings that
//! make per-request instantiation cost microseconds (see PERF-NOTES): memory
//! kept resident and reset with `pagemap_scan` where the kernel has it, no
//! component-model concurrency, copy-on-write memory images. CPU time is
//! bounded by epoch interruption driven by a 1 ms ticker thread that sleeps
//! while no guest runs.

mod capabilities;
mod env;
mod heads;
pub mod memo;
pub mod on_cpu;
mod pacing;
mod policy;
mod session;
mod state;
mod ticker;
mod versions;

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use env::{GuestContext, GuestEnv, Pacer};
pub use policy::{
    Attempt, CachedObject, CallError, Decision, FetchError, HeaderEdit, Lookup, RateVerdict,
    ResponseDecision, Route, StoreOptions, SyntheticResponse,
};
pub use session::{GuestFailure, GuestSession, OutcomeForGuest};
pub use versions::SUPPORTED_WIT;

use crate::config::RuntimeConfig;
use crate::metrics::Histogram;

/// How often the epoch advances; the granularity of CPU deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// The node's wasm engine and the linker that provides the host imports.
pub struct Runtime {
    engine: Engine,
    /// Guests running now, for the epoch ticker.
    activity: Arc<ticker::Activity>,
    linker: Linker<state::GuestState>,
    /// Compiled components by content hash; `None`: compile every time.
    compiled_dir: Option<PathBuf>,
    /// Every module version's memoized decisions.
    memo_table: memo::MemoTable,
}

/// A compiled policy component, ready to instantiate.
pub struct PolicyModule {
    /// Linked against the imports of the version it was built for.
    linked: Box<dyn versions::Linked>,
    /// `sha256:<hex>` of the component bytes: the module's version.
    pub version: Arc<str>,
    /// Decisions of this version by the inputs they depend on; `None` when
    /// the component imports something that differs between runs.
    pub memo: Option<memo::DecisionMemo>,
    /// Time in the request hook, instantiation included when the request
    /// started an instance.
    pub request_hook_time: Histogram,
    /// Time in the response hook.
    pub response_hook_time: Histogram,
    /// Set when a check found the response hook deciding something other
    /// than the default after a route that declared none: from then on it
    /// runs after every attempt of this version, as a 0.2 policy's does.
    response_hook_distrusted: AtomicBool,
}

impl PolicyModule {
    /// Whether routes of this version that declare no response hook may be
    /// taken at their word (no check contradicted one yet).
    pub fn trusts_declared_response_hooks(&self) -> bool {
        !self.response_hook_distrusted.load(Ordering::Relaxed)
    }

    /// A check contradicted a route's declaration: the response hook runs
    /// after every attempt of this version from now on.
    pub fn distrust_declared_response_hooks(&self) {
        self.response_hook_distrusted.store(true, Ordering::Relaxed);
    }
}

impl Runtime {
    pub fn new(config: &RuntimeConfig) -> anyhow::Result<Arc<Runtime>> {
        let mut pool = PoolingAllocationConfig::default();
        let instances = config.max_instances;
        pool.total_component_instances(instances)
            // A Rust wasip2 component holds a few core instances and tables
            // (the main module plus small shims) and one memory.
            .total_core_instances(instances.saturating_mul(4))
            .total_tables(instances.saturating_mul(4))
            .total_memories(instances)
            .total_stacks(instances)
            .max_memory_size(config.max_memory_mb as usize * 1024 * 1024)
            .linear_memory_keep_resident(2 * 1024 * 1024)
            .table_keep_resident(64 * 1024)
            // PAGEMAP_SCAN needs Linux >= 6.7; `Auto` falls back without it.
            .pagemap_scan(Enabled::Auto);

        let mut wasm = Config::new();
        wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .epoch_interruption(true)
            .concurrency_support(false)
            .memory_init_cow(true);
        let engine =
            Engine::new(&wasm).map_err(|e| anyhow::anyhow!("configuring wasmtime: {e}"))?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| anyhow::anyhow!("{e}"))?;
        // Every supported version of the package, side by side: a
        // component links against the one it was built for.
        for version in versions::VERSIONS {
            (version.add_to_linker)(&mut linker).map_err(|e| anyhow::anyhow!("{e}"))?;
        }

        let activity = Arc::new(ticker::Activity::default());
        ticker::spawn(engine.weak(), activity.clone())?;
        if let Some(dir) = &config.compiled_cache_dir {
            std::fs::create_dir_all(dir).map_err(|e| {
                anyhow::anyhow!("runtime.compiled_cache_dir {}: {e}", dir.display())
            })?;
        }
        Ok(Arc::new(Runtime {
            engine,
            activity,
            linker,
            compiled_dir: config.compiled_cache_dir.clone(),
            memo_table: memo::MemoTable::new(),
        }))
    }

    /// Compiles and links a policy component. Fails with a message a policy
    /// author can act on when the bytes are not a component or do not fit
    /// the `outpost:edge/edge-policy` world.
    pub fn load(&self, wasm: &[u8]) -> Result<Arc<PolicyModule>, LoadError> {
        let version: Arc<str> = format!("sha256:{:x}", Sha256::digest(wasm)).into();
        if is_core_module(wasm) {
            return Err(LoadError::CoreModule);
        }
        let component = self.compile(wasm, &version)?;
        let wit = wit_version(&self.engine, &component)?;
        let deterministic = component
            .component_type()
            .imports(&self.engine)
            .all(|(name, _)| memo::is_deterministic_import(name));
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::DoesNotFitWorld(format!("{e:#}")))?;
        let linked = (wit.link)(pre).map_err(|e| LoadError::MissingExports(format!("{e:#}")))?;
        Ok(Arc::new(PolicyModule {
            linked,
            version,
            memo: deterministic.then(|| memo::DecisionMemo::new(&self.memo_table)),
            request_hook_time: Histogram::default(),
            response_hook_time: Histogram::default(),
            response_hook_distrusted: AtomicBool::new(false),
        }))
    }

    /// Compiles a component, or loads it from the compiled cache.
    fn compile(&self, wasm: &[u8], version: &str) -> Result<Component, LoadError> {
        let invalid = |e: wasmtime::Error| LoadError::Invalid(format!("{e:#}"));
        let Some(dir) = &self.compiled_dir else {
            return Component::new(&self.engine, wasm).map_err(invalid);
        };
        // The engine's compatibility hash keeps artifacts of another
        // wasmtime version or configuration apart.
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        let digest = version.trim_start_matches("sha256:");
        let path = dir.join(format!("{digest}-{:016x}.cwasm", hasher.finish()));
        if path.is_file() {
            // SAFETY: only this node writes this directory, and only with
            // `Component::serialize` output for the same engine settings.
            match unsafe { Component::deserialize_file(&self.engine, &path) } {
                Ok(component) => {
                    tracing::info!(version, "policy loaded from the compiled cache");
                    return Ok(component);
                }
                Err(e) => tracing::warn!(
                    "ignoring unusable compiled artifact {}: {e}",
                    path.display()
                ),
            }
        }
        let component = Component::new(&self.engine, wasm).map_err(invalid)?;
        tracing::info!(version, "policy compiled");
        match component.serialize() {
            Ok(bytes) => {
                let tmp = path.with_extension(format!("tmp{}", std::process::id()));
                if let Err(e) =
                    std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, &path))
                {
                    tracing::warn!("cannot write compiled artifact {}: {e}", path.display());
                }
            }
            Err(e) => tracing::warn!("cannot serialize compiled policy: {e}"),
        }
        Ok(component)
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    pub(crate) fn activity(&self) -> &Arc<ticker::Activity> {
        &self.activity
    }
}

/// Why a component cannot become a policy module. Each message says what a
/// policy author can do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error(
        "not a component: this is a core wasm module; build the policy for \
         wasm32-wasip2 (or wrap it with `wasm-tools component new`)"
    )]
    CoreModule,
    #[error("not a valid component: {0}")]
    Invalid(String),
    #[error(
        "wrong WIT version: the component uses `{0}`, this node implements outpost:edge@0.3.x, \
         0.2.x and 0.1.x; rebuild the policy against a 0.3 version of the outpost-guest SDK"
    )]
    WrongWitVersion(String),
    #[error("does not fit the outpost:edge/edge-policy world: {0}")]
    DoesNotFitWorld(String),
    #[error("does not export the outpost:edge/policy interface: {0}")]
    MissingExports(String),
}

/// Which supported version of `outpost:edge` the component uses (any patch
/// of a supported minor; the linker matches patch versions itself); others
/// get a message saying so instead of a linker error.
fn wit_version(
    engine: &Engine,
    component: &Component,
) -> Result<&'static versions::Version, LoadError> {
    let ty = component.component_type();
    let names = ty
        .imports(engine)
        .map(|(n, _)| n.to_string())
        .chain(ty.exports(engine).map(|(n, _)| n.to_string()));
    let mut found: Option<&'static versions::Version> = None;
    for name in names.filter(|n| n.starts_with("outpost:edge/")) {
        let this = versions::VERSIONS
            .iter()
            .find(|v| name.contains(v.marker))
            .ok_or_else(|| LoadError::WrongWitVersion(name.clone()))?;
        if found.is_some_and(|v| !std::ptr::eq(v, this)) {
            return Err(LoadError::WrongWitVersion(name));
        }
        found = Some(this);
    }
    // A component that uses no `outpost:edge` name fails on its exports.
    Ok(found.unwrap_or(versions::CURRENT))
}

/// Core modules start with version 1 in the preamble; components use a
/// different version/layer field.
fn is_core_module(wasm: &[u8]) -> bool {
    wasm.len() >= 8 && wasm[0..4] == *b"\0asm" && wasm[4..8] == [1, 0, 0, 0]
}

/// A runtime shared by the unit tests of the modules above, and a built-in
/// policy compiled in it.
#[cfg(test)]
pub(crate) fn test_module(builtin: &str) -> Arc<PolicyModule> {
    static RUNTIME: std::sync::OnceLock<Arc<Runtime>> = std::sync::OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| {
        Runtime::new(&RuntimeConfig {
            max_instances: 8,
            ..RuntimeConfig::default()
        })
        .expect("a runtime")
    });
    let wasm = crate::guests::builtin(builtin).expect("a built-in policy");
    runtime.load(wasm).expect("the built-in policy loads")
}
