//! The nodes of one POP sharing their caches (Fastly's clustering, ATS's
//! peering): each cache key has an owner among the POP's live members
//! ([`rendezvous`] hashing), and a node that does not own a key forwards
//! its miss to the owner, so the POP stores each object once and asks the
//! origin once per key. A forwarded request is marked ([`marker`]) and is
//! never forwarded again. An owner that cannot be reached is skipped for a
//! few seconds and the key goes to the next member, then to the origin.
//!
//! An engine: it knows the members the fleet's membership gave it and how
//! to reach them; when to forward is the data plane's decision.

pub mod marker;
pub mod rendezvous;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::http::{ProxyBody, SignatureVerdict};
use crate::metrics::Counter;
use crate::secrets::Secret;

/// How long a member that refused a connection is skipped.
const DOWN_FOR: Duration = Duration::from_secs(3);

/// Longest wait for a member to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// What a forward waits for the owner's head beyond the route's own
/// first-byte timeouts (which the owner's fetch runs under).
const HEAD_MARGIN: Duration = Duration::from_secs(1);

/// Idle connections kept per member.
const POOL_MAX_IDLE: usize = 64;

/// A member of the POP as the membership shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberAddress {
    pub node_id: String,
    /// Its plain-HTTP listener.
    pub address: SocketAddr,
}

/// What the owner is told of the client of a forwarded request.
#[derive(Debug, Clone, Copy)]
pub struct ClientSide {
    pub ip: IpAddr,
    pub https: bool,
    pub signature: SignatureVerdict,
}

/// Another node of the POP.
#[derive(Debug)]
pub struct Peer {
    pub node_id: Arc<str>,
    pub address: SocketAddr,
    /// Milliseconds since [`epoch`] until which it is skipped.
    down_until: AtomicU64,
}

/// The POP as this node sees it: its members (itself included), in
/// node-id order, and their name hashes.
#[derive(Debug, Default)]
struct Members {
    /// `None` for this node.
    peers: Vec<Option<Arc<Peer>>>,
    hashes: Vec<u64>,
}

/// This node's POP: who owns which key, and the pooled connections to
/// the other members.
pub struct Pop {
    node_id: Arc<str>,
    members: ArcSwap<Members>,
    /// The fleet's key for forward marks (`marker`); none outside a fleet.
    mark_key: ArcSwapOption<Secret>,
    client: Client<HttpConnector, ProxyBody>,
    /// Misses answered by their owner.
    pub forwarded: Counter,
    /// Forwards that got no response head (the key went on to the next
    /// member or the origin).
    pub forward_failed: Counter,
    /// Marked requests served here as the owner.
    pub served_for_peers: Counter,
}

/// Why a forward got no response head.
#[derive(Debug)]
pub enum ForwardError {
    /// Nothing reached the member: it may go elsewhere.
    Unreachable(String),
    /// The member broke off or took too long; the request may have been
    /// seen (a GET or HEAD may still go elsewhere).
    Failed(String),
}

