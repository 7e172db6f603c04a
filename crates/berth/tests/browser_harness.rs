//! The browser harness itself (support/browser.rs, scripts/browser/run.mjs), proven without any
//! Berth UI: a tiny HTTP server in the test serves a form whose value is echoed HTML-escaped, and
//! a real headless chromium fills it with a script tag, submits it, takes a screenshot and runs
//! axe-core. Controls show that the harness would notice: the same value echoed unescaped opens
//! a dialog, and a page without `lang` and label has violations. A failing script gives a panic
//! naming what it waited for, the page's console log and a screenshot.
//! Needs scripts/browser.sh (chromium, node, playwright-core, axe-core).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::browser::{run_script, screenshots_dir, try_run_script};

const PAYLOAD: &str = "<script>alert(1)</script>";

const HEAD: &str = r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Echo</title></head><body><main><h1>Echo</h1>"#;
const TAIL: &str = "</main></body></html>";

/// Starts the test server on a free port of 127.0.0.1 and returns its base URL. Each connection
/// gets its own thread: chromium opens spare connections that it may leave idle.
fn start_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = serve(conn);
            });
        }
    });
    base
}

/// One request on `conn`, answered with `Connection: close`.
fn serve(conn: TcpStream) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line)? == 0 {
        return Ok(());
    }
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length.min(64 * 1024)];
    reader.read_exact(&mut body)?;
    let body = String::from_utf8_lossy(&body);

    let mut words = request_line.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let (status, page) = match (method, path) {
        ("GET", "/") => (
            "200 OK",
            format!(
                r#"{HEAD}<form method="post" action="/echo"><label for="msg">Message</label> <input id="msg" name="msg" type="text"> <button type="submit">Send</button></form>{TAIL}"#
            ),
        ),
        ("POST", "/echo") => {
            let msg = form_value(&body, "msg");
            ("200 OK", format!(r#"{HEAD}<p>You sent:</p><p id="echo">{}</p>{TAIL}"#, html_escape(&msg)))
        }
        // the control: the same value echoed unescaped, as a vulnerable page would
        ("GET", "/raw") => ("200 OK", format!(r#"{HEAD}<p id="echo">{}</p>{TAIL}"#, form_value(query, "msg"))),
        // the control for axe: no lang, an input without a label
        ("GET", "/bad") => (
            "200 OK",
            r#"<!doctype html><html><head><meta charset="utf-8"><title>Bad</title></head><body><main><h1>Bad</h1><input type="text" name="q"></main></body></html>"#.to_owned(),
        ),
        ("GET", "/favicon.ico") => ("204 No Content", String::new()),
        _ => ("404 Not Found", format!("{HEAD}<p>Not found</p>{TAIL}")),
    };
    let mut conn = conn;
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{page}",
        page.len()
    )?;
    conn.flush()
}

/// The value of `name` in an `application/x-www-form-urlencoded` string.
fn form_value(encoded: &str, name: &str) -> String {
    encoded
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| url_decode(v))
        .unwrap_or_default()
}

fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const ECHO_SCRIPT: &str = r#"
export default async function ({ page, args, shot, axe }) {
  const dialogs = [];
  page.on('dialog', (d) => {
    dialogs.push(`${d.type()}: ${d.message()}`);
    d.dismiss().catch(() => {});
  });
  await page.goto(args.base + '/');
  await page.getByLabel('Message').fill(args.payload);
  await Promise.all([page.waitForURL('**/echo'), page.getByRole('button', { name: 'Send' }).click()]);
  const url = page.url();
  const echoed = await page.locator('#echo').textContent();
  const injected_scripts = await page.locator('#echo script').count();
  const screenshot = await shot('browser-harness-echo');
  const violations = await axe();
  if (dialogs.length > 0) throw new Error(`a dialog opened on the escaped page: ${dialogs.join(', ')}`);

  // controls: the same value echoed unescaped opens a dialog (the listener above works), and a
  // page without lang and label has violations (axe does check)
  await page.goto(args.base + '/raw?msg=' + encodeURIComponent(args.payload));
  const control_dialogs = dialogs.slice();
  await page.goto(args.base + '/bad');
  const control_violations = (await axe()).map((v) => v.id);
  return { url, echoed, injected_scripts, screenshot, violations, control_dialogs, control_violations };
}
"#;

#[test]
fn a_form_echoes_a_script_tag_as_text_in_a_real_browser() {
    let base = start_server();
    let started = Instant::now();
    let r = run_script(ECHO_SCRIPT, json!({ "base": base, "payload": PAYLOAD }));
    eprintln!("one browser run (launch, four pages, two axe runs, a screenshot): {:?}", started.elapsed());

    assert_eq!(r["ok"], json!(true));
    assert_eq!(r["url"], json!(format!("{base}/echo")), "{r:#}");
    assert_eq!(r["echoed"], json!(PAYLOAD), "the value must show literally: {r:#}");
    assert_eq!(r["injected_scripts"], json!(0), "{r:#}");

    let shot = Path::new(r["screenshot"].as_str().unwrap());
    assert_eq!(shot.parent().unwrap(), screenshots_dir(), "{r:#}");
    let png = std::fs::read(shot).unwrap_or_else(|e| panic!("screenshot {}: {e}", shot.display()));
    assert!(png.len() > 1000 && png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG: {} ({} bytes)", shot.display(), png.len());

    let violations = r["violations"].as_array().unwrap_or_else(|| panic!("axe's result is not an array: {r:#}"));
    assert!(violations.is_empty(), "serious accessibility violations on a page with lang and a label: {violations:#?}");

    assert_eq!(r["control_dialogs"], json!(["alert: 1"]), "the unescaped control must open exactly one dialog: {r:#}");
    let control: Vec<&str> = r["control_violations"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(control.contains(&"label") && control.contains(&"html-has-lang"), "axe missed the control page's faults: {control:?}");

    assert_eq!(r["errors"], json!([]), "the pages logged errors: {:#}", r["log"]);
}

const FAILING_SCRIPT: &str = r#"
export default async function ({ page, args }) {
  await page.goto(args.base + '/');
  await page.evaluate(() => console.error('a console error before the click'));
  await page.click('#missing');
  return { unreachable: true };
}
"#;

#[test]
fn a_failing_script_reports_what_it_waited_for_the_console_and_a_screenshot() {
    let base = start_server();
    let started = Instant::now();
    let failure = try_run_script(FAILING_SCRIPT, json!({ "base": base })).expect_err("clicking a missing element must fail");
    let took = started.elapsed();
    eprintln!("a failing run (10 s action timeout): {took:?}");
    let message = failure.to_string();
    eprintln!("{message}");

    assert!(failure.error.contains("Timeout 10000ms exceeded"), "{message}");
    assert!(failure.error.contains("waiting for locator('#missing')"), "{message}");
    assert!(!failure.error.contains('\u{1b}'), "colour codes in the error: {message:?}");
    assert!(failure.log.iter().any(|l| l == "error: a console error before the click"), "{message}");
    assert!(message.contains("berth-browser-") && message.contains(".mjs:5:"), "the stack names the script's line: {message}");
    let shot = failure.screenshot.clone().unwrap_or_else(|| panic!("no failure screenshot: {message}"));
    assert!(shot.file_name().unwrap().to_string_lossy().ends_with("failure.png"), "{message}");
    assert!(std::fs::metadata(&shot).map(|m| m.len() > 0).unwrap_or(false), "{}", shot.display());
    assert!(took < Duration::from_secs(40), "the 10 s action timeout did not bound the run: {took:?}");
}

#[test]
fn run_script_panics_with_the_scripts_error() {
    let caught = std::panic::catch_unwind(|| run_script("export default async function () { throw new Error('no such page: /nowhere'); }", json!(null)))
        .expect_err("run_script must panic when the script throws");
    let message = caught
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| caught.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap();
    assert!(message.starts_with("browser script failed: no such page: /nowhere"), "{message}");
    assert!(message.contains("--- the page logged nothing"), "{message}");
}
