//! Listening sockets handed to the node by whoever started it, by the
//! protocol of systemd's socket activation (sd_listen_fds(3)):
//! `LISTEN_PID` is this process, `LISTEN_FDS` sockets follow from fd 3,
//! `LISTEN_FDNAMES` may name them `http` and `https`.
//!
//! With the socket held outside the node, a restart or an upgrade keeps
//! one accept queue: the new process accepts from the same socket while
//! the old one stops accepting and drains, so no connection is refused or
//! reset in between (a second bind with SO_REUSEPORT would get a queue of
//! its own, and closing the old one drops what waits in it).

use std::net::TcpListener;
use std::os::fd::{FromRawFd, RawFd};

/// The first fd passed (sd_listen_fds(3): `SD_LISTEN_FDS_START`).
const FIRST_FD: RawFd = 3;

/// The sockets passed to the node, if any.
#[derive(Debug, Default)]
pub struct Inherited {
    /// The plain listener (`http`, or the first socket).
    pub plain: Option<TcpListener>,
    /// The TLS listener (`https`, or the second socket).
    pub tls: Option<TcpListener>,
}

impl Inherited {
    /// Takes the sockets passed to this process and clears the variables,
    /// so that processes the node starts do not take them too. Call it
    /// before any thread starts (it changes the environment).
    pub fn take() -> Result<Inherited, String> {
        let passed_to_us = std::env::var("LISTEN_PID")
            .ok()
            .and_then(|pid| pid.parse::<u32>().ok())
            == Some(std::process::id());
        let count = std::env::var("LISTEN_FDS").ok();
        let names = std::env::var("LISTEN_FDNAMES").ok();
        for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
            std::env::remove_var(name);
        }
        let Some(count) = count.filter(|_| passed_to_us) else {
            return Ok(Inherited::default());
        };
        let count: RawFd = count
            .parse()
            .ok()
            .filter(|n| (1..=2).contains(n))
            .ok_or_else(|| format!("LISTEN_FDS={count:?}: the node takes 1 or 2 sockets"))?;
        let names: Vec<String> = names
            .map(|n| n.split(':').map(String::from).collect())
            .unwrap_or_default();
        let mut inherited = Inherited::default();
        for i in 0..count {
            let listener = adopt(FIRST_FD + i)?;
            let name = names.get(i as usize).map(String::as_str);
            let slot = match (name, i) {
                (Some("https"), _) | (None | Some(""), 1) => &mut inherited.tls,
                _ => &mut inherited.plain,
            };
            if slot.replace(listener).is_some() {
                return Err(format!(
                    "LISTEN_FDNAMES={names:?}: two sockets for one listener"
                ));
            }
        }
        Ok(inherited)
    }
}

/// The listening TCP socket at `fd`, checked, close-on-exec and
/// non-blocking.
fn adopt(fd: RawFd) -> Result<TcpListener, String> {
    // Only fds from LISTEN_FDS, which nothing else in the process owns.
    let socket = unsafe { socket2::Socket::from_raw_fd(fd) };
    let checked = socket
        .r#type()
        .ok()
        .filter(|t| *t == socket2::Type::STREAM)
        .filter(|_| socket.is_listener().unwrap_or(false))
        .and(socket.local_addr().ok())
        .and_then(|a| a.as_socket());
    if checked.is_none() {
        // Not ours to close either.
        std::mem::forget(socket);
        return Err(format!(
            "fd {fd} from LISTEN_FDS is not a TCP listening socket"
        ));
    }
    socket
        .set_cloexec(true)
        .and_then(|()| socket.set_nonblocking(true))
        .map_err(|e| format!("fd {fd} from LISTEN_FDS: {e}"))?;
    Ok(socket.into())
}