impl Pop {
    /// A POP of this node alone, until the membership says otherwise.
    pub fn new(node_id: &str) -> Pop {
        let mut tcp = HttpConnector::new();
        tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
        tcp.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(POOL_MAX_IDLE)
            .build(tcp);
        Pop {
            node_id: node_id.into(),
            members: ArcSwap::default(),
            mark_key: ArcSwapOption::empty(),
            client,
            forwarded: Counter::default(),
            forward_failed: Counter::default(),
            served_for_peers: Counter::default(),
        }
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Sets the fleet's key that forward marks are signed and checked with.
    pub fn set_mark_key(&self, key: Secret) {
        self.mark_key.store(Some(Arc::new(key)));
    }

    /// The mark a request carries, if a member of this POP made it: signed
    /// with the fleet's key within its validity, by another node that is a
    /// member now. The mark is removed in any case.
    pub fn take_mark(&self, headers: &mut http::HeaderMap) -> Option<marker::Mark> {
        let key = self.mark_key.load();
        let mark = marker::Mark::take(headers, key.as_deref(), unix_now())?;
        let member = mark.by != *self.node_id
            && self
                .members
                .load()
                .peers
                .iter()
                .flatten()
                .any(|p| *p.node_id == *mark.by);
        member.then_some(mark)
    }

    /// `mark` signed for sending (unsigned, and so refused, without a key).
    fn mark_value(&self, mark: &marker::Mark) -> http::HeaderValue {
        match &*self.mark_key.load() {
            Some(key) => mark.signed(key, unix_now()),
            None => http::HeaderValue::from_static("unsigned"),
        }
    }

    /// Sets the POP's live members (this node is always one of them, listed
    /// or not). A member that stays keeps its down mark.
    pub fn set_members(&self, members: &[MemberAddress]) {
        let before = self.members.load();
        let mut ids: Vec<&MemberAddress> = members
            .iter()
            .filter(|m| *m.node_id != *self.node_id)
            .collect();
        ids.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        ids.dedup_by(|a, b| a.node_id == b.node_id);
        let mut next = Members::default();
        let mut own = Some(());
        for member in ids {
            if own.is_some() && *self.node_id < *member.node_id {
                next.push_self(&self.node_id);
                own = None;
            }
            let kept = before
                .peers
                .iter()
                .flatten()
                .find(|p| *p.node_id == *member.node_id && p.address == member.address);
            let peer = kept.cloned().unwrap_or_else(|| {
                Arc::new(Peer {
                    node_id: member.node_id.as_str().into(),
                    address: member.address,
                    down_until: AtomicU64::new(0),
                })
            });
            next.hashes
                .push(rendezvous::name_hash(&[member.node_id.as_bytes()]));
            next.peers.push(Some(peer));
        }
        if own.is_some() {
            next.push_self(&self.node_id);
        }
        self.members.store(Arc::new(next));
    }

    /// How many nodes the POP has, this one included.
    pub fn size(&self) -> usize {
        self.members.load().peers.len().max(1)
    }

    /// The members to ask for `key` of `tenant` before serving it here: the
    /// owner and then the next member, as long as they come before this node
    /// in the key's order and are not marked down. Empty when this node owns
    /// the key (or is alone).
    pub fn owners(&self, tenant: &str, key: &str) -> Vec<Arc<Peer>> {
        let members = self.members.load();
        if members.peers.len() < 2 {
            return Vec::new();
        }
        let hash = rendezvous::name_hash(&[tenant.as_bytes(), key.as_bytes()]);
        let now = millis();
        rendezvous::order(hash, &members.hashes)
            .into_iter()
            .map_while(|i| members.peers[i].clone())
            .filter(|p| p.down_until.load(Ordering::Relaxed) <= now)
            .take(2)
            .collect()
    }

    /// Sends `request` (its target a path) to `peer`, marked as forwarded
    /// by this node for `client` (its address, whether it came over https,
    /// its signed-URL verdict), and waits up to
    /// `origin_wait` (what the owner's own fetch may take) and a margin for
    /// the head. A member that cannot be reached, or that hangs, is skipped
    /// for a few seconds.
    pub async fn forward(
        &self,
        peer: &Peer,
        mut request: Request<ProxyBody>,
        client: &ClientSide,
        origin_wait: Duration,
    ) -> Result<Response<Incoming>, ForwardError> {
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        *request.uri_mut() = Uri::try_from(format!("http://{}{path}", peer.address))
            .map_err(|e| ForwardError::Unreachable(e.to_string()))?;
        let mark = marker::Mark {
            by: self.node_id.to_string(),
            client_ip: client.ip,
            https: client.https,
            invalidate: None,
            count: None,
            signature: client.signature,
        };
        request
            .headers_mut()
            .insert(marker::HEADER, self.mark_value(&mark));
        let wait = origin_wait + HEAD_MARGIN;
        let skip = || {
            let until = millis() + DOWN_FOR.as_millis() as u64;
            peer.down_until.store(until, Ordering::Relaxed);
        };
        let sent = match tokio::time::timeout(wait, self.client.request(request)).await {
            Err(_) => {
                skip();
                Err(ForwardError::Failed(format!(
                    "no response head in {wait:?}"
                )))
            }
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) if e.is_connect() => {
                skip();
                Err(ForwardError::Unreachable(crate::http::error_chain(&e)))
            }
            Ok(Err(e)) => Err(ForwardError::Failed(crate::http::error_chain(&e))),
        };
        match &sent {
            Ok(_) => self.forwarded.inc(),
            Err(_) => self.forward_failed.inc(),
        }
        sent
    }
}

