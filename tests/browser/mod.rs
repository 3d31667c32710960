//! A small Chrome DevTools Protocol client for the browser tests. It starts Debian's chromium
//! headless on loopback with a fresh profile, drives one page with real mouse and keyboard
//! input (the browser hit-tests and dispatches trusted events, as for a person), reads the DOM
//! and takes screenshots. Every wait is bounded; the browser is killed on drop.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Where Debian's chromium package puts the browser (`OUTPOST_CHROMIUM` overrides it).
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Longest wait for one DevTools answer.
const CALL_WAIT: Duration = Duration::from_secs(30);

/// The browser to use, or `None` when browser tests are skipped on purpose
/// (`OUTPOST_SKIP_BROWSER=1`). Without chromium and without that switch, the test fails and
/// says how to install it: CI installs it, so a missing browser there is a failure.
pub fn chromium_or_skip() -> Option<PathBuf> {
    let path = std::env::var_os("OUTPOST_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(CHROMIUM));
    if std::env::var("OUTPOST_SKIP_BROWSER").as_deref() == Ok("1") {
        eprintln!("OUTPOST_SKIP_BROWSER=1: skipping the browser test");
        return None;
    }
    assert!(
        path.is_file(),
        "chromium not found at {}: install it with `apt-get install -y chromium` (as .ci/run \
         does), point OUTPOST_CHROMIUM at it, or set OUTPOST_SKIP_BROWSER=1 to skip browser tests",
        path.display()
    );
    Some(path)
}

/// One headless chromium with one page attached.
pub struct Browser {
    child: Child,
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
    log: PathBuf,
    profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    /// Starts chromium headless with a new profile and opens a blank page of `width` × `height`.
    pub async fn launch(exe: &Path, width: u32, height: u32) -> Browser {
        let profile = tempfile::tempdir().expect("browser profile dir");
        let log = profile.path().join("chromium-stderr.log");
        let stderr = std::fs::File::create(&log).expect("browser log");
        // The flags keep chromium off the network (this machine's is closed: background
        // networking makes it hang) and make it start clean every time.
        let mut child = Command::new(exe)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--mute-audio",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("--window-size={width},{height}"))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()));
        // Chromium writes the port it chose, and the browser endpoint's path, to this file.
        let active = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        let (port, path) = loop {
            if let Ok(text) = std::fs::read_to_string(&active) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next())
                    && let Ok(port) = port.trim().parse::<u16>()
                {
                    break (port, path.trim().to_string());
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "chromium exited at start ({status}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "chromium did not open its DevTools port within 30 s: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let (ws, _) = tokio::time::timeout(
            CALL_WAIT,
            tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}{path}")),
        )
        .await
        .expect("DevTools connect timed out")
        .expect("DevTools connect");
        let mut browser = Browser {
            child,
            ws,
            session: String::new(),
            next_id: 0,
            log,
            profile,
        };
        let target = browser
            .send(None, "Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let target_id = target["targetId"].as_str().expect("targetId").to_string();
        let attached = browser
            .send(
                None,
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
            )
            .await;
        browser.session = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_string();
        browser.call("Page.enable", json!({})).await;
        browser
            .call(
                "Emulation.setDeviceMetricsOverride",
                json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
            )
            .await;
        browser
    }

    /// What chromium printed so far (for failure messages).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn send(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            message["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::Text(message.to_string().into()))
            .await
            .unwrap_or_else(|e| panic!("{method}: send: {e}"));
        let answer = tokio::time::timeout(CALL_WAIT, async {
            loop {
                let Some(frame) = self.ws.next().await else {
                    panic!("{method}: DevTools connection closed");
                };
                let frame = frame.unwrap_or_else(|e| panic!("{method}: {e}"));
                let Message::Text(text) = frame else { continue };
                let value: Value = serde_json::from_str(&text).expect("DevTools JSON");
                // Events (no id) and answers to other calls are not ours.
                if value["id"] == id {
                    return value;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{method}: no answer within {CALL_WAIT:?}"));
        if let Some(error) = answer.get("error") {
            panic!("{method} failed: {error}");
        }
        answer["result"].clone()
    }

    /// Sends a DevTools command to the page.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(Some(&session), method, params).await
    }

    /// Sends `headers` with every request the page makes from now on (e.g. `Authorization`
    /// for a node that requires credentials, as a browser would after a login prompt).
    pub async fn set_extra_headers(&mut self, headers: Value) {
        self.call("Network.enable", json!({})).await;
        self.call("Network.setExtraHTTPHeaders", json!({"headers": headers}))
            .await;
    }

    /// Opens `url` and waits until it has loaded.
    pub async fn goto(&mut self, url: &str) {
        let nav = self.call("Page.navigate", json!({"url": url})).await;
        if let Some(e) = nav.get("errorText") {
            panic!("navigating to {url}: {e}");
        }
        self.wait_for(
            "document.readyState === 'complete'",
            "the page to load",
            Duration::from_secs(30),
        )
        .await;
    }

    /// Evaluates a JavaScript expression in the page and returns its value (promises awaited).
    pub async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        if let Some(e) = r.get("exceptionDetails") {
            panic!("script failed: {expression}\n{e}");
        }
        r["result"]["value"].clone()
    }

    /// Waits until `expression` is truthy in the page (checked every 100 ms), and returns its
    /// value; fails after `within`, showing what the page says.
    pub async fn wait_for(&mut self, expression: &str, what: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let v = self.eval(expression).await;
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return v;
            }
            if Instant::now() > deadline {
                let text = self
                    .eval("document.body ? document.body.innerText.slice(0, 6000) : ''")
                    .await;
                panic!(
                    "timed out after {within:?} waiting for {what}\n--- the page says:\n{}",
                    text.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Where the centre of the element `selector` is on screen, after scrolling it into view;
    /// fails when it is missing, hidden, or covered by another element.
    async fn centre(&mut self, selector: &str) -> (f64, f64) {
        let sel = serde_json::to_string(selector).expect("selector");
        let js = format!(
            "(() => {{ const e = document.querySelector({sel}); if (!e) return 'missing'; \
             e.scrollIntoView({{block: 'center', inline: 'center'}}); \
             const r = e.getBoundingClientRect(); if (!r.width || !r.height) return 'hidden'; \
             const x = r.left + r.width / 2, y = r.top + r.height / 2; \
             const hit = document.elementFromPoint(x, y); \
             if (!hit || !(hit === e || e.contains(hit))) return 'covered'; return [x, y]; }})()"
        );
        let v = self
            .wait_for(
                &format!("(() => {{ const r = {js}; return Array.isArray(r) ? r : null; }})()"),
                &format!("{selector} to be visible and clickable"),
                Duration::from_secs(10),
            )
            .await;
        (
            v[0].as_f64().expect("x coordinate"),
            v[1].as_f64().expect("y coordinate"),
        )
    }

    /// Clicks the element `selector` with the mouse, as a person would.
    pub async fn click(&mut self, selector: &str) {
        let (x, y) = self.centre(selector).await;
        self.call(
            "Input.dispatchMouseEvent",
            json!({"type": "mouseMoved", "x": x, "y": y}),
        )
        .await;
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "buttons": 1, "clickCount": 1}),
            )
            .await;
        }
    }

    /// Clicks into the field `selector`, selects what it holds, and types `text` over it.
    pub async fn type_over(&mut self, selector: &str, text: &str) {
        self.click(selector).await;
        // Ctrl+A, the way a person selects a field's content before typing over it.
        for kind in ["keyDown", "keyUp"] {
            self.call(
                "Input.dispatchKeyEvent",
                json!({"type": kind, "key": "a", "code": "KeyA", "windowsVirtualKeyCode": 65,
                       "modifiers": 2, "commands": if kind == "keyDown" { json!(["selectAll"]) } else { json!([]) }}),
            )
            .await;
        }
        self.call("Input.insertText", json!({"text": text})).await;
    }

    /// The text of the first element matching `selector` (`None` if there is none).
    pub async fn text(&mut self, selector: &str) -> Option<String> {
        let sel = serde_json::to_string(selector).expect("selector");
        self.eval(&format!(
            "(() => {{ const e = document.querySelector({sel}); return e ? e.textContent : null; }})()"
        ))
        .await
        .as_str()
        .map(str::to_string)
    }

    /// Saves a PNG of the whole page (not only the window) to `path`.
    pub async fn screenshot(&mut self, path: &Path) {
        let size = self.call("Page.getLayoutMetrics", json!({})).await;
        let width = size["cssContentSize"]["width"].as_f64().unwrap_or(1280.0);
        let height = size["cssContentSize"]["height"].as_f64().unwrap_or(1000.0);
        let shot = self
            .call(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true,
                       "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}}),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("screenshot base64");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot dir");
        }
        std::fs::write(path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}
