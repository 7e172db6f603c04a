#!/usr/bin/env bash
# scripts/browser.sh: installs what the browser tests of the web UI need, idempotently and
# quietly (the driver is scripts/browser/run.mjs, the Rust side crates/berth/tests/support/browser.rs):
#   - Debian's `chromium` (and `fonts-liberation`, a Recommends of chromium-common that
#     --no-install-recommends would skip: without a font, screenshots show no text), only if
#     missing (`apt-get update` only then; sudo only if not root). Playwright downloads no browser:
#     run.mjs launches /usr/bin/chromium;
#   - Debian's nodejs and npm, only if `node` or `npm` is missing;
#   - `npm ci` into scripts/browser/node_modules (playwright-core and axe-core, pinned in
#     scripts/browser/package.json and package-lock.json), only when node_modules is missing or
#     package-lock.json changed since the last install (a stamp in node_modules holds the lock's
#     sha256).
# Node 18 (Debian bookworm's) or later.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="$ROOT/scripts/browser"
STAMP="$DIR/node_modules/.berth-package-lock.sha256"
CHROMIUM=/usr/bin/chromium

log() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

export DEBIAN_FRONTEND=noninteractive
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    SUDO=(sudo -n)
fi

# --- Debian packages: chromium, a font, node and npm ----------------------------------------------
missing=()
[ -x "$CHROMIUM" ] || missing+=(chromium)
if command -v dpkg-query >/dev/null 2>&1 \
    && ! dpkg-query -W -f='${Status}' fonts-liberation 2>/dev/null | grep -q 'install ok installed'; then
    missing+=(fonts-liberation)
fi
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ "${#missing[@]}" -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]}, and apt-get is not available: install chromium (at $CHROMIUM) and Node.js 18 or later yourself"
    if [ "${#SUDO[@]}" -gt 0 ] && ! command -v sudo >/dev/null 2>&1; then
        die "missing ${missing[*]}: not root and sudo is not available, install them yourself"
    fi
    log "apt-get update"
    "${SUDO[@]}" apt-get update -qq </dev/null
    log "installing Debian packages: ${missing[*]}"
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
fi
[ -x "$CHROMIUM" ] || die "$CHROMIUM is missing after installing Debian's chromium"
log "$("$CHROMIUM" --version 2>/dev/null || echo "chromium (version unknown)") at $CHROMIUM"
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 18 ? 0 : 1)' \
    || die "node $(node --version) is too old for playwright-core: Node.js 18 or later is needed"

# --- playwright-core and axe-core ------------------------------------------------------------------
versions() {
    printf 'playwright-core %s, axe-core %s' \
        "$(node -p 'require(process.argv[1]).version' "$DIR/node_modules/playwright-core/package.json")" \
        "$(node -p 'require(process.argv[1]).version' "$DIR/node_modules/axe-core/package.json")"
}
want="$(sha256sum "$DIR/package-lock.json" | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] \
    && [ -f "$DIR/node_modules/playwright-core/package.json" ] && [ -f "$DIR/node_modules/axe-core/axe.min.js" ]; then
    log "$(versions) already installed in scripts/browser/node_modules (node $(node --version))"
else
    log "installing scripts/browser/node_modules (npm ci)"
    # PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD: playwright-core downloads nothing itself; be sure anyway.
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix "$DIR" --no-audit --no-fund --loglevel=error </dev/null >/dev/null \
        || die "npm ci in scripts/browser failed"
    printf '%s\n' "$want" >"$STAMP"
    log "$(versions) installed (node $(node --version))"
fi
