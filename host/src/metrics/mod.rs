//! What the node counts, and the writer of `/metrics`.
//!
//! The request path only bumps sharded atomics ([`shard`]) held by the
//! things they describe: a tenant's [`TenantMetrics`], a module version's
//! guest-time histogram, a backend member's first-byte histogram, the
//! node's [`NodeMetrics`]. Nothing is registered: at scrape time the
//! admin API walks the live tenant table and writes each family through
//! [`Scrape`] (prometheus-client's OpenMetrics text encoder), so a deleted
//! tenant's, backend's or version's series disappear with it and no
//! label is ever a path or a cache key.

mod node;
mod shard;
mod tenant;

use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

pub use node::{NodeMetrics, Process, Protocol};
pub use shard::{nanos, Counter, Histogram};
pub use tenant::{Event, Outcome, TenantMetrics, CLASSES, SIGNATURE_VERDICTS};

/// The node's metrics that belong to no tenant.
#[derive(Default)]
pub struct Metrics {
    pub node: NodeMetrics,
}

/// Writes metric families at scrape time, one descriptor and its samples
/// at a time. Names are full (`outpost_...`); counters get `_total`.
pub struct Scrape<'a>(pub DescriptorEncoder<'a>);

type Written = Result<(), std::fmt::Error>;

impl Scrape<'_> {
    /// Counter families: whole counts (`u64`) or totals of seconds (`f64`).
    pub fn counters<L: EncodeLabelSet, N>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (L, N)>,
    ) -> Written
    where
        ConstCounter<N>: EncodeMetric,
    {
        let samples = samples.into_iter().map(|(l, v)| (l, ConstCounter::new(v)));
        self.family(name, help, MetricType::Counter, samples)
    }

    pub fn gauges<L: EncodeLabelSet>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (L, f64)>,
    ) -> Written {
        let samples = samples.into_iter().map(|(l, v)| (l, ConstGauge::new(v)));
        self.family(name, help, MetricType::Gauge, samples)
    }

    fn family<L: EncodeLabelSet, M: EncodeMetric>(
        &mut self,
        name: &str,
        help: &str,
        metric_type: MetricType,
        samples: impl Iterator<Item = (L, M)>,
    ) -> Written {
        let mut family = self.0.encode_descriptor(name, help, None, metric_type)?;
        for (labels, metric) in samples {
            metric.encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }

    pub fn histograms<'h, L: EncodeLabelSet>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (L, &'h Histogram)>,
    ) -> Written {
        let mut family = self
            .0
            .encode_descriptor(name, help, None, MetricType::Histogram)?;
        for (labels, histogram) in samples {
            histogram.encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }

    /// An info metric: one sample of value 1 whose labels are the facts.
    pub fn info<L: EncodeLabelSet + Clone + std::hash::Hash + Eq>(
        &mut self,
        name: &str,
        help: &str,
        labels: L,
    ) -> Written {
        let family = self
            .0
            .encode_descriptor(name, help, None, MetricType::Info)?;
        prometheus_client::metrics::info::Info::new(labels).encode(family)
    }
}
