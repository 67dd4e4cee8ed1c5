//! A real etcd on loopback for the fleet's tests: Debian's `etcd-server`
//! (installed with apt-get the first time a test needs it on a machine
//! without it, as the README says `cargo test` does), one member, its data
//! in a scratch directory, killed when dropped and its data removed (each
//! member preallocates over 100 MiB of log).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One etcd member.
pub struct Etcd {
    /// `http://127.0.0.1:PORT`, for `--etcd`.
    pub url: String,
    peer_url: String,
    dir: PathBuf,
    child: Option<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Etcd {
    /// Starts a member and waits until it answers.
    pub fn start() -> Etcd {
        let mut etcd = Etcd {
            url: format!("http://127.0.0.1:{}", free_port()),
            peer_url: format!("http://127.0.0.1:{}", free_port()),
            dir: crate::scratch_dir().join("etcd"),
            child: None,
        };
        etcd.resume();
        etcd
    }

    /// Stops the member (its data is kept: `resume` starts it again).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the stopped member again on the same ports and data.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "etcd is running");
        let child = Command::new(etcd_bin())
            .args([
                "--name",
                "test",
                "--data-dir",
                self.dir.to_str().unwrap(),
                "--listen-client-urls",
                &self.url,
                "--advertise-client-urls",
                &self.url,
                "--listen-peer-urls",
                &self.peer_url,
                "--initial-advertise-peer-urls",
                &self.peer_url,
                "--initial-cluster",
                &format!("test={}", self.peer_url),
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.with_extension("log")).unwrap())
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let health = format!("{}/health", self.url);
        while !healthy(&health) {
            assert!(Instant::now() < deadline, "etcd did not become healthy");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether `GET /health` answers `"health":"true"` (a blocking HTTP/1.0
/// request: no runtime needed).
fn healthy(url: &str) -> bool {
    use std::io::{Read, Write};
    let Some(addr) = url
        .strip_prefix("http://")
        .and_then(|u| u.split('/').next())
    else {
        return false;
    };
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: etcd\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.contains("\"health\":\"true\"")
}

/// etcd's command, installed from Debian's `etcd-server` if missing.
fn etcd_bin() -> &'static str {
    static FOUND: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();
    FOUND.get_or_init(|| {
        let installed = || {
            Command::new("etcd")
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !installed() {
            let _ = Command::new("sh")
                .args([
                    "-c",
                    "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server",
                ])
                .stdout(Stdio::null())
                .status();
            assert!(
                installed(),
                "etcd is needed for the fleet tests: `apt-get install etcd-server` failed"
            );
        }
        "etcd"
    })
}
