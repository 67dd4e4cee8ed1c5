//! Counters of the node as a whole: its connections, its TLS handshakes,
//! requests no tenant took, and what the process uses.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use super::shard::Counter;

/// A client connection's protocol (the `protocol` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
}

impl Protocol {
    pub const ALL: [Protocol; 2] = [Protocol::Http1, Protocol::Http2];

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::Http2 => "h2",
        }
    }
}

/// Open connections of one protocol, over TLS or not.
#[derive(Default)]
struct Open {
    plain: AtomicI64,
    tls: AtomicI64,
}

pub struct NodeMetrics {
    started: Instant,
    open: [Open; 2],
    pub accepted: Counter,
    pub tls_handshakes: Counter,
    pub tls_handshake_failures: Counter,
    /// Requests refused before any tenant took them (unknown host, bad
    /// authority, a loop...), by reason.
    refused: Mutex<BTreeMap<&'static str, u64>>,
}

impl Default for NodeMetrics {
    fn default() -> Self {
        NodeMetrics {
            started: Instant::now(),
            open: Default::default(),
            accepted: Counter::default(),
            tls_handshakes: Counter::default(),
            tls_handshake_failures: Counter::default(),
            refused: Mutex::default(),
        }
    }
}

/// Counts a connection as open until dropped.
pub struct OpenConnection<'a>(&'a AtomicI64);

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl NodeMetrics {
    /// A connection now served with `protocol`; open until the guard drops.
    pub fn opened(&self, protocol: Protocol, tls: bool) -> OpenConnection<'_> {
        let open = &self.open[protocol as usize];
        let gauge = if tls { &open.tls } else { &open.plain };
        gauge.fetch_add(1, Ordering::Relaxed);
        OpenConnection(gauge)
    }

    /// Open connections of `protocol`, over TLS or not.
    pub fn open(&self, protocol: Protocol, tls: bool) -> i64 {
        let open = &self.open[protocol as usize];
        if tls { &open.tls } else { &open.plain }.load(Ordering::Relaxed)
    }

    pub fn refused(&self, reason: &'static str) {
        let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        *refused.entry(reason).or_default() += 1;
    }

    pub fn refusals(&self) -> Vec<(&'static str, u64)> {
        let refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        refused.iter().map(|(r, n)| (*r, *n)).collect()
    }

    pub fn uptime_seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

/// What the process holds now, read from `/proc/self` (Linux; zeros
/// elsewhere).
#[derive(Debug, Default, Clone, Copy)]
pub struct Process {
    pub resident_bytes: u64,
    pub open_fds: u64,
}

impl Process {
    pub fn read() -> Process {
        // VmRSS is in kB whatever the page size.
        let resident_kib = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
                line.split_whitespace().nth(1)?.parse::<u64>().ok()
            })
            .unwrap_or(0);
        let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
        Process {
            resident_bytes: resident_kib * 1024,
            open_fds,
        }
    }
}
