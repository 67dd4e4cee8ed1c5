//! The last known good state on disk: per tenant, the etcd keys it last
//! applied without error, and the module versions they select. A node
//! restarted while etcd is unreachable serves from it (APISIX could not:
//! its issue #3902), then catches up when etcd answers.
//!
//! `{state_dir}/snapshot.json` and `{state_dir}/modules/{hex}.wasm`, each
//! written to a temporary file and renamed, so a crash mid-write leaves the
//! previous snapshot whole.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::desired::{module_keys, Desired, Raw, Selection, TenantKeys};
use super::keys::Layout;

/// Where the snapshot lives.
#[derive(Debug, Clone)]
pub struct Snapshot {
    dir: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct Saved {
    /// The etcd revision it was taken at (for the log).
    revision: i64,
    tenants: BTreeMap<String, SavedTenant>,
}

#[derive(Serialize, Deserialize, Default)]
struct SavedTenant {
    doc: Option<SavedRaw>,
    selection: Option<SavedRaw>,
    purge: Option<SavedRaw>,
}

/// Values are TOML or JSON: text.
#[derive(Serialize, Deserialize)]
struct SavedRaw {
    value: String,
    revision: i64,
}

impl Snapshot {
    pub fn new(dir: &Path) -> Snapshot {
        Snapshot {
            dir: dir.to_path_buf(),
        }
    }

    /// Saves the good keys of every tenant and the modules they select
    /// (`desired` has their bytes).
    pub fn save(
        &self,
        good: &BTreeMap<String, TenantKeys>,
        desired: &Desired,
        revision: i64,
    ) -> io::Result<()> {
        let modules = self.dir.join("modules");
        std::fs::create_dir_all(&modules)?;
        let mut kept = Vec::new();
        for keys in good.values() {
            for version in selected(keys) {
                let hex = version.trim_start_matches("sha256:").to_string();
                let path = modules.join(format!("{hex}.wasm"));
                if !path.exists() {
                    if let Ok(bytes) = desired.module_bytes(&version) {
                        write_atomically(&path, &bytes)?;
                    }
                }
                kept.push(format!("{hex}.wasm"));
            }
        }
        for entry in std::fs::read_dir(&modules)?.flatten() {
            if !kept
                .iter()
                .any(|k| *k == entry.file_name().to_string_lossy())
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let saved = Saved {
            revision,
            tenants: good
                .iter()
                .map(|(id, keys)| (id.clone(), saved_tenant(keys)))
                .collect(),
        };
        let json = serde_json::to_vec_pretty(&saved).map_err(io::Error::other)?;
        write_atomically(&self.dir.join("snapshot.json"), &json)
    }

    /// The saved tenants' keys, with the modules they select put back as
    /// etcd would hold them; `None` if there is no snapshot.
    pub fn load(&self, layout: &Layout) -> io::Result<Option<(Desired, i64)>> {
        let path = self.dir.join("snapshot.json");
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let saved: Saved = serde_json::from_slice(&text)
            .map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?;
        let mut desired = Desired::default();
        for (id, t) in &saved.tenants {
            let put = |d: &mut Desired, key: String, raw: &Option<SavedRaw>| {
                if let Some(r) = raw {
                    d.put(layout, &key, r.value.clone().into(), r.revision);
                }
            };
            put(&mut desired, layout.tenant(id), &t.doc);
            put(&mut desired, layout.selection(id), &t.selection);
            put(
                &mut desired,
                format!("{}purges/{id}", layout.all()),
                &t.purge,
            );
        }
        let modules = self.dir.join("modules");
        for entry in std::fs::read_dir(&modules).into_iter().flatten().flatten() {
            if let Ok(bytes) = std::fs::read(entry.path()) {
                let (_, keys) = module_keys(layout, &bytes);
                for (key, value) in keys {
                    desired.put(layout, &key, value.into(), saved.revision);
                }
            }
        }
        Ok(Some((desired, saved.revision)))
    }
}

/// The versions a tenant's selection names.
fn selected(keys: &TenantKeys) -> Vec<String> {
    let Some(raw) = &keys.selection else {
        return Vec::new();
    };
    let Ok(selection) = serde_json::from_slice::<Selection>(&raw.value) else {
        return Vec::new();
    };
    std::iter::once(selection.active)
        .chain(selection.canary.map(|c| c.version))
        .collect()
}

fn saved_tenant(keys: &TenantKeys) -> SavedTenant {
    let raw = |r: &Option<Raw>| {
        r.as_ref().map(|r| SavedRaw {
            value: String::from_utf8_lossy(&r.value).into_owned(),
            revision: r.revision,
        })
    };
    SavedTenant {
        doc: raw(&keys.doc),
        selection: raw(&keys.selection),
        purge: raw(&keys.purge),
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn a_saved_snapshot_loads_back_with_its_modules() {
        let dir = std::env::temp_dir().join(format!("outpost-snapshot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let layout = Layout::new("/outpost");
        let wasm = b"\0asm not really".to_vec();
        let (version, keys) = module_keys(&layout, &wasm);
        let mut desired = Desired::default();
        for (k, v) in keys {
            desired.put(&layout, &k, v.into(), 3);
        }
        let selection = format!("{{\"active\":\"{version}\"}}");
        desired.put(
            &layout,
            &layout.tenant("shop"),
            Bytes::from_static(b"hosts = []"),
            5,
        );
        desired.put(&layout, &layout.selection("shop"), selection.into(), 6);
        let good = desired.tenants.clone();
        let snapshot = Snapshot::new(&dir);
        snapshot.save(&good, &desired, 6).unwrap();

        let (loaded, revision) = snapshot.load(&layout).unwrap().expect("a snapshot");
        assert_eq!(revision, 6);
        assert_eq!(loaded.tenants, good);
        assert_eq!(loaded.module_bytes(&version).unwrap(), wasm);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
