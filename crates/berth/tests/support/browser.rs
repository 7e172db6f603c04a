//! A real browser for the tests of the web UI: Debian's headless `chromium`, driven by the npm
//! package `playwright-core` through `scripts/browser/run.mjs` (one `node` process and one
//! browser per call), with `axe-core` for accessibility checks. `scripts/browser.sh` installs
//! chromium, node and the packages (`scripts/test.sh` runs it).
//!
//! - [`run_script`] runs a test script (the text of an ES module) with a JSON argument and returns
//!   its result; it panics with the error, the page's console log and the path of a screenshot
//!   of the page at the failure when the script fails. [`try_run_script`] returns the
//!   [`ScriptFailure`] instead.
//! - The script's default export is an async function that receives `{page, context, browser,
//!   args, shot, axe, log}` and returns the result: `page` is a fresh playwright `Page` (actions
//!   and navigations time out after 10 s), `args` the JSON argument, `await shot(name)` saves a
//!   full-page PNG as `<screenshots_dir()>/<name>.png` and returns its path, `await axe()` returns
//!   axe-core's violations of impact serious or critical (`[{id, impact, help, helpUrl, nodes}]`).
//!   Scripts may import node's own modules (`node:assert`), nothing else. The contract is in
//!   full at the top of `scripts/browser/run.mjs`.
//! - The result is the returned object's fields plus `"ok": true`, `"log"` (every console
//!   message, uncaught page error and failed request of the pages, as `"<type>: <text>"`) and
//!   `"errors"` (the console errors, page errors and crashes among them, e.g. a Content Security
//!   Policy violation); a returned non-object is under `"result"`.
//! - Screenshots go to [`screenshots_dir`]: `$BERTH_SCREENSHOTS` (relative to the repository
//!   root) or `<repo>/target/screenshots`.
//!
//! ```ignore
//! let r = run_script(
//!     r#"export default async function ({ page, args, axe }) {
//!         await page.goto(args.url);
//!         return { title: await page.title(), violations: await axe() };
//!     }"#,
//!     json!({ "url": berth.url("/ui/") }),
//! );
//! assert_eq!(r["violations"], json!([]));
//! ```

use std::fmt;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The browser that `run.mjs` launches (Debian's package; playwright downloads none).
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// How long one run may take in all before its `node` is killed (the driver stops a script
/// itself after 90 s; this catches a driver that hangs).
const RUN_TIMEOUT: Duration = Duration::from_secs(150);

/// The folder of `run.mjs`, `package.json` and `node_modules`.
pub fn driver_dir() -> PathBuf {
    super::repo_root().join("scripts/browser")
}

/// Where `shot(name)` and the failure screenshots go: `$BERTH_SCREENSHOTS` (a relative path is
/// taken from the repository root), else `<repo>/target/screenshots`.
pub fn screenshots_dir() -> PathBuf {
    match std::env::var_os("BERTH_SCREENSHOTS").filter(|v| !v.is_empty()) {
        Some(dir) => super::repo_root().join(dir),
        None => super::repo_root().join("target/screenshots"),
    }
}

/// A script that failed: what the driver reported.
#[derive(Debug, Clone)]
pub struct ScriptFailure {
    /// The error's message (for playwright's errors, with the call log: what it waited for).
    pub error: String,
    /// The error's stack, when it has one (it names the script's line).
    pub stack: Option<String>,
    /// Every console message, page error and failed request of the pages, in order.
    pub log: Vec<String>,
    /// A screenshot of the page when the script failed, if one could be taken.
    pub screenshot: Option<PathBuf>,
    /// The driver's exit status and stderr (the script's `console.log` goes there).
    pub status: String,
    pub stderr: String,
}

impl fmt::Display for ScriptFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.error.trim_end())?;
        if let Some(stack) = &self.stack {
            for line in stack.lines().map(str::trim).filter(|l| l.starts_with("at ")) {
                writeln!(f, "    {line}")?;
            }
        }
        if self.log.is_empty() {
            writeln!(f, "--- the page logged nothing")?;
        } else {
            writeln!(f, "--- the page's log ({} messages):", self.log.len())?;
            for line in &self.log {
                writeln!(f, "  {line}")?;
            }
        }
        match &self.screenshot {
            Some(path) => writeln!(f, "--- screenshot of the page at the failure: {}", path.display())?,
            None => writeln!(f, "--- no screenshot of the page at the failure")?,
        }
        write!(f, "--- driver: {}", self.status)?;
        if !self.stderr.trim().is_empty() {
            write!(f, "; stderr:\n{}", self.stderr.trim_end())?;
        }
        Ok(())
    }
}

