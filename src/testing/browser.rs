//! Renders a local HTML page in headless Chromium, for tests of the generated reports: what the page
//! logged as errors, every URL it requested, its DOM after load, the element ids in it and a
//! screenshot. A self-contained report must load with no console error and no request, show
//! something, and hold its sections; [`check_self_contained`] checks all of it at once.
//!
//! It runs Debian's `chromium` package (`/usr/bin/chromium`, or `NETMORPH_CHROMIUM`, or `chromium` /
//! `chromium-browser` on PATH). Without it, rendering fails with a message naming the package: a
//! test of a report never skips.
//!
//! Chromium is driven over the DevTools protocol on `--remote-debugging-pipe` (NUL-terminated JSON
//! on file descriptors 3 and 4), not by its `--dump-dom` / `--screenshot` / `--enable-logging`
//! switches alone, because those cannot tell what the checks need:
//! - the console lines in its log (`INFO:CONSOLE:7] "boom", source: file:///... (7)`) carry no
//!   level for a web page, so `console.error` reads like `console.log`;
//! - its `--log-net-log` lists the browser's own requests too (Chromium 156 still asks
//!   update.googleapis.com, clients2.google.com and accounts.google.com with
//!   `--disable-background-networking`), and no `file://` load at all.
//!
//! The page's own session sees exactly the page: `Runtime.consoleAPICalled` of type `error` or
//! `assert`, `Runtime.exceptionThrown` (uncaught exceptions) and `Log.entryAdded` of level `error`
//! (Content-Security-Policy violations, failed loads) are its console errors; `Network.requestWillBeSent`
//! names every URL it requested, failed ones included (the network is closed in CI, yet an
//! `<img>`, `<link rel=stylesheet>`, `<script src>`, CSS `@import` or `url(...)` to it is recorded).
//! Requests of workers the page would start are not seen; a report has no script.

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// What to do when the browser is missing; every error about finding or starting it says this.
pub const INSTALL_CHROMIUM: &str = "install Debian's `chromium` package (apt-get install chromium); .ci/run does";

/// A hung browser fails the render after this long instead of hanging CI.
const TIMEOUT: Duration = Duration::from_secs(60);

/// After the load event, the page counts as settled once the browser has been quiet this long:
/// late errors (a timer, an image that fails to decode) still land in the result.
const QUIET: Duration = Duration::from_millis(300);

/// The longest wait for quiet after the load event.
const SETTLE_MAX: Duration = Duration::from_secs(5);

/// A page as headless Chromium loaded it.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The document after load (doctype and `<html>`'s outer HTML), scripts' changes included.
    pub dom: String,
    /// The `id` of every element in the document after load (inline SVG's too), in document order.
    pub ids: Vec<String>,
    /// Each console error, as `kind: text (source:line)`: `console.error`/`console.assert`
    /// (`console`), uncaught exceptions (`exception`) and the browser's own error messages such as
    /// Content-Security-Policy violations and failed loads (`security`, `network`, ...).
    pub console_errors: Vec<String>,
    /// Every URL the page requested, once each, in order, other than the page itself and `data:`,
    /// `about:` and `blob:` URLs (which fetch nothing). Another `file://` URL counts: a
    /// self-contained report loads nothing from beside it either.
    pub requests: Vec<String>,
    /// A PNG of the viewport (`width` x `height` CSS pixels at scale 1, scrollbars hidden), written
    /// beside the page as `<page's file name>.png`, so one can look at it after a failed test.
    pub screenshot: PathBuf,
}

impl Rendered {
    /// The ids of `expected` that no element of the rendered document has.
    pub fn missing_ids(&self, expected: &[&str]) -> Vec<String> {
        expected.iter().filter(|id| !self.ids.iter().any(|have| have == *id)).map(|id| id.to_string()).collect()
    }
}

/// Renders `page` in Chromium (see [`chromium`]) with a viewport of `width` x `height`.
pub fn render(page: &Path, width: u32, height: u32) -> Result<Rendered, String> {
    render_with(&chromium()?, page, width, height)
}

