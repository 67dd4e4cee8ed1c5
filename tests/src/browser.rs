//! A real browser for the tests: headless Chromium (Debian's `chromium`)
//! driven over the Chrome DevTools Protocol on a WebSocket.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// One headless Chromium and a connection to its first tab.
pub struct Browser {
    child: Child,
    page: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    _profile: std::path::PathBuf,
}

impl Browser {
    /// Starts Chromium with a profile of its own and attaches to its tab.
    pub async fn start() -> Browser {
        let profile = crate::scratch_dir().join("chromium-profile");
        let mut child = Command::new(chromium())
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--window-size=1280,800",
                "--remote-debugging-port=0",
                &format!("--user-data-dir={}", profile.display()),
                "about:blank",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium (Debian package `chromium`)");
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID"
        let stderr = child.stderr.take().unwrap();
        let port = tokio::task::spawn_blocking(move || {
            let mut lines = BufReader::new(stderr).lines();
            let port = lines.by_ref().find_map(|line| {
                let line = line.ok()?;
                let url = line.split("DevTools listening on ws://").nth(1)?;
                url.split(['/', ':']).nth(1)?.parse::<u16>().ok()
            });
            // Keep draining, or Chromium blocks on a full pipe.
            std::thread::spawn(move || lines.for_each(drop));
            port
        })
        .await
        .unwrap()
        .expect("chromium printed its DevTools address");
        let page = page_socket(port).await;
        let (page, _) = tokio_tungstenite::connect_async(&page)
            .await
            .unwrap_or_else(|e| panic!("attach to the tab at {page}: {e}"));
        Browser {
            child,
            page,
            next_id: 0,
            _profile: profile,
        }
    }

    /// Sends a DevTools command and waits for its result.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let command = json!({ "id": id, "method": method, "params": params });
        self.page
            .send(Message::text(command.to_string()))
            .await
            .expect("send to chromium");
        loop {
            let message = tokio::time::timeout(Duration::from_secs(30), self.page.next())
                .await
                .expect("chromium answers within 30 s")
                .expect("the tab is open")
                .expect("a DevTools message");
            let Message::Text(text) = message else {
                continue;
            };
            let value: Value = serde_json::from_str(&text).unwrap();
            if value["id"] == id {
                assert!(value.get("error").is_none(), "{method}: {value}");
                return value["result"].clone();
            }
        }
    }

    pub async fn navigate(&mut self, url: &str) {
        self.call("Page.enable", json!({})).await;
        self.call("Page.navigate", json!({ "url": url })).await;
    }

    /// Evaluates a JavaScript expression in the page; its value.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        result["result"]["value"].clone()
    }

    /// Evaluates `expression` until it is truthy, for at most `limit` (a
    /// bound, not a timing assertion); its last value.
    pub async fn wait_for(&mut self, expression: &str, limit: Duration) -> Value {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let value = self.eval(expression).await;
            let truthy = !matches!(&value, Value::Null | Value::Bool(false))
                && value != json!("")
                && value != json!([]);
            if truthy || std::time::Instant::now() > deadline {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A PNG of what the tab shows.
    pub async fn screenshot(&mut self) -> Vec<u8> {
        use base64::Engine;
        let shot = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("image data"))
            .expect("base64 PNG")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Chromium's command; installed with apt-get (Debian's `chromium`) the
/// first time a test needs it on a machine without it, so `cargo test`
/// sets itself up as the README says.
fn chromium() -> &'static str {
    static FOUND: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();
    FOUND.get_or_init(|| {
        let installed = || {
            ["chromium", "chromium-browser", "google-chrome"]
                .into_iter()
                .find(|name| {
                    Command::new(name)
                        .arg("--version")
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .is_ok_and(|s| s.success())
                })
        };
        if let Some(name) = installed() {
            return name;
        }
        let _ = Command::new("sh")
            .args([
                "-c",
                "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium",
            ])
            .stdout(Stdio::null())
            .status();
        installed().expect(
            "Chromium is needed for the status page test: `apt-get install chromium` failed",
        )
    })
}

/// The WebSocket of the browser's first tab, from its `/json/list` (the
/// tab may show up a moment after the DevTools line).
async fn page_socket(port: u16) -> String {
    let client = crate::Client::new();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    for _ in 0..100 {
        // Chromium writes the tab's address from the Host it is asked with.
        let host = addr.to_string();
        let list = client
            .send_to(
                addr,
                http::Method::GET,
                &host,
                "/json/list",
                &[],
                bytes::Bytes::new(),
            )
            .await;
        let targets: Value = serde_json::from_slice(&list.body).unwrap_or(Value::Null);
        let page = targets.as_array().and_then(|t| {
            t.iter()
                .find(|t| t["type"] == "page")
                .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(String::from))
        });
        if let Some(page) = page {
            return page;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromium shows no tab on port {port}");
}
