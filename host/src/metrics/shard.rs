//! Counting without contention: every value bumped on the request path is
//! split into one copy per worker thread (a *shard*, on its own cache
//! lines), added up only when `/metrics` is read. An increment is one
//! relaxed atomic add on a line no other thread writes: no lock, no
//! cache-line ping-pong between the workers.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Shards of every sharded value: the machine's threads, at most 8 (a
/// node runs one tokio worker per core).
fn shard_count() -> usize {
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(4, |n| n.get())
            .clamp(1, 8)
    })
}

thread_local! {
    /// This thread's shard, handed out round-robin as threads first count
    /// (a serving lane takes its own index instead: two lanes never share
    /// one).
    static SHARD: usize = match crate::lane::current() {
        Some(lane) => lane % shard_count(),
        None => {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            NEXT.fetch_add(1, Ordering::Relaxed) % shard_count()
        }
    };
}

/// One shard, aligned so that two shards never share a cache line (128:
/// adjacent-line prefetch pairs lines on x86).
#[derive(Default)]
#[repr(align(128))]
struct Padded<T>(T);

/// `T` once per shard.
pub struct Sharded<T> {
    shards: Box<[Padded<T>]>,
}

impl<T: Default> Default for Sharded<T> {
    fn default() -> Self {
        Sharded {
            shards: (0..shard_count()).map(|_| Padded::default()).collect(),
        }
    }
}

impl<T> Sharded<T> {
    /// The calling thread's copy.
    pub fn local(&self) -> &T {
        &self.shards[SHARD.with(|s| *s) % self.shards.len()].0
    }

    /// Every copy, to add them up.
    pub fn all(&self) -> impl Iterator<Item = &T> {
        self.shards.iter().map(|p| &p.0)
    }
}

/// Adds `n` to a shard's cell.
pub fn add(cell: &AtomicU64, n: u64) {
    cell.fetch_add(n, Ordering::Relaxed);
}

/// A monotonic count (a Prometheus counter).
#[derive(Default)]
pub struct Counter(Sharded<AtomicU64>);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        add(self.0.local(), n);
    }

    pub fn get(&self) -> u64 {
        self.0.all().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

impl std::fmt::Debug for Counter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Counter({})", self.get())
    }
}

/// Upper bounds of the latency buckets, in seconds: 0.1 ms to 10 s, three
/// per decade (a hit is tens of microseconds, a far origin seconds).
pub const BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// A histogram's cells in one shard: a count per bucket (not cumulative;
/// the last is above 10 s), the sum in nanoseconds.
#[derive(Default)]
struct Cells {
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

/// A latency distribution (a Prometheus histogram in seconds).
#[derive(Default)]
pub struct Histogram(Sharded<Cells>);

/// A duration in whole nanoseconds, saturating (584 years fit).
pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = BUCKETS.partition_point(|&bound| bound < seconds);
        let cells = self.0.local();
        add(&cells.buckets[bucket], 1);
        add(&cells.sum_nanos, nanos(elapsed));
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.snapshot().1
    }

    /// The `q` quantile (0..1) in seconds, interpolated inside its bucket
    /// as Prometheus' `histogram_quantile` does; `None` with no
    /// observations. Above the last bound it answers that bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let (_, count, buckets) = self.snapshot();
        if count == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * count as f64;
        let (mut below, mut lower) = (0u64, 0.0);
        for (bound, n) in buckets {
            if n > 0 && (below + n) as f64 >= rank {
                if bound.is_infinite() {
                    return Some(lower);
                }
                let within = (rank - below as f64) / n as f64;
                return Some(lower + (bound - lower) * within);
            }
            below += n;
            lower = bound;
        }
        Some(lower)
    }

    /// (sum in seconds, count, count per bucket bound — not cumulative:
    /// prometheus-client's encoder adds them up).
    fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut counts = [0u64; BUCKETS.len() + 1];
        let mut sum = 0u64;
        for cells in self.0.all() {
            for (total, cell) in counts.iter_mut().zip(&cells.buckets) {
                *total += cell.load(Ordering::Relaxed);
            }
            sum = sum.saturating_add(cells.sum_nanos.load(Ordering::Relaxed));
        }
        let buckets: Vec<(f64, u64)> = BUCKETS
            .iter()
            .chain(std::iter::once(&f64::INFINITY))
            .copied()
            .zip(counts)
            .collect();
        (sum as f64 / 1e9, counts.iter().sum(), buckets)
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Histogram(count {})", self.count())
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.snapshot();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_inside_the_bucket_that_holds_them() {
        let h = Histogram::default();
        assert_eq!(h.quantile(0.5), None);
        // 100 observations between 1 and 2.5 ms: the median is half way.
        for _ in 0..100 {
            h.observe(Duration::from_micros(2000));
        }
        let p50 = h.quantile(0.5).unwrap();
        assert!((p50 - 0.00175).abs() < 1e-9, "{p50}");
        assert!((h.quantile(1.0).unwrap() - 0.0025).abs() < 1e-9);
        h.observe(Duration::from_secs(60));
        assert_eq!(h.quantile(1.0), Some(10.0));
    }

    #[test]
    fn counts_from_every_thread_add_up() {
        let counter = std::sync::Arc::new(Counter::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let c = counter.clone();
                std::thread::spawn(move || (0..1000).for_each(|_| c.inc()))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(counter.get(), 4000);
    }

    #[test]
    fn an_observation_lands_in_the_first_bucket_that_holds_it() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(100)); // exactly the first bound
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let (sum, count, buckets) = h.snapshot();
        assert_eq!(count, 3);
        assert!((sum - 60.0031).abs() < 1e-9);
        assert_eq!(buckets[0], (0.0001, 1));
        assert_eq!(buckets[4], (0.0025, 0));
        assert_eq!(buckets[5], (0.005, 1));
        assert_eq!(buckets[15], (10.0, 0));
        assert_eq!(buckets[16], (f64::INFINITY, 1));
    }
}
