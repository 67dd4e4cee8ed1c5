//! Keeps a node in step with etcd: reads the whole prefix at one revision,
//! applies it, then follows one watch from the revision after. A watch is
//! only ever resumed from the revision last applied (so no update is lost
//! to a reconnect); when etcd has compacted past it, everything is read
//! again and only tenants whose keys changed (by revision) are applied, so
//! an unchanged tenant keeps its instances, memo and cache. Bursts of
//! events are applied together; etcd being down never fails a request: the
//! node serves what it last applied and reconnects with jittered backoff.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Txn, TxnOp, WatchOptions,
};

use super::desired::{Desired, TenantKeys};
use super::keys::FleetKey;
use super::keys::Layout;
use super::membership::{Member, NodeRecord, Registration};
use super::snapshot::Snapshot;
use super::{apply, FleetStatus};
use crate::control::Control;
use crate::pop::MemberAddress;
use crate::secrets::Secret;

/// How long events are gathered before they are applied together.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// How often the watch is asked for progress, and how long an answer may
/// take before the stream counts as dead.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Reconnect backoff: from the first, doubling, jittered, up to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(10));

/// Where a node stands with etcd, between connections.
pub struct Sync {
    pub control: Arc<Control>,
    pub layout: Layout,
    pub endpoints: Vec<String>,
    pub status: Arc<FleetStatus>,
    member: Member,
    /// The node's lease while connected.
    registration: Option<Registration>,
    snapshot: Snapshot,
    desired: Desired,
    /// Per tenant, the keys it last applied without error: the last known
    /// good state the snapshot keeps.
    good: BTreeMap<String, TenantKeys>,
    /// Per tenant, the revisions of its keys when last applied (or
    /// refused: the same keys are not tried again until they change).
    applied: BTreeMap<String, [i64; 3]>,
    /// The etcd revision everything up to is applied; 0 before the first
    /// full read.
    revision: i64,
    /// The live nodes of the fleet, by id (from their leased records).
    nodes: BTreeMap<String, NodeRecord>,
}

/// Why a connection ended.
enum Ended {
    /// etcd compacted past the revision to resume from.
    Compacted,
    Lost(String),
}

impl Sync {
    pub fn new(
        control: Arc<Control>,
        layout: Layout,
        endpoints: Vec<String>,
        status: Arc<FleetStatus>,
        member: Member,
        snapshot: Snapshot,
    ) -> Sync {
        Sync {
            control,
            layout,
            endpoints,
            status,
            member,
            registration: None,
            snapshot,
            desired: Desired::default(),
            good: BTreeMap::new(),
            applied: BTreeMap::new(),
            revision: 0,
            nodes: BTreeMap::new(),
        }
    }

    /// Follows etcd for as long as the node runs, starting from the
    /// snapshot if there is one.
    pub async fn run(mut self) {
        self.restore().await;
        let mut backoff = BACKOFF.0;
        loop {
            let ended = self.connected().await;
            if self.status.connected() {
                // The connection worked: the next one starts over.
                backoff = BACKOFF.0;
            }
            match ended {
                Ended::Compacted => {
                    tracing::warn!(
                        revision = self.revision,
                        "etcd compacted past the revision applied: reading everything again"
                    );
                    self.revision = 0;
                    continue;
                }
                Ended::Lost(e) => {
                    self.status.set_connected(false);
                    tracing::warn!(
                        "etcd: {e}; serving the last state applied, retrying in {backoff:?}"
                    );
                }
            }
            tokio::time::sleep(jitter(backoff)).await;
            backoff = (backoff * 2).min(BACKOFF.1);
        }
    }

    /// Applies the last known good state saved on disk, so the node serves
    /// before (or without) etcd. The first connection still reads
    /// everything: what changed since is applied, the rest is kept.
    async fn restore(&mut self) {
        match self.snapshot.load(&self.layout) {
            Ok(None) => {}
            Ok(Some((desired, revision))) => {
                tracing::info!(
                    revision,
                    tenants = desired.tenants.len(),
                    "serving the last known good state from disk until etcd answers"
                );
                self.desired = desired;
                self.apply(revision).await;
                self.revision = 0;
            }
            Err(e) => tracing::warn!("cannot read the snapshot, starting empty: {e}"),
        }
    }