/// Renders `page` with a viewport of `width` x `height` in the Chromium at `browser`. Nothing is
/// judged here: see [`check_self_contained`] for the checks of a report.
pub fn render_with(browser: &Path, page: &Path, width: u32, height: u32) -> Result<Rendered, String> {
    let page = page.canonicalize().map_err(|e| format!("the page {}: {e}", page.display()))?;
    let url = file_url(&page);
    let screenshot = page.with_file_name(format!("{}.png", page.file_name().unwrap_or_default().to_string_lossy()));
    let mut chrome = Chromium::start(browser, width, height)?;
    let result = chrome.render(&url, width, height, &screenshot);
    chrome.close();
    result.map_err(|e| format!("rendering {} in {}: {e}{}", page.display(), browser.display(), chrome.log_tail()))
}

/// Renders `page` and checks that it is a sound self-contained report: no console error, no
/// request, a screenshot that is not blank, and an element for each id of `ids`. The error lists
/// every failed check (and where the screenshot is); on success, the render is returned for more
/// checks.
pub fn check_self_contained(page: &Path, width: u32, height: u32, ids: &[&str]) -> Result<Rendered, String> {
    let r = render(page, width, height)?;
    let mut problems = Vec::new();
    if !r.console_errors.is_empty() {
        problems.push(format!("console errors:\n    {}", r.console_errors.join("\n    ")));
    }
    if !r.requests.is_empty() {
        problems.push(format!("requests (a self-contained page makes none):\n    {}", r.requests.join("\n    ")));
    }
    if screenshot_is_blank(&r.screenshot)? {
        problems.push(format!("the screenshot {} is blank", r.screenshot.display()));
    }
    let missing = r.missing_ids(ids);
    if !missing.is_empty() {
        problems.push(format!("no element with id {}", missing.join(", ")));
    }
    if problems.is_empty() {
        Ok(r)
    } else {
        Err(format!("{}: {}", page.display(), problems.join("\n")))
    }
}

/// Whether the PNG at `png` shows nothing: fewer than 1% of its pixels differ from the top-left
/// one, or it has at most two distinct colours (a page's text and images are anti-aliased). A page
/// that failed to lay out, or whose content is hidden or off-screen, screenshots as its background.
pub fn screenshot_is_blank(png: &Path) -> Result<bool, String> {
    let img = image::open(png).map_err(|e| format!("the screenshot {}: {e}", png.display()))?.to_rgba8();
    let Some(&corner) = img.pixels().next() else {
        return Ok(true);
    };
    let differing = img.pixels().filter(|&&p| p != corner).count();
    if (differing as f64) < 0.01 * img.pixels().len() as f64 {
        return Ok(true);
    }
    let mut colours = std::collections::HashSet::new();
    for p in img.pixels() {
        colours.insert(p.0);
        if colours.len() > 2 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The Chromium binary: `NETMORPH_CHROMIUM` if set (it must exist), else `/usr/bin/chromium`, else
/// `chromium` or `chromium-browser` on PATH. The error says to install Debian's `chromium` package.
pub fn chromium() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("NETMORPH_CHROMIUM") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("NETMORPH_CHROMIUM={} is not a file: point it at a Chromium, or unset it and {INSTALL_CHROMIUM}", p.display()))
        };
    }
    let default = Path::new("/usr/bin/chromium");
    if default.is_file() {
        return Ok(default.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser"] {
        if let Some(p) = std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file()) {
            return Ok(p);
        }
    }
    Err(format!("no Chromium at /usr/bin/chromium, nor chromium or chromium-browser on PATH: {INSTALL_CHROMIUM}"))
}

/// `file://` and the absolute `path`, percent-encoded as Chromium would show it.
fn file_url(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut url = String::from("file://");
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            url.push(b as char);
        } else {
            url.push_str(&format!("%{b:02X}"));
        }
    }
    url
}

/// A running headless Chromium and the DevTools session of its one page. Dropping it kills the
/// browser's whole process group and removes its profile.
struct Chromium {
    child: Child,
    to_browser: ChildStdin,
    from_browser: Receiver<Value>,
    profile: PathBuf,
    log: PathBuf,
    deadline: Instant,
    next_id: u64,
    /// The page's DevTools session, once attached.
    session: Option<String>,
    page: PageEvents,
}

