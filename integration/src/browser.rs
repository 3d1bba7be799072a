//! Real headless Chromium for the dashboard tests, driven over the Chrome
//! DevTools Protocol (one page target, `Runtime.evaluate`,
//! `Page.captureScreenshot`). Killed, with its profile dir removed, on
//! drop.

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tungstenite::{Message, WebSocket};

/// Debian's chromium.
pub const CHROMIUM: &str = "/usr/bin/chromium";

pub struct Chromium {
    child: Child,
    ws: WebSocket<TcpStream>,
    next_id: u64,
    // Dropped after the child is killed (the profile dir).
    _profile: tempfile::TempDir,
}

impl Chromium {
    /// Start headless Chromium on about:blank and attach to its page.
    pub fn launch(width: u32, height: u32) -> Result<Chromium, String> {
        let profile = tempfile::Builder::new()
            .prefix("ember-chromium-")
            .tempdir()
            .map_err(|e| format!("profile dir: {e}"))?;
        let child = Command::new(CHROMIUM)
            .args([
                "--headless",
                // As root Chromium refuses to start with its own sandbox.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--hide-scrollbars",
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
            ])
            .arg(format!("--window-size={width},{height}"))
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {CHROMIUM}: {e}"))?;
        let mut guard = KillOnError(Some(child));
        let port = wait_for_port(profile.path(), guard.0.as_mut().expect("child"))?;
        let ws_url = page_target(port)?;
        let stream = TcpStream::connect(("127.0.0.1", port))
            .map_err(|e| format!("connecting to DevTools on port {port}: {e}"))?;
        // A hung browser fails the test instead of hanging it.
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        let (ws, _) = tungstenite::client(ws_url.as_str(), stream)
            .map_err(|e| format!("DevTools websocket {ws_url}: {e}"))?;
        let mut c = Chromium {
            child: guard.0.take().expect("child"),
            ws,
            next_id: 0,
            _profile: profile,
        };
        c.call("Page.enable", json!({}))?;
        c.call("Runtime.enable", json!({}))?;
        Ok(c)
    }

    /// Send one DevTools command and wait for its answer (events in
    /// between are skipped).
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({ "id": id, "method": method, "params": params });
        self.ws
            .send(Message::text(msg.to_string()))
            .map_err(|e| format!("{method}: sending: {e}"))?;
        loop {
            let m = self
                .ws
                .read()
                .map_err(|e| format!("{method}: reading: {e}"))?;
            let Ok(text) = m.to_text() else { continue };
            let Ok(v) = serde_json::from_str::<Value>(text) else {
                continue;
            };
            if v["id"] != id {
                continue;
            }
            if let Some(err) = v.get("error") {
                return Err(format!("{method}: {err}"));
            }
            return Ok(v["result"].clone());
        }
    }

    pub fn navigate(&mut self, url: &str) -> Result<(), String> {
        let r = self.call("Page.navigate", json!({ "url": url }))?;
        if let Some(e) = r.get("errorText") {
            return Err(format!("navigating to {url}: {e}"));
        }
        Ok(())
    }

    /// Evaluate a JavaScript expression in the page (promises awaited) and
    /// return its value.
    pub fn eval(&mut self, expression: &str) -> Result<Value, String> {
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        )?;
        if let Some(e) = r.get("exceptionDetails") {
            return Err(format!("{expression}: {e}"));
        }
        Ok(r["result"]["value"].clone())
    }

    /// Poll `expression` until it is truthy; its value. Panics with the
    /// last value and `what` after `limit`.
    pub fn wait_for(&mut self, what: &str, expression: &str, limit: Duration) -> Value {
        let t = Instant::now();
        let mut last = Value::Null;
        while t.elapsed() < limit {
            match self.eval(expression) {
                Ok(v) if truthy(&v) => return v,
                Ok(v) => last = v,
                Err(e) => last = Value::String(e),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("page never showed {what} within {limit:?}; last: {last}");
    }

    /// A PNG of the whole page, written to `path`; its bytes.
    pub fn screenshot(&mut self, path: &Path) -> Result<Vec<u8>, String> {
        use base64::Engine;
        let r = self.call(
            "Page.captureScreenshot",
            json!({ "format": "png", "captureBeyondViewport": true }),
        )?;
        let data = r["data"].as_str().ok_or("no screenshot data")?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| format!("screenshot base64: {e}"))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        std::fs::write(path, &png).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(png)
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct KillOnError(Option<Child>);

impl Drop for KillOnError {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}

/// Chromium writes the port it picked to `DevToolsActivePort` in its
/// profile dir.
fn wait_for_port(profile: &Path, child: &mut Child) -> Result<u16, String> {
    let file = profile.join("DevToolsActivePort");
    let t = Instant::now();
    loop {
        if let Some(port) = std::fs::read_to_string(&file)
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()))
        {
            return Ok(port);
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "{CHROMIUM} exited with {status} before DevTools was up"
            ));
        }
        if t.elapsed() > Duration::from_secs(60) {
            return Err(format!("{} never appeared", file.display()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The websocket URL of the browser's first page.
fn page_target(port: u16) -> Result<String, String> {
    let t = Instant::now();
    loop {
        let list = http_get(port, "/json/list")?;
        let targets: Value =
            serde_json::from_str(&list).map_err(|e| format!("/json/list: {e}: {list}"))?;
        if let Some(url) = targets.as_array().and_then(|l| {
            l.iter()
                .find(|t| t["type"] == "page")
                .and_then(|t| t["webSocketDebuggerUrl"].as_str())
        }) {
            return Ok(url.to_string());
        }
        if t.elapsed() > Duration::from_secs(30) {
            return Err(format!("no page target: {list}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn http_get(port: u16, path: &str) -> Result<String, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    // DevTools keeps the connection open: read by Content-Length.
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = s.read(&mut buf).map_err(|e| format!("GET {path}: {e}"))?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .and_then(|v| v.trim().parse::<usize>().ok())
                })
                .unwrap_or(usize::MAX);
            if body.len() >= len {
                return Ok(body.to_string());
            }
        }
    }
    let text = String::from_utf8_lossy(&raw);
    Ok(text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default())
}

/// Where tests leave files for people to look at (screenshots):
/// `target/test-artifacts/`.
pub fn artifact_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("test-artifacts")
}