    /// One connection: a full read if there is nothing to resume from, then
    /// the watch.
    async fn connected(&mut self) -> Ended {
        let options = ConnectOptions::new()
            .with_require_leader(true)
            .with_connect_timeout(Duration::from_secs(3))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5));
        let mut client = match Client::connect(&self.endpoints, Some(options)).await {
            Ok(c) => c,
            Err(e) => return Ended::Lost(format!("cannot connect: {e}")),
        };
        if let Err(e) = self.share_mark_key(&mut client).await {
            return Ended::Lost(format!("cannot read {}: {e}", self.layout.mark_key()));
        }
        if self.revision == 0 {
            if let Err(e) = self.read_all(&mut client).await {
                return Ended::Lost(format!("cannot read {}: {e}", self.layout.all()));
            }
        }
        let (registration, keep_alive) = match self
            .member
            .register(
                &client,
                &self.layout,
                &self.status,
                self.control.context().clone(),
            )
            .await
        {
            Ok(r) => r,
            Err(e) => return Ended::Lost(format!("cannot register the node: {e}")),
        };
        self.registration = Some(registration);
        self.status.set_connected(true);
        let halts = super::halt::run(
            self.control.clone(),
            client.clone(),
            self.layout.clone(),
            self.member.node_id.clone(),
        );
        let ended = tokio::select! {
            ended = self.watch(&mut client) => ended,
            why = keep_alive.run() => Ended::Lost(why),
            why = halts => Ended::Lost(why),
        };
        self.registration = None;
        ended
    }

    /// Reads the fleet's forward-mark key into the POP, making it first if
    /// no node has (one transaction: whichever node comes first, every node
    /// reads the same key). A key written over by an operator is taken at
    /// the next connection.
    async fn share_mark_key(&mut self, client: &mut Client) -> Result<(), etcd_client::Error> {
        let key = self.layout.mark_key();
        let fresh: [u8; 32] = rand::random();
        let create = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.clone(),
                crate::http::hex::encode(&fresh),
                None,
            )]);
        client.txn(create).await?;
        let got = client.get(key.clone(), None).await?;
        let value = got.kvs().first().map(|kv| kv.value()).unwrap_or_default();
        match crate::http::hex::decode(value.trim_ascii()).filter(|k| k.len() >= 16) {
            Some(bytes) => self
                .control
                .context()
                .pop
                .set_mark_key(Secret::from(bytes.as_slice())),
            None => tracing::warn!(
                key,
                "the forward-mark key is not 16 or more bytes of hex: POP members cannot forward to each other"
            ),
        }
        Ok(())
    }

    /// Reads the whole prefix at one revision and applies what changed.
    async fn read_all(&mut self, client: &mut Client) -> Result<(), etcd_client::Error> {
        let all = client
            .get(self.layout.all(), Some(GetOptions::new().with_prefix()))
            .await?;
        let mut desired = Desired::default();
        self.nodes.clear();
        for kv in all.kvs() {
            if let Ok(key) = std::str::from_utf8(kv.key()) {
                self.node_put(key, kv.value());
                desired.put(
                    &self.layout,
                    key,
                    kv.value().to_vec().into(),
                    kv.mod_revision(),
                );
            }
        }
        self.status.heard();
        self.desired = desired;
        self.share_pop();
        let revision = all.header().map_or(0, |h| h.revision());
        self.apply(revision).await;
        self.status.set_synced();
        Ok(())
    }

    /// Follows the prefix from the revision after the one applied.
    async fn watch(&mut self, client: &mut Client) -> Ended {
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(self.revision + 1)
            .with_progress_notify();
        let mut stream = match client.watch(self.layout.all(), Some(options)).await {
            Ok(s) => s,
            Err(e) => return Ended::Lost(format!("cannot watch: {e}")),
        };
        // Events received and not applied yet: up to which revision, and
        // since when (applied DEBOUNCE after the first, however many follow).
        let mut pending: Option<(i64, Instant)> = None;
        loop {
            let wait = pending.map_or(PROGRESS_EVERY, |(_, since)| {
                DEBOUNCE.saturating_sub(since.elapsed())
            });
            let message = match tokio::time::timeout(wait, stream.message()).await {
                Err(_) if pending.is_some() => {
                    let (revision, _) = pending.take().unwrap_or((self.revision, Instant::now()));
                    self.apply(revision).await;
                    continue;
                }
                Err(_) => {
                    // Quiet: ask for progress; a live stream answers.
                    if let Err(e) = stream.request_progress().await {
                        return Ended::Lost(format!("watch stream: {e}"));
                    }
                    match tokio::time::timeout(PROGRESS_EVERY, stream.message()).await {
                        Ok(m) => m,
                        Err(_) => return Ended::Lost("watch stream went quiet".into()),
                    }
                }
                Ok(m) => m,
            };
            let response = match message {
                Ok(Some(r)) => {
                    self.status.heard();
                    r
                }
                Ok(None) => return Ended::Lost("watch stream ended".into()),
                Err(e) => return Ended::Lost(format!("watch stream: {e}")),
            };
            if response.compact_revision() > 0 {
                return Ended::Compacted;
            }
            if response.canceled() {
                return Ended::Lost(format!("watch canceled: {}", response.cancel_reason()));
            }
            if response.created() {
                // Its revision is etcd's now, not what was sent so far.
                continue;
            }
            self.record(response.events());
            let revision = response.header().map_or(self.revision, |h| h.revision());
            match pending {
                // A progress notification: everything up to it is applied.
                None if response.events().is_empty() => {
                    self.revision = self.revision.max(revision);
                }
                None => pending = Some((revision, Instant::now())),
                Some((_, since)) => pending = Some((revision, since)),
            }
        }
    }

    /// Applies every tenant whose keys changed since they were last
    /// applied, removes tenants whose keys are gone, and records `revision`
    /// as applied.
    async fn apply(&mut self, revision: i64) {
        let tenants = self.desired.tenants.clone();
        for (id, keys) in tenants.iter().filter(|(_, k)| k.doc.is_some()) {
            let revisions = keys.revisions();
            let before = self.applied.get(id).copied();
            if before == Some(revisions) {
                continue;
            }
            let changed = [0, 1, 2].map(|i| before.is_none_or(|b| b[i] != revisions[i]));
            let place = (id.as_str(), self.member.pop.as_str());
            let outcome = apply::tenant(&self.control, &self.desired, place, keys, changed).await;
            match &outcome {
                Ok(applied) => tracing::info!(
                    tenant = id,
                    version = &*applied.version,
                    purge_generation = applied.purge_generation,
                    revision,
                    "applied from etcd"
                ),
                Err(e) => tracing::warn!(
                    tenant = id,
                    revision,
                    "refused from etcd, keeping what it ran: {e}"
                ),
            }
            if outcome.is_ok() {
                self.good.insert(id.clone(), keys.clone());
            }
            let record = self.status.record(id, revisions, outcome);
            if let Some(r) = &mut self.registration {
                if let Err(e) = r.ack(&self.layout, &self.member.node_id, id, &record).await {
                    tracing::warn!(tenant = id, "cannot acknowledge in etcd: {e}");
                }
            }
            self.applied.insert(id.clone(), revisions);
        }
        let gone: Vec<String> = self
            .applied
            .keys()
            .filter(|id| tenants.get(*id).is_none_or(|k| k.doc.is_none()))
            .cloned()
            .collect();
        for id in gone {
            if self.control.tenant(&id).is_ok() {
                match self.control.delete_tenant(&id).await {
                    Ok(()) => tracing::info!(tenant = id, revision, "removed: gone from etcd"),
                    Err(e) => tracing::warn!(tenant = id, "cannot remove: {e}"),
                }
            }
            self.applied.remove(&id);
            self.good.remove(&id);
            self.status.forget(&id);
            if let Some(r) = &mut self.registration {
                r.forget(&self.layout, &self.member.node_id, &id).await;
            }
        }
        self.revision = self.revision.max(revision);
        self.status.set_revision(self.revision);
        if let Err(e) = self.snapshot.save(&self.good, &self.desired, self.revision) {
            tracing::warn!("cannot save the snapshot: {e}");
        }
    }
}

