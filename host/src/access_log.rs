//! The access log: one line per request on stdout, plain or JSON, written
//! by a thread of its own so the request path never waits on the terminal
//! or a pipe. Lines go through a bounded queue; when the writer falls that
//! far behind, lines are dropped and counted instead of slowing requests.
//!
//! A leaf: entries are plain data, built by the data plane.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

/// Lines queued at most before new ones are dropped.
const QUEUE: usize = 16 * 1024;

/// `server.access_log`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Off,
    /// Space-separated fields, the request line quoted (like nginx's
    /// combined format, with the node's own fields).
    Plain,
    /// One JSON object per line.
    Json,
}

/// What one line says.
pub struct Entry<'a> {
    pub time: SystemTime,
    pub tenant: &'a str,
    pub version: &'a str,
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub bytes: u64,
    pub duration: Duration,
    pub outcome: &'a str,
    /// The backend that answered, `-` if none did.
    pub backend: &'a str,
    pub request_id: &'a str,
    /// The W3C trace id (32 hex digits).
    pub trace_id: &'a str,
    /// Time spent in the tenant's guest (its hooks).
    pub guest: Duration,
    /// Time spent waiting for backends' response heads.
    pub origin: Duration,
}

/// The handle the request path writes through.
pub struct AccessLog {
    format: Format,
    lines: SyncSender<String>,
    dropped: Arc<AtomicU64>,
}

impl AccessLog {
    /// Starts the writer thread; `None` when the log is off.
    pub fn start(format: Format) -> Option<AccessLog> {
        if format == Format::Off {
            return None;
        }
        let (lines, queue) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("outpost-access-log".into())
            .spawn(move || write_lines(queue))
            .ok()?;
        Some(AccessLog {
            format,
            lines,
            dropped: Arc::default(),
        })
    }

    pub fn write(&self, entry: &Entry) {
        let line = match self.format {
            Format::Plain => plain(entry),
            Format::Json => json(entry),
            Format::Off => return,
        };
        match self.lines.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Lines dropped because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Writes lines as they come: what queued meanwhile goes in the same
/// write. Stdout is locked per batch only, so the node's own prints (its
/// listening lines) are never held up.
fn write_lines(queue: Receiver<String>) {
    let stdout = std::io::stdout();
    let mut batch = String::with_capacity(64 * 1024);
    while let Ok(line) = queue.recv() {
        batch.push_str(&line);
        while batch.len() < 64 * 1024 {
            match queue.try_recv() {
                Ok(line) => batch.push_str(&line),
                Err(_) => break,
            }
        }
        let mut out = stdout.lock();
        let _ = out.write_all(batch.as_bytes());
        let _ = out.flush();
        batch.clear();
    }
}

fn plain(e: &Entry) -> String {
    let mut line = String::with_capacity(160);
    let _ = writeln!(
        line,
        "{} {} {} {} \"{} {}\" {} {} {:.6} {} {} {} {}",
        httpdate::fmt_http_date(e.time),
        e.tenant,
        short_version(e.version),
        e.host,
        e.method,
        e.path,
        e.status,
        e.bytes,
        e.duration.as_secs_f64(),
        e.outcome,
        e.backend,
        e.request_id,
        e.trace_id,
    );
    line
}

fn json(e: &Entry) -> String {
    let time = e
        .time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let mut line = serde_json::json!({
        "time": time.as_secs_f64(),
        "tenant": e.tenant,
        "version": e.version,
        "method": e.method,
        "host": e.host,
        "path": e.path,
        "status": e.status,
        "bytes": e.bytes,
        "duration_s": e.duration.as_secs_f64(),
        "cache": e.outcome,
        "backend": e.backend,
        "request_id": e.request_id,
        "trace_id": e.trace_id,
        "guest_s": e.guest.as_secs_f64(),
        "origin_s": e.origin.as_secs_f64(),
    })
    .to_string();
    line.push('\n');
    line
}

/// `sha256:` and the first 12 hex digits: enough to tell versions apart.
fn short_version(version: &str) -> &str {
    version.get(..19).unwrap_or(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str) -> Entry<'_> {
        Entry {
            time: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            tenant: "t",
            version: "sha256:0123456789abcdef0123",
            method: "GET",
            host: "t.test",
            path,
            status: 200,
            bytes: 1024,
            duration: Duration::from_micros(1500),
            outcome: "hit",
            backend: "-",
            request_id: "abc",
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736",
            guest: Duration::from_micros(20),
            origin: Duration::ZERO,
        }
    }

    #[test]
    fn a_plain_line_has_every_field_and_quotes_the_request_line() {
        assert_eq!(
            plain(&entry("/a?b=c")),
            "Tue, 14 Nov 2023 22:13:20 GMT t sha256:0123456789ab t.test \"GET /a?b=c\" \
             200 1024 0.001500 hit - abc 4bf92f3577b34da6a3ce929d0e0e4736\n"
        );
    }

    #[test]
    fn a_json_line_is_one_object_whatever_the_path_holds() {
        let line = json(&entry("/\"x\"\n"));
        assert_eq!(line.matches('\n').count(), 1);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["path"], "/\"x\"\n");
        assert_eq!(v["cache"], "hit");
        assert_eq!(v["status"], 200);
    }
}
