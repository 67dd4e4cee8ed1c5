//! Config values with a syntax of their own, checked while the file is
//! parsed (serde `try_from`), so an error carries the field's path and line.

use std::fmt;
use std::path::{Path, PathBuf};

use http::uri::{Authority, PathAndQuery, Scheme};
use http::Uri;
use serde::Deserialize;

/// Policies a config can name as `builtin:NAME`; the binary embeds their
/// components (`guests::builtin`).
pub const BUILTIN_POLICIES: [&str; 4] = ["default", "router", "cache-key", "origin-fallback"];

/// A backend's base URL: `http://host:port[/prefix]` or `https://...`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct BackendUrl {
    scheme: Scheme,
    authority: Authority,
    /// Path prefix without a trailing slash ("" for none).
    prefix: String,
}

impl TryFrom<String> for BackendUrl {
    type Error = String;

    fn try_from(url: String) -> Result<BackendUrl, String> {
        BackendUrl::parse(&url)
    }
}

impl BackendUrl {
    pub fn parse(url: &str) -> Result<BackendUrl, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        let scheme = match uri.scheme_str() {
            Some("http") => Scheme::HTTP,
            Some("https") => Scheme::HTTPS,
            _ => return Err(format!("{url:?} must start with http:// or https://")),
        };
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("{url:?} has no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!(
                "{url:?}: credentials in backend URLs are not supported"
            ));
        }
        if uri.query().is_some() {
            return Err(format!("{url:?}: a backend URL cannot have a query"));
        }
        let prefix = uri.path().trim_end_matches('/').to_string();
        Ok(BackendUrl {
            scheme,
            authority,
            prefix,
        })
    }

    /// Whether requests go over TLS.
    pub fn is_https(&self) -> bool {
        self.scheme == Scheme::HTTPS
    }

    /// The host name (or IP literal, without brackets) of the URL.
    pub fn host(&self) -> &str {
        let host = self.authority.host();
        host.strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
    }

    /// The URI of `path_and_query` on this backend.
    pub fn uri_for(&self, path_and_query: &str) -> Uri {
        let pq = if self.prefix.is_empty() {
            PathAndQuery::try_from(path_and_query)
        } else {
            PathAndQuery::try_from(format!("{}{}", self.prefix, path_and_query))
        }
        .unwrap_or_else(|_| PathAndQuery::from_static("/"));
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
            .expect("parts of a valid URI")
    }

    pub fn authority(&self) -> &Authority {
        &self.authority
    }
}

impl fmt::Display for BackendUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.prefix)
    }
}

/// Where a tenant's policy component comes from, as the config says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySource {
    /// A policy embedded in the binary: one of [`BUILTIN_POLICIES`].
    Builtin(&'static str),
    /// A component file, relative to the config file's directory unless
    /// absolute.
    File(PathBuf),
}

impl TryFrom<String> for PolicySource {
    type Error = String;

    fn try_from(spec: String) -> Result<PolicySource, String> {
        if let Some(name) = spec.strip_prefix("builtin:") {
            return BUILTIN_POLICIES
                .iter()
                .find(|n| **n == name)
                .map(|n| PolicySource::Builtin(n))
                .ok_or_else(|| {
                    format!(
                        "unknown built-in policy {name:?}; built-in policies are {BUILTIN_POLICIES:?}"
                    )
                });
        }
        if spec.is_empty() {
            return Err("must be `builtin:NAME` or a path to a .wasm component".into());
        }
        Ok(PolicySource::File(spec.into()))
    }
}

/// By hand rather than `#[serde(try_from)]`: the derive cannot see that a
/// `&'static str` variant borrows nothing from the input.
impl<'de> Deserialize<'de> for PolicySource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spec = String::deserialize(d)?;
        PolicySource::try_from(spec).map_err(serde::de::Error::custom)
    }
}

impl PolicySource {
    /// The file's path resolved against the config's directory.
    pub fn resolved(&self, base_dir: &Path) -> PolicySource {
        match self {
            PolicySource::File(path) => PolicySource::File(base_dir.join(path)),
            builtin => builtin.clone(),
        }
    }
}

impl fmt::Display for PolicySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicySource::Builtin(name) => write!(f, "builtin:{name}"),
            PolicySource::File(path) => write!(f, "{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_urls_keep_their_prefix() {
        let url = BackendUrl::parse("http://127.0.0.1:9/api/").unwrap();
        assert_eq!(
            url.uri_for("/x?y=1").to_string(),
            "http://127.0.0.1:9/api/x?y=1"
        );
        assert_eq!(url.to_string(), "http://127.0.0.1:9/api");
        assert!(BackendUrl::parse("ftp://x").is_err());
        assert!(BackendUrl::parse("http://u:p@x").is_err());
        assert!(BackendUrl::parse("http://x/?q").is_err());
    }

    #[test]
    fn policy_sources_name_builtins_or_files() {
        assert_eq!(
            PolicySource::try_from("builtin:router".to_string()),
            Ok(PolicySource::Builtin("router"))
        );
        assert!(PolicySource::try_from("builtin:nope".to_string()).is_err());
        assert!(PolicySource::try_from(String::new()).is_err());
        let file = PolicySource::try_from("p.wasm".to_string()).unwrap();
        assert_eq!(
            file.resolved(Path::new("/etc/outpost")),
            PolicySource::File("/etc/outpost/p.wasm".into())
        );
    }
}