/// What the page's session reported.
#[derive(Default)]
struct PageEvents {
    console_errors: Vec<String>,
    /// `(requestId, url)` of each request; the page's own is told apart once its loader is known.
    requests: Vec<(String, String)>,
    /// The loaders whose `load` lifecycle event has fired.
    loaded: Vec<String>,
}

impl Chromium {
    fn start(browser: &Path, width: u32, height: u32) -> Result<Chromium, String> {
        if !browser.is_file() {
            return Err(format!("no Chromium at {}: {INSTALL_CHROMIUM}", browser.display()));
        }
        let profile = std::env::temp_dir().join(format!("netmorph-chromium-{}-{}", std::process::id(), unique()));
        std::fs::create_dir_all(&profile).map_err(|e| format!("create {}: {e}", profile.display()))?;
        let log = profile.with_extension("log");
        let log_file = std::fs::File::create(&log).map_err(|e| format!("create {}: {e}", log.display()))?;
        let mut cmd = Command::new("sh");
        // The DevTools pipe is fd 3 (to the browser) and fd 4 (from it); std gives a child only
        // 0-2, so a shell moves our stdin/stdout pipes there before it runs the browser.
        cmd.arg("-c").arg(r#"exec "$0" "$@" 3<&0 4>&1 0</dev/null 1>&2"#).arg(browser);
        cmd.args([
            "--headless",
            // Root (CI) has no sandbox; the GPU process is not needed for a screenshot.
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            // Without these the browser tries to reach Google, which a closed network refuses.
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--disable-extensions",
            "--mute-audio",
            "--hide-scrollbars",
            "--force-color-profile=srgb",
            "--enable-logging=stderr",
            "--remote-debugging-pipe",
        ]);
        cmd.arg(format!("--window-size={width},{height}"));
        cmd.arg(format!("--user-data-dir={}", profile.display()));
        cmd.arg("about:blank");
        // Its own process group, so that a hung browser is killed with its renderer and GPU
        // processes.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(log_file);
        let mut child = cmd.spawn().map_err(|e| format!("start {}: {e}; {INSTALL_CHROMIUM}", browser.display()))?;
        let to_browser = child.stdin.take().expect("piped stdin");
        let mut out = child.stdout.take().expect("piped stdout");
        let (tx, from_browser) = mpsc::channel();
        // A thread reads the messages, so that every wait can time out.
        std::thread::spawn(move || {
            let mut pending = Vec::new();
            let mut buf = [0u8; 64 * 1024];
            while let Ok(n @ 1..) = out.read(&mut buf) {
                pending.extend_from_slice(&buf[..n]);
                while let Some(end) = pending.iter().position(|&b| b == 0) {
                    let message: Vec<u8> = pending.drain(..=end).collect();
                    if let Ok(v) = serde_json::from_slice::<Value>(&message[..end]) {
                        if tx.send(v).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Ok(Chromium {
            child,
            to_browser,
            from_browser,
            profile,
            log,
            deadline: Instant::now() + TIMEOUT,
            next_id: 0,
            session: None,
            page: PageEvents::default(),
        })
    }

    fn render(&mut self, url: &str, width: u32, height: u32, screenshot: &Path) -> Result<Rendered, String> {
        let target = self.call("Target.createTarget", json!({ "url": "about:blank" }))?;
        let target_id = target["targetId"].as_str().ok_or("Target.createTarget gave no targetId")?;
        let attached = self.call("Target.attachToTarget", json!({ "targetId": target_id, "flatten": true }))?;
        self.session = Some(attached["sessionId"].as_str().ok_or("Target.attachToTarget gave no sessionId")?.to_string());
        for method in ["Page.enable", "Runtime.enable", "Log.enable", "Network.enable"] {
            self.call(method, json!({}))?;
        }
        self.call("Page.setLifecycleEventsEnabled", json!({ "enabled": true }))?;
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        )?;
        self.call("Emulation.setScrollbarsHidden", json!({ "hidden": true }))?;

        let nav = self.call("Page.navigate", json!({ "url": url }))?;
        if let Some(e) = nav["errorText"].as_str() {
            return Err(format!("navigating to {url}: {e}"));
        }
        let loader = nav["loaderId"].as_str().ok_or("Page.navigate gave no loaderId")?.to_string();
        while !self.page.loaded.contains(&loader) {
            self.pump(self.deadline.saturating_duration_since(Instant::now()))?;
        }
        let settle_until = Instant::now() + SETTLE_MAX;
        while Instant::now() < settle_until && self.pump(QUIET)? {}

        let got = self.call(
            "Runtime.evaluate",
            json!({
                "expression": "({ dom: (document.doctype ? new XMLSerializer().serializeToString(document.doctype) + '\\n' : '') \
                               + document.documentElement.outerHTML, \
                               ids: Array.from(document.querySelectorAll('[id]'), e => e.id) })",
                "returnByValue": true,
            }),
        )?;
        let value = &got["result"]["value"];
        let dom = value["dom"].as_str().ok_or_else(|| format!("reading the DOM gave {got}"))?.to_string();
        let ids = value["ids"].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_string)).collect();

        let shot = self.call("Page.captureScreenshot", json!({ "format": "png" }))?;
        let png = shot["data"].as_str().ok_or("Page.captureScreenshot gave no data")?;
        let png =
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, png).map_err(|e| format!("the screenshot's base64: {e}"))?;
        std::fs::write(screenshot, png).map_err(|e| format!("write {}: {e}", screenshot.display()))?;

        let page_url = url.split('#').next().unwrap_or(url);
        let mut requests: Vec<String> = Vec::new();
        for (id, u) in &self.page.requests {
            let local = ["data:", "about:", "blob:"].iter().any(|s| u.starts_with(s));
            if *id == loader || u.split('#').next() == Some(page_url) || local || requests.contains(u) {
                continue;
            }
            requests.push(u.clone());
        }
        Ok(Rendered {
            dom,
            ids,
            console_errors: std::mem::take(&mut self.page.console_errors),
            requests,
            screenshot: screenshot.to_path_buf(),
        })
    }

    /// Sends `method` (to the page's session once attached) and waits for its answer, taking in
    /// the events that come before it.
    fn call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = &self.session {
            message["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&message).expect("JSON");
        bytes.push(0);
        if let Err(e) = self.to_browser.write_all(&bytes).and_then(|_| self.to_browser.flush()) {
            std::thread::sleep(Duration::from_millis(100));
            return Err(match self.child.try_wait() {
                Ok(Some(status)) => format!("the browser exited ({status}) before it was sent {method}"),
                _ => format!("sending {method}: {e}"),
            });
        }
        loop {
            let m = self.next_message(self.deadline.saturating_duration_since(Instant::now()), method)?;
            if m["id"].as_u64() == Some(id) {
                if let Some(e) = m.get("error") {
                    return Err(format!("{method} failed: {e}"));
                }
                return Ok(m["result"].clone());
            }
            self.take_event(&m);
        }
    }

    /// Takes in the events that come within `wait`; false if none came.
    fn pump(&mut self, wait: Duration) -> Result<bool, String> {
        match self.from_browser.recv_timeout(wait.min(self.deadline.saturating_duration_since(Instant::now()))) {
            Ok(m) => {
                self.take_event(&m);
                Ok(true)
            }
            Err(RecvTimeoutError::Timeout) if Instant::now() < self.deadline => Ok(false),
            Err(RecvTimeoutError::Timeout) => Err(format!("the page did not load within {} s", TIMEOUT.as_secs())),
            Err(RecvTimeoutError::Disconnected) => Err("the browser closed its DevTools pipe (it crashed or exited)".into()),
        }
    }

    fn next_message(&mut self, wait: Duration, waiting_for: &str) -> Result<Value, String> {
        self.from_browser.recv_timeout(wait).map_err(|e| match e {
            RecvTimeoutError::Timeout => format!("no answer to {waiting_for} within {} s of the start", TIMEOUT.as_secs()),
            RecvTimeoutError::Disconnected => {
                format!("the browser closed its DevTools pipe (it crashed or exited) before answering {waiting_for}")
            }
        })
    }

    fn take_event(&mut self, m: &Value) {
        // Only the page's session: the browser's own doings are not the page's.
        if self.session.is_none() || m["sessionId"].as_str() != self.session.as_deref() {
            return;
        }
        let p = &m["params"];
        let at = |url: &Value, line: &Value| match (url.as_str(), line.as_u64()) {
            (Some(u), Some(l)) if !u.is_empty() => format!(" ({u}:{l})"),
            (Some(u), None) if !u.is_empty() => format!(" ({u})"),
            _ => String::new(),
        };
        match m["method"].as_str().unwrap_or_default() {
            "Runtime.consoleAPICalled" if matches!(p["type"].as_str(), Some("error" | "assert")) => {
                let args: Vec<String> = p["args"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| match &a["value"] {
                        Value::String(s) => s.clone(),
                        Value::Null => a["description"].as_str().unwrap_or(a["type"].as_str().unwrap_or("?")).to_string(),
                        v => v.to_string(),
                    })
                    .collect();
                let frame = &p["stackTrace"]["callFrames"][0];
                // Lines and columns of the protocol count from 0.
                let line = frame["lineNumber"].as_u64().map(|l| json!(l + 1)).unwrap_or(Value::Null);
                self.page.console_errors.push(format!("console: {}{}", args.join(" "), at(&frame["url"], &line)));
            }
            "Runtime.exceptionThrown" => {
                let d = &p["exceptionDetails"];
                let what = d["exception"]["description"].as_str().and_then(|s| s.lines().next()).unwrap_or_default();
                let line = d["lineNumber"].as_u64().map(|l| json!(l + 1)).unwrap_or(Value::Null);
                let text = d["text"].as_str().unwrap_or("Uncaught");
                self.page.console_errors.push(format!("exception: {text} {what}{}", at(&d["url"], &line)).replace("  ", " "));
            }
            "Log.entryAdded" if p["entry"]["level"] == "error" => {
                let e = &p["entry"];
                let kind = e["source"].as_str().unwrap_or("log");
                let line = e["lineNumber"].as_u64().map(|l| json!(l + 1)).unwrap_or(Value::Null);
                self.page.console_errors.push(format!("{kind}: {}{}", e["text"].as_str().unwrap_or_default(), at(&e["url"], &line)));
            }
            "Network.requestWillBeSent" => {
                if let (Some(id), Some(url)) = (p["requestId"].as_str(), p["request"]["url"].as_str()) {
                    self.page.requests.push((id.to_string(), url.to_string()));
                }
            }
            "Page.lifecycleEvent" if p["name"] == "load" => {
                if let Some(l) = p["loaderId"].as_str() {
                    self.page.loaded.push(l.to_string());
                }
            }
            _ => {}
        }
    }

    /// Asks the browser to quit, then kills what is left of its process group either way.
    fn close(&mut self) {
        let quit = serde_json::to_vec(&json!({ "id": 0, "method": "Browser.close" })).expect("JSON");
        let _ = self.to_browser.write_all(&[quit.as_slice(), &[0]].concat());
        // A browser that hung past the deadline gets no more time.
        let until = Instant::now() + Duration::from_secs(5).min(self.deadline.saturating_duration_since(Instant::now()));
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }

    fn kill(&mut self) {
        // The group is the browser's pid (process_group(0)): its renderer and GPU processes too.
        let _ = Command::new("sh").arg("-c").arg(format!("kill -KILL -{} 2>/dev/null", self.child.id())).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The end of the browser's log, for an error message.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().filter(|l| !l.contains("dbus")).collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n    ");
        if tail.is_empty() {
            String::new()
        } else {
            format!("\n  the browser's log ends:\n    {tail}")
        }
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            self.kill();
        }
        let _ = std::fs::remove_dir_all(&self.profile);
        let _ = std::fs::remove_file(&self.log);
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}
