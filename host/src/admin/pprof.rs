//! `GET /debug/pprof/profile?seconds=N`: a CPU profile of the whole node,
//! sampled at 99 Hz (pprof-rs: SIGPROF and a stack walk per sample), in
//! the pprof protobuf format `go tool pprof` and `pprof -top` read, or with
//! `format=flamegraph` as an SVG. One profile at a time; N from 1 to 60.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use http_body_util::Full;
use prost::Message;

use super::{error, AdminResponse};

/// Samples per second: off the beat of periodic work (as Go's 100 Hz is
/// not, by one).
const FREQUENCY: i32 = 99;
const MAX_SECONDS: u64 = 60;

/// Set while a profile runs (the sampler is process-wide).
static RUNNING: AtomicBool = AtomicBool::new(false);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Pprof,
    Flamegraph,
}

/// Parses the query, takes the profile on a blocking thread, answers it.
pub(super) async fn profile(query: Option<&str>) -> AdminResponse {
    let (seconds, format) = match parse(query) {
        Ok(asked) => asked,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    if RUNNING.swap(true, Ordering::AcqRel) {
        return error(StatusCode::CONFLICT, "a profile is already being taken");
    }
    let taken =
        tokio::task::spawn_blocking(move || take(Duration::from_secs(seconds), format)).await;
    RUNNING.store(false, Ordering::Release);
    match taken {
        Ok(Ok((body, content_type))) => {
            let mut r = AdminResponse::new(Full::new(Bytes::from(body)));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            r
        }
        Ok(Err(e)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("profiling failed: {e}"),
        ),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("profiling failed: {e}"),
        ),
    }
}

/// `seconds` (default 10) and `format` (`pprof`, default, or `flamegraph`).
fn parse(query: Option<&str>) -> Result<(u64, Format), String> {
    let (mut seconds, mut format) = (10, Format::Pprof);
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=').unwrap_or((pair, "")) {
            ("seconds", n) => {
                seconds = n
                    .parse::<u64>()
                    .ok()
                    .filter(|n| (1..=MAX_SECONDS).contains(n))
                    .ok_or_else(|| format!("seconds must be 1 to {MAX_SECONDS}, not {n:?}"))?;
            }
            ("format", "pprof" | "proto") => format = Format::Pprof,
            ("format", "flamegraph" | "svg") => format = Format::Flamegraph,
            ("format", other) => {
                return Err(format!("unknown format {other:?} (pprof, flamegraph)"))
            }
            (name, _) => return Err(format!("unknown parameter {name:?} (seconds, format)")),
        }
    }
    Ok((seconds, format))
}

/// Samples for `duration`, then resolves the stacks.
fn take(duration: Duration, format: Format) -> Result<(Vec<u8>, &'static str), String> {
    let guard = pprof::ProfilerGuardBuilder::default()
        .frequency(FREQUENCY)
        // The unwinder cannot walk these reliably from a signal handler.
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
        .map_err(|e| e.to_string())?;
    std::thread::sleep(duration);
    let report = guard.report().build().map_err(|e| e.to_string())?;
    drop(guard);
    match format {
        Format::Pprof => {
            let profile = report.pprof().map_err(|e| e.to_string())?;
            Ok((profile.encode_to_vec(), "application/vnd.google.protobuf"))
        }
        Format::Flamegraph => {
            let mut svg = Vec::new();
            report.flamegraph(&mut svg).map_err(|e| e.to_string())?;
            if svg.is_empty() {
                // inferno draws nothing without samples: an idle node.
                svg = format!(
                    "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"600\" height=\"40\">\
                     <text x=\"10\" y=\"25\">no CPU samples in {} s: the node was idle</text></svg>\n",
                    duration.as_secs()
                )
                .into_bytes();
            }
            Ok((svg, "image/svg+xml"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_is_bounded_and_checked() {
        assert_eq!(parse(None), Ok((10, Format::Pprof)));
        assert_eq!(
            parse(Some("seconds=2&format=flamegraph")),
            Ok((2, Format::Flamegraph))
        );
        assert!(parse(Some("seconds=0")).is_err());
        assert!(parse(Some("seconds=61")).is_err());
        assert!(parse(Some("seconds=x")).is_err());
        assert!(parse(Some("format=png")).is_err());
        assert!(parse(Some("debug=1")).is_err());
    }
}
