//! A lookup decision: answered from the cache, or fetched, stored and
//! answered; the HTTP caching rules are `cache::lookup` and `cache::fill`.

use std::sync::Arc;
use std::time::Instant;

use http::{Method, Response, StatusCode};

use super::exchange::Exchange;
use super::respond;
use super::route::{Answer, Forward, Validators};
use super::slice::SliceStart;
use crate::cache::fill::{Fill, Filled, StoreMode};
use crate::cache::lookup::{lookup, Lookup as Found};
use crate::cache::store::Selected;
use crate::cache::{slice, CacheStatus, Detail, FillGuard, FillOutcome, Fwd, StoredResponse};
use crate::http::ProxyBody;
use crate::runtime::{FetchError, Lookup};

impl Exchange {
    /// A cache lookup; on a miss, lead or join the fill of the key.
    pub(super) async fn lookup(mut self, decision: Lookup) -> Response<ProxyBody> {
        // Another node of the POP owns the key: it answers, stored there.
        if let Some(response) = Box::pin(self.via_owner(&decision.key, &decision.route)).await {
            return response;
        }
        // A Range on a miss is served from slices, not the whole object.
        if let Some((start, end)) = self.slice_candidate(&decision.key) {
            let size = self.ctx.cache.slice_bytes;
            match Box::pin(self.sliced(decision.clone(), start, end, size)).await {
                SliceStart::Done(response) => return response,
                SliceStart::NotSliceable(exchange) => self = exchange,
            }
        }
        let store = &self.tenant.store;
        let found = lookup(
            &self.ctx.cache,
            store,
            &decision.key,
            &self.tenant.id,
            &self.info.headers,
        )
        .await;
        let now = Instant::now();
        match found {
            Found::Hit(stored) => {
                let status = CacheStatus::hit(stored.ttl(now));
                respond::stored(&self.info, &stored, status)
            }
            Found::Collapsed(stored) => {
                let mut status = CacheStatus::forwarded(Fwd::UriMiss, Some(stored.status.as_u16()))
                    .ttl(stored.ttl(now));
                status.collapsed = true;
                respond::stored(&self.info, &stored, status)
            }
            Found::OnlyIfCachedMiss => respond::plain(
                StatusCode::GATEWAY_TIMEOUT,
                "not in cache (only-if-cached)\n",
            ),
            Found::StaleWhileRevalidate { stored, refresh } => {
                let info = self.info.clone();
                if let Some(lead) = refresh {
                    // RFC 5861 section 3: refresh once, in the background.
                    let stale = stored.clone();
                    tokio::spawn(async move {
                        let _ = self
                            .fill(decision, Some(stale), Some(lead), Fwd::Stale)
                            .await;
                    });
                }
                let status = CacheStatus::hit(stored.ttl(now)).detail(Detail::StaleWhileRevalidate);
                respond::stored(&info, &stored, status)
            }
            Found::Miss { stale, lead, fwd } => {
                Box::pin(self.fill(decision, stale, lead, fwd)).await
            }
        }
    }

    /// The single range of a GET that slicing would serve, unless the whole
    /// object is stored or its origin is known not to do ranges.
    fn slice_candidate(&self, key: &str) -> Option<(u64, Option<u64>)> {
        if self.info.method != Method::GET {
            return None;
        }
        let range = super::slice::single_range(&self.info.headers)?;
        let store = &self.tenant.store;
        let whole = store.select(key, &self.info.headers);
        (!slice::known_unsliceable(store, key) && !matches!(whole, Selected::Found(_)))
            .then_some(range)
    }

    /// Fetches for a lookup and stores what may be stored. `lead` is held
    /// when this request leads the coalesced fill of the key; its waiters
    /// learn the outcome exactly once, when it is known.
    async fn fill(
        mut self,
        decision: Lookup,
        stale: Option<Arc<StoredResponse>>,
        lead: Option<FillGuard>,
        fwd: Fwd,
    ) -> Response<ProxyBody> {
        let forward = Forward::Lookup {
            key: decision.key.clone(),
            validators: stale.as_ref().map(|s| Validators {
                etag: s.etag(),
                last_modified: s.last_modified(),
            }),
            range: None,
        };
        let result = self
            .fetch_route(&decision.route, &forward, stale.as_ref())
            .await;
        let Answer {
            fetched,
            mut mode,
            backend,
        } = match result {
            Ok(answer) => answer,
            Err(reason) => {
                if let Some(lead) = lead {
                    lead.finish(FillOutcome::NotStored);
                }
                return self.without_response(reason, stale.as_ref(), fwd);
            }
        };
        if let StoreMode::Rfc { ttl, .. } = &mut mode {
            *ttl = decision.ttl;
        }
        let max_object_bytes = self
            .tenant
            .config
            .max_object_mb
            .map_or(self.ctx.cache.max_object_bytes, |mb| {
                mb.saturating_mul(1024 * 1024)
            });
        let fill = Fill {
            store: &self.tenant.store,
            key: &decision.key,
            tenant: &self.tenant.id,
            request_headers: &self.info.headers,
            stale,
            mode,
            max_object_bytes,
            fwd,
        };
        match fill.complete(fetched, lead).await {
            Filled::Stored(stored, status, Some(head)) => {
                respond::fetched(&self.info, &stored, head, status)
            }
            Filled::Stored(stored, status, None) | Filled::Served(stored, status) => {
                respond::stored(&self.info, &stored, status)
            }
            Filled::Streamed {
                status,
                headers,
                body,
                cache_status,
            } => respond::streamed(status, headers, body, cache_status),
            Filled::Failed(error) => {
                self.origin_failed(&FetchError::InvalidResponse(error), &backend, fwd)
            }
        }
    }
}