impl Sync {
    /// Records what a watch response's events put and deleted. Membership
    /// is not debounced: a node gone is a node to stop forwarding to now.
    fn record(&mut self, events: &[etcd_client::Event]) {
        let mut members_changed = false;
        for event in events {
            let Some(kv) = event.kv() else { continue };
            let Ok(key) = std::str::from_utf8(kv.key()) else {
                continue;
            };
            match event.event_type() {
                EventType::Put => {
                    members_changed |= self.node_put(key, kv.value());
                    let value = kv.value().to_vec().into();
                    self.desired
                        .put(&self.layout, key, value, kv.mod_revision())
                }
                EventType::Delete => {
                    members_changed |= self.node_delete(key);
                    self.desired.delete(&self.layout, key)
                }
            }
        }
        if members_changed {
            self.share_pop();
        }
    }

    /// Records a node's record if `key` is one; whether the POP's members
    /// (addresses) changed.
    fn node_put(&mut self, key: &str, value: &[u8]) -> bool {
        let Some(FleetKey::Node(id)) = self.layout.parse(key) else {
            return false;
        };
        let Ok(record) = serde_json::from_slice::<NodeRecord>(value) else {
            tracing::warn!(node = id, "ignoring a node record that does not parse");
            return self.nodes.remove(id).is_some();
        };
        let changed = self.nodes.get(id).is_none_or(|r| !r.same_place(&record));
        self.nodes.insert(id.to_string(), record);
        changed
    }

    fn node_delete(&mut self, key: &str) -> bool {
        match self.layout.parse(key) {
            Some(FleetKey::Node(id)) => self.nodes.remove(id).is_some(),
            _ => false,
        }
    }

    /// Tells the data plane which live nodes share this node's POP.
    fn share_pop(&self) {
        let members: Vec<MemberAddress> = self
            .nodes
            .iter()
            .filter(|(_, r)| r.pop == self.member.pop)
            .map(|(id, r)| MemberAddress {
                node_id: id.clone(),
                address: r.address,
            })
            .collect();
        let pop = &self.control.context().pop;
        let before = pop.size();
        pop.set_members(&members);
        if pop.size() != before {
            tracing::info!(
                pop = &*self.member.pop,
                members = pop.size(),
                "POP membership changed: keys re-homed"
            );
        }
    }
}

/// `d` scaled by a random factor in [0.5, 1.5), so a fleet's nodes do not
/// reconnect in step.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.5 + rand::random::<f64>())
}
