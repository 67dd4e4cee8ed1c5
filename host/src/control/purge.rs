//! Purges of a tenant's cache, carried out before the caller is answered.

use std::sync::Arc;

use http::{Method, Uri};
use serde::{Deserialize, Serialize};

use super::{Control, ControlError};
use crate::http::RequestInfo;
use crate::runtime::Decision;
use crate::tenant::decide_offline;

/// What to purge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purge {
    /// Everything of the tenant.
    All,
    /// One cache key (all its variants); `soft` marks it stale instead.
    Key { key: String, soft: bool },
    /// One URL: its key is what the tenant's active policy gives a GET of
    /// it (a path alone is taken on the tenant's first host).
    Url { url: String, soft: bool },
    /// Every key carrying this surrogate key / cache tag.
    Tag { tag: String, soft: bool },
}

/// A purge as a client asks for it: the admin API's body, and what a fleet
/// keeps in etcd.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeBody {
    /// One cache key (all its variants).
    #[serde(default, skip_serializing_if = "is_default")]
    pub key: Option<String>,
    /// One URL: its key is what the tenant's policy gives a GET of it.
    #[serde(default, skip_serializing_if = "is_default")]
    pub url: Option<String>,
    /// Every key carrying this surrogate key / cache tag.
    #[serde(default, skip_serializing_if = "is_default")]
    pub tag: Option<String>,
    /// Everything of the tenant.
    #[serde(default, skip_serializing_if = "is_default")]
    pub all: bool,
    /// Mark stale instead of removing: the object is revalidated before
    /// reuse but can still be served stale.
    #[serde(default, skip_serializing_if = "is_default")]
    pub soft: bool,
}

impl PurgeBody {
    /// Exactly one of `key`, `url`, `tag` or `all`.
    pub fn into_purge(self) -> Result<Purge, String> {
        match self {
            PurgeBody {
                key: Some(key),
                url: None,
                tag: None,
                all: false,
                soft,
            } => Ok(Purge::Key { key, soft }),
            PurgeBody {
                url: Some(url),
                key: None,
                tag: None,
                all: false,
                soft,
            } => Ok(Purge::Url { url, soft }),
            PurgeBody {
                tag: Some(tag),
                key: None,
                url: None,
                all: false,
                soft,
            } => Ok(Purge::Tag { tag, soft }),
            PurgeBody {
                all: true,
                key: None,
                url: None,
                tag: None,
                soft: false,
            } => Ok(Purge::All),
            PurgeBody {
                url: Some(_),
                key: Some(_),
                ..
            } => Err("give `url` or `key`, not both".into()),
            _ => Err(
                "give one of {\"key\": \"...\"}, {\"url\": \"...\"}, {\"tag\": \"...\"} \
                 (each with optional \"soft\": true) or {\"all\": true}"
                    .into(),
            ),
        }
    }
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// What a purge did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purged {
    All,
    Key {
        key: String,
        found: bool,
        soft: bool,
    },
    Tag {
        tag: String,
        keys: usize,
        soft: bool,
    },
}

impl Control {
    /// Purges from a tenant's cache.
    pub async fn purge(&self, id: &str, purge: Purge) -> Result<Purged, ControlError> {
        let _desired = self.desired.lock().await;
        let tenant = self.tenant(id)?;
        let store = &tenant.store;
        let by_key = |key: String, soft: bool| {
            let found = if soft {
                store.expire(&key)
            } else {
                store.remove(&key)
            };
            Purged::Key { key, found, soft }
        };
        Ok(match purge {
            Purge::All => {
                tenant.purge_all();
                Purged::All
            }
            Purge::Key { key, soft } => by_key(key, soft),
            Purge::Url { url, soft } => by_key(self.key_of_url(&tenant, &url).await?, soft),
            Purge::Tag { tag, soft } => {
                let keys = store.purge_tag(&tag, soft);
                Purged::Tag { tag, keys, soft }
            }
        })
    }

    /// The key the tenant's active policy gives a GET of `url`.
    async fn key_of_url(
        &self,
        tenant: &Arc<crate::tenant::Tenant>,
        url: &str,
    ) -> Result<String, ControlError> {
        let uri: Uri = url
            .parse()
            .map_err(|_| ControlError::Invalid(format!("invalid url {url:?}")))?;
        let authority = match uri.authority() {
            Some(a) => a.to_string(),
            None => tenant.config.hosts.first().cloned().unwrap_or_default(),
        };
        let target = uri.path_and_query().map_or("/", |p| p.as_str());
        let target: Uri = target
            .parse()
            .map_err(|_| ControlError::Invalid(format!("invalid url {url:?}")))?;
        let info = RequestInfo::internal(Method::GET, target, &authority);
        let module = tenant.policy.load_full();
        match decide_offline(&self.ctx.runtime, tenant, &module, Arc::new(info)).await {
            Ok(Decision::Lookup(lookup)) => Ok(lookup.key),
            _ => Err(ControlError::NotCached(url.to_string())),
        }
    }
}
