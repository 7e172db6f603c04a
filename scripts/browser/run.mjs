// scripts/browser/run.mjs: runs one browser test script in Debian's headless chromium, driven by
// playwright-core (no browser download: /usr/bin/chromium), for the Rust tests
// (crates/berth/tests/support/browser.rs). Installed by scripts/browser.sh.
//
//   node scripts/browser/run.mjs [--name <name>] <script.mjs> [<args as JSON>]
//
// The script is an ES module whose default export is an async function; it receives one object:
//   page     a fresh Page in a fresh context (1280x800, locale en-US; every action and
//            navigation times out after 10 s);
//   context, browser   the BrowserContext and Browser, for more pages;
//   args     the parsed JSON argument (null when none was given);
//   shot(name)   saves a full-page PNG screenshot of `page` as <BERTH_SCREENSHOTS>/<name>.png
//            (default target/screenshots, created) and returns its absolute path;
//   axe(options) injects axe-core into `page` (through the debugging protocol, so the page's
//            Content-Security-Policy does not block it and stays enforced) and returns the
//            violations of impact serious or critical: [{id, impact, help, helpUrl, nodes:
//            [{target, html, summary}]}]; `options` go to axe.run (e.g. {runOnly: [...]});
//   log      the page's messages so far (strings, see below).
// It may import node's own modules (node:assert); playwright-core is not importable from a script
// outside this folder, and needs not be. What it returns becomes the result: an object's fields
// are printed next to "ok" (a returned "ok", "log" or "errors" is overwritten), anything else
// under "result".
//
// Output: exactly one JSON line on stdout (the script's console.log goes to stderr):
//   {"ok": true, "log": [...], "errors": [...], ...result}                    exit status 0
//   {"ok": false, "error": "...", "stack": "...", "log": [...], "errors": [...],
//    "screenshot": "<path of the page at the failure, or null>"}               exit status 1
// "log" holds every console message ("<type>: <text>"), uncaught page error ("pageerror: ..."),
// failed request ("requestfailed: <method> <url>: <reason>") and crash of every page of the
// context, in order; "errors" the subset that are console errors, page errors and crashes. With
// --name, the failure screenshot is <name>-failure.png (else failure.png).
import { readFileSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const require = createRequire(import.meta.url);
const { chromium } = require('playwright-core');

const CHROMIUM = '/usr/bin/chromium';
const ACTION_TIMEOUT_MS = 10_000;
const LAUNCH_TIMEOUT_MS = 30_000;
/// The whole script: a hung script must not hang the test.
const SCRIPT_TIMEOUT_MS = 90_000;

const out = process.stdout.write.bind(process.stdout);
console.log = console.error;
console.info = console.error;

const USAGE = 'usage: node run.mjs [--name <name>] <script.mjs> [<args as JSON>]';
const shotsDir = path.resolve(process.env.BERTH_SCREENSHOTS || 'target/screenshots');
const safe = (s) => String(s).replace(/\.png$/i, '').replace(/[^A-Za-z0-9._-]+/g, '_').slice(0, 120) || 'shot';

const log = [];
const errors = [];
const note = (line, isError) => {
  log.push(line);
  if (isError) errors.push(line);
};

/// Runs the script; returns the line to print and the exit status.
async function main(argv) {
  let name = null;
  if (argv[0] === '--name') {
    name = argv[1];
    argv = argv.slice(2);
  }
  if (argv.length < 1 || argv.length > 2) {
    return [{ ok: false, error: `expected a script and at most one JSON argument; ${USAGE}`, log, errors }, 2];
  }
  const scriptPath = path.resolve(argv[0]);
  let args = null;
  if (argv.length === 2) {
    try {
      args = JSON.parse(argv[1]);
    } catch (e) {
      return [{ ok: false, error: `the argument is not JSON (${e.message}); ${USAGE}`, log, errors }, 2];
    }
  }

  let browser = null;
  let page = null;
  let result;
  try {
    const mod = await import(pathToFileURL(scriptPath).href);
    if (typeof mod.default !== 'function') throw new Error(`${scriptPath} has no default export that is a function`);

    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      timeout: LAUNCH_TIMEOUT_MS,
      // CI runs as root, where chromium refuses to start with its sandbox; /dev/shm is small in
      // containers.
      args: ['--no-sandbox', '--disable-dev-shm-usage'],
    });
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: 'en-US' });
    context.setDefaultTimeout(ACTION_TIMEOUT_MS);
    context.setDefaultNavigationTimeout(ACTION_TIMEOUT_MS);
    context.on('console', (m) => note(`${m.type()}: ${m.text()}`, m.type() === 'error'));
    context.on('weberror', (e) => note(`pageerror: ${e.error().message}`, true));
    context.on('requestfailed', (r) => note(`requestfailed: ${r.method()} ${r.url()}: ${r.failure()?.errorText ?? '?'}`, false));
    context.on('page', (p) => p.on('crash', () => note(`crash: the page ${p.url()} crashed`, true)));
    page = await context.newPage();

    const shot = async (shotName) => {
      mkdirSync(shotsDir, { recursive: true });
      const file = path.join(shotsDir, `${safe(shotName)}.png`);
      await page.screenshot({ path: file, fullPage: true });
      return file;
    };
    let axeSource = null;
    const axe = async (options = {}) => {
      axeSource ??= readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
      // page.evaluate runs through the debugging protocol: the page's CSP does not apply to it
      if (!(await page.evaluate(() => typeof window.axe === 'object'))) await page.evaluate(axeSource);
      const violations = await page.evaluate(
        (o) => window.axe.run(document, { ...o, resultTypes: ['violations'] }).then((r) => r.violations),
        options,
      );
      return violations
        .filter((v) => v.impact === 'serious' || v.impact === 'critical')
        .map((v) => ({
          id: v.id,
          impact: v.impact,
          help: v.help,
          helpUrl: v.helpUrl,
          nodes: v.nodes.map((n) => ({ target: n.target, html: n.html, summary: n.failureSummary })),
        }));
    };

    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`the script did not finish within ${SCRIPT_TIMEOUT_MS / 1000} s`)), SCRIPT_TIMEOUT_MS);
    });
    try {
      result = await Promise.race([mod.default({ page, context, browser, args, shot, axe, log }), timeout]);
    } finally {
      clearTimeout(timer);
    }
  } catch (e) {
    let screenshot = null;
    if (page && !page.isClosed()) {
      try {
        mkdirSync(shotsDir, { recursive: true });
        screenshot = path.join(shotsDir, `${name ? safe(name) + '-' : ''}failure.png`);
        await page.screenshot({ path: screenshot, fullPage: true, timeout: 5_000 });
      } catch {
        screenshot = null;
      }
    }
    await browser?.close().catch(() => {});
    // playwright colours its call logs even into a pipe
    const plain = (t) => t?.replace(/\u001b\[[0-9;]*m/g, '');
    const error = plain(e instanceof Error ? e.message : String(e));
    const stack = plain(e instanceof Error ? e.stack : undefined);
    return [{ ok: false, error, stack, log, errors, screenshot }, 1];
  }
  await browser.close().catch(() => {});
  const fields =
    result !== null && typeof result === 'object' && !Array.isArray(result) ? result : result === undefined ? {} : { result };
  return [{ ...fields, ok: true, log, errors }, 0];
}

const [line, status] = await main(process.argv.slice(2));
// exit once the line is written (the script may have left timers or sockets open)
out(JSON.stringify(line) + '\n', () => process.exit(status));
