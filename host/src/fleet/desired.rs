//! The fleet's desired state as etcd holds it: the raw values of the keys
//! of the layout, each with the revision it was last written at. Values
//! are only decoded when a tenant is applied, so one tenant's bad data is
//! that tenant's refusal, never a failed sync.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::keys::{FleetKey, Layout};

/// A key's value and the revision it was written at (etcd's
/// `mod_revision`): what tells a changed tenant from an unchanged one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raw {
    pub value: Bytes,
    pub revision: i64,
}

/// What etcd holds for one tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantKeys {
    /// The tenant's fields, TOML.
    pub doc: Option<Raw>,
    /// Which version it runs, JSON ([`Selection`]).
    pub selection: Option<Raw>,
    /// Its purge generation, JSON.
    pub purge: Option<Raw>,
}

impl TenantKeys {
    /// The revisions of the three keys: equal revisions, equal inputs.
    pub fn revisions(&self) -> [i64; 3] {
        [&self.doc, &self.selection, &self.purge].map(|r| r.as_ref().map_or(0, |r| r.revision))
    }
}

/// `{prefix}/selections/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    /// The version every request runs but the canary's share:
    /// `sha256:<hex>`.
    pub active: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanarySelection>,
    /// The last staged rollout a node halted: for people and `outpost
    /// status`; nodes ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halted: Option<Halted>,
}

/// A candidate version taking `percent` of the requests, on the nodes of
/// one POP only when `pop` is set (a staged rollout), aborted by a node
/// whose `auto_rollback` rule it breaks, which then halts it fleet-wide.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanarySelection {
    pub version: String,
    pub percent: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pop: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_rollback: Option<RollbackRule>,
}

/// The candidate's failure rate (5xx and guest failures) may exceed the
/// active version's by at most `margin` (0-1) once it served
/// `min_requests`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRule {
    pub margin: f64,
    pub min_requests: u64,
}

/// Which canary a node halted, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Halted {
    pub version: String,
    pub node: String,
    pub reason: String,
    pub at: u64,
}

/// `{prefix}/purges/{id}`: a purge every node carries out once, when the
/// generation changes (so a node that was cut off carries it out when it
/// catches up, and one that restarts has an empty cache anyway).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeGeneration {
    pub generation: u64,
    pub purge: crate::control::PurgeBody,
}

/// `{prefix}/modules/{hex}/meta`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleMeta {
    pub size: u64,
    pub chunks: u32,
}

/// Why a module's bytes cannot be had (yet).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModuleError {
    #[error("module {0} is not in etcd")]
    Missing(String),
    #[error("module {0} is not complete in etcd yet")]
    Incomplete(String),
    #[error("module {0} in etcd does not match its hash or size")]
    Corrupt(String),
    #[error("{0:?} is not a module version (sha256:<64 hex digits>)")]
    NotAVersion(String),
}

#[derive(Debug, Clone, Default)]
struct ModuleKeys {
    meta: Option<Bytes>,
    chunks: BTreeMap<u32, Bytes>,
}

/// Everything under the prefix that the node applies.
#[derive(Debug, Clone, Default)]
pub struct Desired {
    pub tenants: BTreeMap<String, TenantKeys>,
    modules: BTreeMap<String, ModuleKeys>,
}

impl Desired {
    /// Records a put. Keys outside the layout, and membership and
    /// acknowledgement keys (not desired state), are ignored.
    pub fn put(&mut self, layout: &Layout, key: &str, value: Bytes, revision: i64) {
        let raw = || Raw {
            value: value.clone(),
            revision,
        };
        match layout.parse(key) {
            Some(FleetKey::Tenant(id)) => self.tenant(id).doc = Some(raw()),
            Some(FleetKey::Selection(id)) => self.tenant(id).selection = Some(raw()),
            Some(FleetKey::Purge(id)) => self.tenant(id).purge = Some(raw()),
            Some(FleetKey::ModuleMeta(hex)) => self.module(hex).meta = Some(value),
            Some(FleetKey::ModuleChunk(hex, n)) => {
                self.module(hex).chunks.insert(n, value);
            }
            _ => {}
        }
    }

    /// Records a delete.
    pub fn delete(&mut self, layout: &Layout, key: &str) {
        match layout.parse(key) {
            Some(FleetKey::Tenant(id)) => self.forget(id, |t| &mut t.doc),
            Some(FleetKey::Selection(id)) => self.forget(id, |t| &mut t.selection),
            Some(FleetKey::Purge(id)) => self.forget(id, |t| &mut t.purge),
            Some(FleetKey::ModuleMeta(hex)) => {
                self.modules.remove(hex);
            }
            Some(FleetKey::ModuleChunk(hex, n)) => {
                if let Some(m) = self.modules.get_mut(hex) {
                    m.chunks.remove(&n);
                }
            }
            _ => {}
        }
    }

    fn tenant(&mut self, id: &str) -> &mut TenantKeys {
        self.tenants.entry(id.to_string()).or_default()
    }

    fn module(&mut self, hex: &str) -> &mut ModuleKeys {
        self.modules.entry(hex.to_string()).or_default()
    }

    fn forget(&mut self, id: &str, field: impl Fn(&mut TenantKeys) -> &mut Option<Raw>) {
        if let Some(t) = self.tenants.get_mut(id) {
            *field(t) = None;
            if *t == TenantKeys::default() {
                self.tenants.remove(id);
            }
        }
    }