impl Pop {
    /// Tells `peer` that `key` of the tenant at `authority` was invalidated
    /// here (RFC 9111 section 4.4).
    pub async fn invalidate(
        &self,
        peer: &Peer,
        authority: &str,
        key: &str,
    ) -> Result<(), ForwardError> {
        let uri = Uri::try_from(format!("http://{}/", peer.address))
            .map_err(|e| ForwardError::Unreachable(e.to_string()))?;
        let mark = marker::Mark {
            by: self.node_id.to_string(),
            client_ip: IpAddr::from([127, 0, 0, 1]),
            // As the client's request would have come: a tenant that
            // redirects plain HTTP must not answer this with a redirect.
            https: true,
            invalidate: Some(key.to_string()),
            count: None,
            signature: SignatureVerdict::NotChecked,
        };
        let request = Request::post(uri)
            .header(http::header::HOST, authority)
            .header(marker::HEADER, self.mark_value(&mark))
            .body(crate::http::empty())
            .map_err(|e| ForwardError::Unreachable(e.to_string()))?;
        match tokio::time::timeout(CONNECT_TIMEOUT * 5, self.client.request(request)).await {
            Ok(Ok(r)) if r.status() == http::StatusCode::NO_CONTENT => Ok(()),
            Ok(Ok(r)) => Err(ForwardError::Failed(format!("answered {}", r.status()))),
            Ok(Err(e)) => Err(ForwardError::Failed(crate::http::error_chain(&e))),
            Err(_) => Err(ForwardError::Failed("no answer in time".into())),
        }
    }
}

impl Pop {
    /// The member that keeps `key` of `tenant`'s counter `counter`, when it
    /// is not this node: the first on the key's rendezvous order, whether or
    /// not it is marked down (a counter's total is kept in one place, so it
    /// is never counted elsewhere meanwhile).
    pub fn counter_owner(&self, tenant: &str, counter: &str, key: &str) -> Option<Arc<Peer>> {
        let members = self.members.load();
        if members.peers.len() < 2 {
            return None;
        }
        let hash = rendezvous::name_hash(&[
            tenant.as_bytes(),
            b"\0counter\0",
            counter.as_bytes(),
            key.as_bytes(),
        ]);
        let first = *rendezvous::order(hash, &members.hashes).first()?;
        members.peers[first].clone()
    }

    /// Asks `peer` to add `delta` to a counter's key it keeps (0 reads it);
    /// the new total.
    pub async fn count_at(&self, peer: &Peer, op: marker::CountOp) -> Result<u64, ForwardError> {
        if peer.down_until.load(Ordering::Relaxed) > millis() {
            return Err(ForwardError::Unreachable(format!(
                "{} refused a connection in the last {DOWN_FOR:?}",
                peer.node_id
            )));
        }
        let uri = Uri::try_from(format!("http://{}/", peer.address))
            .map_err(|e| ForwardError::Unreachable(e.to_string()))?;
        let mark = marker::Mark {
            by: self.node_id.to_string(),
            client_ip: IpAddr::from([127, 0, 0, 1]),
            https: false,
            invalidate: None,
            count: Some(op),
            signature: SignatureVerdict::NotChecked,
        };
        let request = Request::post(uri)
            .header(marker::HEADER, self.mark_value(&mark))
            .body(crate::http::empty())
            .map_err(|e| ForwardError::Unreachable(e.to_string()))?;
        let answer = async {
            let response = self.client.request(request).await.map_err(|e| {
                if e.is_connect() {
                    let until = millis() + DOWN_FOR.as_millis() as u64;
                    peer.down_until.store(until, Ordering::Relaxed);
                    ForwardError::Unreachable(crate::http::error_chain(&e))
                } else {
                    ForwardError::Failed(crate::http::error_chain(&e))
                }
            })?;
            let status = response.status();
            let body = http_body_util::BodyExt::collect(response.into_body())
                .await
                .map_err(|e| ForwardError::Failed(e.to_string()))?
                .to_bytes();
            let text = String::from_utf8_lossy(&body);
            match status {
                http::StatusCode::OK => text
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| ForwardError::Failed(format!("answered {text:?}"))),
                _ => Err(ForwardError::Failed(format!(
                    "{} answered {status}: {}",
                    peer.node_id,
                    text.trim()
                ))),
            }
        };
        match tokio::time::timeout(CONNECT_TIMEOUT * 2, answer).await {
            Ok(result) => result,
            Err(_) => Err(ForwardError::Failed(format!(
                "{} did not answer in {:?}",
                peer.node_id,
                CONNECT_TIMEOUT * 2
            ))),
        }
    }
}

impl Members {
    fn push_self(&mut self, node_id: &str) {
        self.hashes
            .push(rendezvous::name_hash(&[node_id.as_bytes()]));
        self.peers.push(None);
    }
}

impl ForwardError {
    pub fn as_str(&self) -> &'static str {
        match self {
            ForwardError::Unreachable(_) => "unreachable",
            ForwardError::Failed(_) => "failed",
        }
    }
}

impl std::fmt::Display for ForwardError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ForwardError::Unreachable(e) | ForwardError::Failed(e) => f.write_str(e),
        }
    }
}

