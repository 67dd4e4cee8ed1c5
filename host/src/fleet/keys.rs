//! Where a fleet's state lives in etcd, under one prefix (`--prefix`,
//! default `/outpost`):
//!
//! | key | value |
//! |---|---|
//! | `{prefix}/tenants/{id}` | the tenant: a `[[tenant]]` table's fields, TOML (the config file's schema) |
//! | `{prefix}/modules/{hex}/meta` | a module version: JSON `{"size", "chunks"}`; `hex` is the sha256 of its bytes |
//! | `{prefix}/modules/{hex}/{n}` | its bytes, chunk `n` (at most [`CHUNK_BYTES`] each: etcd refuses requests over 1.5 MiB) |
//! | `{prefix}/selections/{id}` | which version a tenant runs: JSON `{"active", "canary"?: {"version", "percent"}, "pop"?}` |
//! | `{prefix}/purges/{id}` | the tenant's purge generation: JSON `{"generation", "purge"}` |
//! | `{prefix}/nodes/{node}` | a live node, under its lease: JSON `{"address", "pop", "version", "load"}` |
//! | `{prefix}/acks/{node}/{id}` | what the node applied for a tenant, or why it refused it |
//! | `{prefix}/pop-mark-key` | the key POP members sign forward marks with: 32 random bytes in hex, made by the first node that finds none |
//!
//! Tenant ids and node ids never contain `/` (the config checks ids), so a
//! key names exactly one thing.

/// Largest chunk of a module's bytes in one key.
pub const CHUNK_BYTES: usize = 1 << 20;

/// The key layout under a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    prefix: String,
}

/// What a key under the prefix names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FleetKey<'a> {
    Tenant(&'a str),
    ModuleMeta(&'a str),
    ModuleChunk(&'a str, u32),
    Selection(&'a str),
    Purge(&'a str),
    Node(&'a str),
    Ack { node: &'a str, tenant: &'a str },
}

impl Layout {
    /// A layout under `prefix` (a trailing `/` is ignored).
    pub fn new(prefix: &str) -> Layout {
        Layout {
            prefix: prefix.trim_end_matches('/').to_string(),
        }
    }

    /// Every key of the fleet: `{prefix}/`.
    pub fn all(&self) -> String {
        format!("{}/", self.prefix)
    }

    pub fn tenant(&self, id: &str) -> String {
        format!("{}/tenants/{id}", self.prefix)
    }

    pub fn module_meta(&self, hex: &str) -> String {
        format!("{}/modules/{hex}/meta", self.prefix)
    }

    pub fn module_chunk(&self, hex: &str, n: u32) -> String {
        format!("{}/modules/{hex}/{n}", self.prefix)
    }

    pub fn selection(&self, id: &str) -> String {
        format!("{}/selections/{id}", self.prefix)
    }

    pub fn purge(&self, id: &str) -> String {
        format!("{}/purges/{id}", self.prefix)
    }

    /// The fleet's forward-mark key.
    pub fn mark_key(&self) -> String {
        format!("{}/pop-mark-key", self.prefix)
    }

    pub fn node(&self, node: &str) -> String {
        format!("{}/nodes/{node}", self.prefix)
    }

    /// Every node's record: `{prefix}/nodes/`.
    pub fn nodes(&self) -> String {
        format!("{}/nodes/", self.prefix)
    }

    /// Every acknowledgement: `{prefix}/acks/`.
    pub fn acks(&self) -> String {
        format!("{}/acks/", self.prefix)
    }

    /// Every selection: `{prefix}/selections/`.
    pub fn selections(&self) -> String {
        format!("{}/selections/", self.prefix)
    }

    pub fn ack(&self, node: &str, tenant: &str) -> String {
        format!("{}/acks/{node}/{tenant}", self.prefix)
    }

    /// What a key names; `None` for keys outside the layout (ignored, so
    /// an older node tolerates a newer fleet's extra keys).
    pub fn parse<'a>(&self, key: &'a str) -> Option<FleetKey<'a>> {
        let rest = key.strip_prefix(self.prefix.as_str())?.strip_prefix('/')?;
        let parts: Vec<&str> = rest.split('/').collect();
        let name = |s: &&str| !s.is_empty();
        match parts.as_slice() {
            ["tenants", id] if name(id) => Some(FleetKey::Tenant(id)),
            ["modules", hex, "meta"] if is_sha256_hex(hex) => Some(FleetKey::ModuleMeta(hex)),
            ["modules", hex, n] if is_sha256_hex(hex) => {
                n.parse().ok().map(|n| FleetKey::ModuleChunk(hex, n))
            }
            ["selections", id] if name(id) => Some(FleetKey::Selection(id)),
            ["purges", id] if name(id) => Some(FleetKey::Purge(id)),
            ["nodes", node] if name(node) => Some(FleetKey::Node(node)),
            ["acks", node, tenant] if name(node) && name(tenant) => {
                Some(FleetKey::Ack { node, tenant })
            }
            _ => None,
        }
    }
}

/// 64 lowercase hex digits: a sha256 as module versions spell it.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn every_key_the_layout_makes_parses_back_to_what_it_names() {
        let l = Layout::new("/outpost/");
        assert_eq!(l.parse(&l.tenant("shop")), Some(FleetKey::Tenant("shop")));
        assert_eq!(
            l.parse(&l.module_meta(HEX)),
            Some(FleetKey::ModuleMeta(HEX))
        );
        assert_eq!(
            l.parse(&l.module_chunk(HEX, 3)),
            Some(FleetKey::ModuleChunk(HEX, 3))
        );
        assert_eq!(
            l.parse(&l.selection("shop")),
            Some(FleetKey::Selection("shop"))
        );
        assert_eq!(
            l.parse("/outpost/purges/shop"),
            Some(FleetKey::Purge("shop"))
        );
        assert_eq!(l.parse(&l.node("edge-1")), Some(FleetKey::Node("edge-1")));
        assert_eq!(
            l.parse(&l.ack("edge-1", "shop")),
            Some(FleetKey::Ack {
                node: "edge-1",
                tenant: "shop"
            })
        );
        assert!(l.tenant("shop").starts_with(&l.all()));
        assert!(l.node("edge-1").starts_with(&l.nodes()));
        assert!(l.ack("edge-1", "shop").starts_with(&l.acks()));
        assert!(l.selection("shop").starts_with(&l.selections()));
    }

    #[test]
    fn keys_outside_the_layout_or_another_prefix_name_nothing() {
        let l = Layout::new("/outpost");
        for key in [
            "/outpost2/tenants/shop",
            "/outpost/tenants/",
            "/outpost/tenants/a/b",
            "/outpost/modules/abc/meta",
            "/outpost/modules/".to_string().as_str(),
            "/outpost/future/thing",
            "/other/tenants/shop",
        ] {
            assert_eq!(l.parse(key), None, "{key}");
        }
        assert_eq!(l.parse(&format!("/outpost/modules/{HEX}/x")), None);
        assert!(!is_sha256_hex(&HEX.to_uppercase()));
    }
}