/// Runs `script` (the text of an ES module, see the module docs) in a fresh headless chromium
/// with `args` and returns the result (`"ok": true`, `"log"`, `"errors"` and the fields the
/// script returned). Panics with the error, the page's log and the failure screenshot's path when
/// the script fails, and with what to run when chromium or the node packages are missing.
pub fn run_script(script: &str, args: Value) -> Value {
    try_run_script(script, args).unwrap_or_else(|failure| panic!("browser script failed: {failure}"))
}

/// [`run_script`], returning the failure instead of panicking. A missing chromium, node or
/// `node_modules` still panics: that is the machine's fault, not the script's.
#[allow(clippy::result_large_err)] // a test's failure report, built once
pub fn try_run_script(script: &str, args: Value) -> Result<Value, ScriptFailure> {
    let dir = driver_dir();
    let driver = dir.join("run.mjs");
    assert!(driver.is_file(), "{} is missing", driver.display());
    assert!(
        Path::new(CHROMIUM).is_file(),
        "{CHROMIUM} is missing: run scripts/browser.sh (scripts/test.sh does) to install Debian's chromium, node and the browser driver's packages"
    );
    for needed in ["playwright-core/package.json", "axe-core/axe.min.js"] {
        assert!(
            dir.join("node_modules").join(needed).is_file(),
            "{} has no node_modules/{needed}: run scripts/browser.sh (scripts/test.sh does) to install node, playwright-core and axe-core",
            dir.display()
        );
    }

    let mut file = tempfile::Builder::new().prefix("berth-browser-").suffix(".mjs").tempfile().unwrap();
    file.write_all(script.as_bytes()).unwrap();
    file.flush().unwrap();

    let mut cmd = Command::new("node");
    cmd.arg(&driver);
    // the test's name (libtest names each test's thread after it) names the failure screenshot
    if let Some(name) = std::thread::current().name().filter(|n| *n != "main") {
        cmd.args(["--name", name]);
    }
    cmd.arg(file.path())
        .arg(args.to_string())
        .current_dir(super::repo_root())
        .env("BERTH_SCREENSHOTS", screenshots_dir())
        .env_remove("NODE_OPTIONS")
        .env_remove("DEBUG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let what = format!("{cmd:?}");
    let mut child = cmd.spawn().unwrap_or_else(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            panic!("`node` is not on PATH: run scripts/browser.sh (scripts/test.sh does) to install node and the browser driver's packages")
        }
        panic!("cannot run {what}: {e}")
    });
    let reader = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let stdout = reader(Box::new(child.stdout.take().unwrap()));
    let stderr = reader(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.to_string();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break format!("killed after {} s", RUN_TIMEOUT.as_secs());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = stdout.join().unwrap();
    let stderr = stderr.join().unwrap();
    drop(file);

    // the driver prints exactly one JSON line; take the last one that parses, to be lenient
    let line = stdout.lines().rev().find_map(|l| serde_json::from_str::<Value>(l.trim()).ok().filter(Value::is_object));
    let Some(out) = line else {
        return Err(ScriptFailure {
            error: format!("the browser driver printed no result line ({what}); stdout:\n{}", stdout.trim_end()),
            stack: None,
            log: Vec::new(),
            screenshot: None,
            status,
            stderr,
        });
    };
    if out["ok"] == Value::Bool(true) {
        return Ok(out);
    }
    let strings = |v: &Value| -> Vec<String> {
        v.as_array().map(|a| a.iter().map(|s| s.as_str().map_or_else(|| s.to_string(), str::to_owned)).collect()).unwrap_or_default()
    };
    Err(ScriptFailure {
        error: out["error"].as_str().map_or_else(|| format!("the driver reported a failure without an error: {out}"), str::to_owned),
        stack: out["stack"].as_str().map(str::to_owned),
        log: strings(&out["log"]),
        screenshot: out["screenshot"].as_str().map(PathBuf::from),
        status,
        stderr,
    })
}