/// Seconds since the Unix epoch: a mark's time.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Milliseconds since the first call: a clock for the down marks.
fn millis() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, port: u16) -> MemberAddress {
        MemberAddress {
            node_id: id.into(),
            address: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    #[tokio::test]
    async fn a_node_alone_owns_every_key() {
        let pop = Pop::new("edge-1");
        assert!(pop.owners("shop", "/a").is_empty());
        pop.set_members(&[member("edge-1", 1)]);
        assert!(pop.owners("shop", "/a").is_empty());
        assert_eq!(pop.size(), 1);
    }

    #[tokio::test]
    async fn every_node_of_a_pop_agrees_on_each_keys_owner() {
        let all = [
            member("edge-1", 1),
            member("edge-2", 2),
            member("edge-3", 3),
        ];
        let pops: Vec<Pop> = ["edge-1", "edge-2", "edge-3"]
            .iter()
            .map(|id| {
                let pop = Pop::new(id);
                pop.set_members(&all);
                pop
            })
            .collect();
        let mut owned = [0; 3];
        for k in 0..3_000 {
            let key = format!("/item/{k}");
            // The nodes that would serve the key themselves.
            let serving: Vec<usize> = (0..3)
                .filter(|&i| pops[i].owners("shop", &key).is_empty())
                .collect();
            assert_eq!(serving.len(), 1, "{key}: {serving:?}");
            owned[serving[0]] += 1;
            for (i, pop) in pops.iter().enumerate() {
                if let Some(owner) = pop.owners("shop", &key).first() {
                    assert_eq!(*owner.node_id, *pops[serving[0]].node_id, "node {i}, {key}");
                }
            }
        }
        assert!(
            owned.iter().all(|&n| (800..=1_200).contains(&n)),
            "{owned:?}"
        );
    }

    #[tokio::test]
    async fn the_same_key_of_another_tenant_may_have_another_owner() {
        let pop = Pop::new("edge-1");
        pop.set_members(&[
            member("edge-1", 1),
            member("edge-2", 2),
            member("edge-3", 3),
        ]);
        let differs = (0..100).any(|k| {
            let key = format!("/{k}");
            let a = pop.owners("a", &key).first().map(|p| p.node_id.clone());
            let b = pop.owners("b", &key).first().map(|p| p.node_id.clone());
            a != b
        });
        assert!(differs);
    }

    /// edge-9 in a POP with edge-1 and edge-2 (both at `port`), a key it
    /// comes last for, and that key's two owners before it.
    fn edge_9_behind_two_owners_at(port: u16) -> (Pop, String, Vec<Arc<Peer>>) {
        let pop = Pop::new("edge-9");
        pop.set_members(&[
            member("edge-1", port),
            member("edge-2", port),
            member("edge-9", 1),
        ]);
        let key = (0..)
            .map(|k| format!("/{k}"))
            .find(|k| pop.owners("shop", k).len() == 2)
            .unwrap();
        let owners = pop.owners("shop", &key);
        (pop, key, owners)
    }

    fn loopback_client() -> ClientSide {
        ClientSide {
            ip: IpAddr::from([127, 0, 0, 1]),
            https: false,
            signature: SignatureVerdict::NotChecked,
        }
    }

    #[tokio::test]
    async fn an_unreachable_owner_is_skipped_for_the_next_member() {
        // Port 9 on loopback: nothing listens (discard is not run here).
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let (pop, key, owners) = edge_9_behind_two_owners_at(port);
        let request = Request::get("/x").body(crate::http::empty()).unwrap();
        let sent = pop
            .forward(
                &owners[0],
                request,
                &loopback_client(),
                Duration::from_secs(1),
            )
            .await;
        assert!(
            matches!(sent, Err(ForwardError::Unreachable(_))),
            "{sent:?}"
        );
        let after = pop.owners("shop", &key);
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].node_id, owners[1].node_id);
    }

    #[tokio::test]
    async fn an_owner_that_hangs_is_given_up_on_and_skipped_for_the_next_member() {
        // Accepts connections, never answers.
        let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = hung.local_addr().unwrap().port();
        let _held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = hung.accept().await {
                open.push(socket);
            }
        });
        let (pop, key, owners) = edge_9_behind_two_owners_at(port);
        let request = Request::get("/x").body(crate::http::empty()).unwrap();
        let sent = pop
            .forward(
                &owners[0],
                request,
                &loopback_client(),
                Duration::from_millis(50),
            )
            .await;
        assert!(matches!(sent, Err(ForwardError::Failed(_))), "{sent:?}");
        assert_eq!(pop.forward_failed.get(), 1);
        let after = pop.owners("shop", &key);
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].node_id, owners[1].node_id);
    }
}