    /// The bytes of a module version (`sha256:<hex>`), checked against its
    /// hash and size.
    pub fn module_bytes(&self, version: &str) -> Result<Bytes, ModuleError> {
        let hex = version
            .strip_prefix("sha256:")
            .filter(|h| super::keys::is_sha256_hex(h))
            .ok_or_else(|| ModuleError::NotAVersion(version.to_string()))?;
        let missing = || ModuleError::Missing(version.to_string());
        let module = self.modules.get(hex).ok_or_else(missing)?;
        let meta: ModuleMeta = match &module.meta {
            None => return Err(ModuleError::Incomplete(version.to_string())),
            Some(m) => {
                serde_json::from_slice(m).map_err(|_| ModuleError::Corrupt(version.into()))?
            }
        };
        let mut bytes = Vec::with_capacity(usize::try_from(meta.size).unwrap_or(0));
        for n in 0..meta.chunks {
            let chunk = module
                .chunks
                .get(&n)
                .ok_or_else(|| ModuleError::Incomplete(version.to_string()))?;
            bytes.extend_from_slice(chunk);
        }
        let digest = format!("{:x}", Sha256::digest(&bytes));
        if bytes.len() as u64 != meta.size || digest != hex {
            return Err(ModuleError::Corrupt(version.to_string()));
        }
        Ok(bytes.into())
    }
}

/// The keys and values that store `wasm` as a module version under
/// `layout`: the chunks first, then the meta key that makes it complete;
/// and the version.
pub fn module_keys(layout: &Layout, wasm: &[u8]) -> (String, Vec<(String, Vec<u8>)>) {
    let hex = format!("{:x}", Sha256::digest(wasm));
    let chunks: Vec<&[u8]> = wasm.chunks(super::keys::CHUNK_BYTES).collect();
    let mut keys: Vec<(String, Vec<u8>)> = chunks
        .iter()
        .enumerate()
        .map(|(n, c)| (layout.module_chunk(&hex, n as u32), c.to_vec()))
        .collect();
    let meta = ModuleMeta {
        size: wasm.len() as u64,
        chunks: chunks.len() as u32,
    };
    let meta = serde_json::to_vec(&meta).unwrap_or_default();
    keys.push((layout.module_meta(&hex), meta));
    (format!("sha256:{hex}"), keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(layout: &Layout, wasm: &[u8]) -> (Desired, String) {
        let mut d = Desired::default();
        let (version, keys) = module_keys(layout, wasm);
        for (i, (k, v)) in keys.into_iter().enumerate() {
            d.put(layout, &k, v.into(), i as i64 + 1);
        }
        (d, version)
    }

    #[test]
    fn a_module_larger_than_one_chunk_comes_back_whole_and_checked() {
        let layout = Layout::new("/outpost");
        let wasm: Vec<u8> = (0..(2 * super::super::keys::CHUNK_BYTES + 5))
            .map(|i| (i % 251) as u8)
            .collect();
        let (d, version) = stored(&layout, &wasm);
        assert_eq!(d.module_bytes(&version).unwrap(), wasm);
        assert!(matches!(
            d.module_bytes("sha256:nope"),
            Err(ModuleError::NotAVersion(_))
        ));
    }

    #[test]
    fn a_module_with_a_chunk_missing_or_altered_is_not_used() {
        let layout = Layout::new("/outpost");
        let wasm = vec![7u8; super::super::keys::CHUNK_BYTES + 1];
        let (mut d, version) = stored(&layout, &wasm);
        let hex = version.trim_start_matches("sha256:").to_string();
        d.put(
            &layout,
            &layout.module_chunk(&hex, 1),
            Bytes::from_static(b"x"),
            9,
        );
        assert_eq!(
            d.module_bytes(&version),
            Err(ModuleError::Corrupt(version.clone()))
        );
        d.delete(&layout, &layout.module_chunk(&hex, 1));
        assert_eq!(
            d.module_bytes(&version),
            Err(ModuleError::Incomplete(version.clone()))
        );
        d.delete(&layout, &layout.module_meta(&hex));
        assert_eq!(d.module_bytes(&version), Err(ModuleError::Missing(version)));
    }

    #[test]
    fn a_tenants_keys_are_grouped_with_their_revisions_and_forgotten_when_deleted() {
        let layout = Layout::new("/outpost");
        let mut d = Desired::default();
        d.put(
            &layout,
            &layout.tenant("shop"),
            Bytes::from_static(b"hosts = []"),
            4,
        );
        d.put(
            &layout,
            &layout.selection("shop"),
            Bytes::from_static(b"{}"),
            7,
        );
        d.put(
            &layout,
            "/outpost/nodes/edge-1",
            Bytes::from_static(b"{}"),
            8,
        );
        assert_eq!(d.tenants["shop"].revisions(), [4, 7, 0]);
        assert_eq!(d.tenants.len(), 1, "membership is not desired state");
        d.delete(&layout, &layout.tenant("shop"));
        assert_eq!(d.tenants["shop"].revisions(), [0, 7, 0]);
        d.delete(&layout, &layout.selection("shop"));
        assert!(d.tenants.is_empty());
    }
}
