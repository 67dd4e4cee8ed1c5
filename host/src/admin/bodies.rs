//! Request bodies of the admin API and what they become for the control
//! plane; their JSON answers.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{error, AdminResponse};
use crate::control::{CanaryRequest, Purged};
use crate::tenant::{AutoRollback, Sticky};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct VersionBody {
    pub version: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CanaryBody {
    version: String,
    percent: u32,
    /// Stick clients to a side by this header instead of their address.
    sticky_header: Option<String>,
    auto_rollback: Option<AutoRollbackBody>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AutoRollbackBody {
    /// Allowed excess of the candidate's failure rate, e.g. 0.05.
    margin: f64,
    /// Candidate requests before the rule applies.
    #[serde(default = "default_min_requests")]
    min_requests: u64,
}

fn default_min_requests() -> u64 {
    20
}

impl CanaryBody {
    pub(super) fn into_request(self) -> Result<CanaryRequest, String> {
        let sticky = match self.sticky_header {
            None => Sticky::ClientAddr,
            Some(h) => Sticky::Header(
                http::HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes())
                    .map_err(|_| format!("invalid header name {h:?}"))?,
            ),
        };
        Ok(CanaryRequest {
            version: self.version,
            percent: self.percent,
            sticky,
            auto_rollback: self.auto_rollback.map(|a| AutoRollback {
                margin: a.margin,
                min_requests: a.min_requests,
            }),
        })
    }
}

/// The answer to a purge.
pub(super) fn purged_json(purged: Purged) -> Value {
    match purged {
        Purged::All => json!({ "purged": "all" }),
        Purged::Key { key, found, soft } => json!({ "purged": key, "found": found, "soft": soft }),
        Purged::Tag { tag, keys, soft } => {
            json!({ "purged_tag": tag, "keys": keys, "soft": soft })
        }
    }
}

/// The whole body, up to `limit` bytes (413 past it).
pub(super) async fn body_bytes(
    req: Request<Incoming>,
    limit: usize,
) -> Result<Bytes, AdminResponse> {
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("cannot read the body: {e}"),
        )),
    }
}

/// A JSON body of type `T` (400 if it is not one).
pub(super) async fn body_json<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
) -> Result<T, AdminResponse> {
    let bytes = body_bytes(req, 64 * 1024).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}
