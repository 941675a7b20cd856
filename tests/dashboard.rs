//! The live dashboard in a real browser: headless Chromium (Debian's `chromium`, which
//! `.ci/run` installs) loads `GET /` from a backup of a real cluster, the primary is killed,
//! and the page, without a reload, shows the new primary and its term within 2 s. A
//! screenshot of the page after the failover is saved as `dashboard-failover.png` in the
//! tests' temporary directory (`target/tmp`).
//!
//! The browser is driven over its DevTools protocol: a WebSocket carrying JSON commands
//! (`Page.navigate`, `Runtime.evaluate`, `Page.captureScreenshot`).

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;

use support::procs::{Cluster, READY_TIMEOUT};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A headless Chromium and a DevTools connection to its page.
struct Browser {
    _process: tokio::process::Child,
    _profile: tempfile::TempDir,
    page: Socket,
    next_id: u64,
}

impl Browser {
    async fn start() -> Browser {
        let profile = tempfile::tempdir().expect("a profile directory");
        let mut process = tokio::process::Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--remote-debugging-port=0",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("chromium starts (Debian's `chromium` package; .ci/run installs it)");
        // It says where its DevTools listen: "DevTools listening on ws://HOST:PORT/...".
        let mut lines = BufReader::new(process.stderr.take().expect("stderr")).lines();
        let find = async {
            while let Some(line) = lines.next_line().await.expect("chromium's stderr") {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    return url.to_string();
                }
            }
            panic!("chromium ended without listening");
        };
        let browser_url = tokio::time::timeout(READY_TIMEOUT, find)
            .await
            .expect("chromium listens in time");
        // Keep draining its stderr so that it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let host = browser_url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .expect("a host")
            .to_string();
        let http = understudy::client::HttpClient::with_timeout(Duration::from_secs(5));
        let targets: Value = http
            .get(&host, "/json/list", &[])
            .await
            .expect("the list of pages")
            .json()
            .expect("JSON");
        let page_url = targets
            .as_array()
            .and_then(|targets| targets.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .expect("a page")
            .to_string();
        let (page, _) = tokio_tungstenite::connect_async(page_url.as_str())
            .await
            .expect("the page's DevTools");
        Browser {
            _process: process,
            _profile: profile,
            page,
            next_id: 0,
        }
    }

    /// Sends one command and returns its result (events in between are skipped).
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let command = json!({ "id": id, "method": method, "params": params });
        self.page
            .send(Message::text(command.to_string()))
            .await
            .expect("the browser takes the command");
        loop {
            let message = self
                .page
                .next()
                .await
                .expect("the browser answers")
                .expect("a message");
            let Message::Text(text) = message else {
                continue;
            };
            let answer: Value = serde_json::from_str(text.as_str()).expect("JSON");
            if answer["id"] == id {
                assert!(answer["error"].is_null(), "{method}: {answer}");
                return answer["result"].clone();
            }
        }
    }

    /// The value of a JavaScript expression in the page.
    async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true }),
            )
            .await;
        result["result"]["value"].clone()
    }

    /// Polls `expression` until `done` holds of it, or `within` passes; returns the last
    /// value and whether it held.
    async fn wait_for(
        &mut self,
        expression: &str,
        within: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> (Value, bool) {
        let until = Instant::now() + within;
        loop {
            let value = self.eval(expression).await;
            if done(&value) {
                return (value, true);
            }
            if Instant::now() >= until {
                return (value, false);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// What the page's header says: `[primary, term]`.
const HEADER: &str = "[document.getElementById('primary').textContent, \
                      document.getElementById('term').textContent]";

/// Operations: the dashboard shows a failover as it happens. Loaded from a backup, it names
/// the primary and its term; after a kill -9 of the primary the same page (no reload: a
/// mark left in it survives) names the new primary and the higher term within 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_failover_without_a_reload() {
    let mut cluster = Cluster::start(3).await;
    let old = cluster.primary_index().await;
    let watched = (0..3).find(|&i| i != old).expect("a backup");
    let old_addr = cluster.addr(old).to_string();
    let term = cluster.status(old).await.term;

    // Something on the board and a client in the table, for the screenshot.
    let client = support::procs::logged_in_client(&cluster, "watcher").await;
    for n in 1..=3 {
        client
            .send(&format!("message {n}"))
            .await
            .expect("acknowledged");
    }

    let mut browser = Browser::start().await;
    let url = format!("http://{}/", cluster.addr(watched));
    browser.call("Page.enable", json!({})).await;
    browser.call("Page.navigate", json!({ "url": url })).await;
    let (header, shown) = browser
        .wait_for(HEADER, READY_TIMEOUT, |v| v[0] == old_addr.as_str())
        .await;
    assert!(shown, "the page names the primary: {header}");
    assert_eq!(header[1], term.to_string());
    let members = browser
        .eval("document.querySelectorAll('.member').length")
        .await;
    assert_eq!(members, 3, "a card per member");
    browser.eval("window.notReloaded = true").await;

    cluster.kill(old);
    let (header, shown) = browser
        .wait_for(HEADER, Duration::from_secs(2), |v| {
            v[0] != old_addr.as_str()
                && v[0] != "none"
                && v[1]
                    .as_str()
                    .and_then(|t| t.parse::<u64>().ok())
                    .is_some_and(|t| t > term)
        })
        .await;
    assert!(
        shown,
        "within 2 s of the kill the page names a new primary and term: {header}"
    );
    let new = cluster.primary_index().await;
    assert_eq!(
        header[0],
        cluster.addr(new),
        "the page names the real new primary"
    );
    assert_eq!(browser.eval("window.notReloaded === true").await, true);
    let (_, dead_shown) = browser
        .wait_for(
            &format!(
                "document.querySelector('.member[data-id=\"{old_addr}\"]').classList.contains('unreachable')"
            ),
            READY_TIMEOUT,
            |v| *v == true,
        )
        .await;
    assert!(dead_shown, "the killed server is shown unreachable");

    let shot = browser
        .call("Page.captureScreenshot", json!({ "format": "png" }))
        .await;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().expect("image data"))
        .expect("base64");
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-failover.png");
    std::fs::write(&path, png).expect("the screenshot is saved");
    eprintln!("screenshot: {}", path.display());
}
