#!/usr/bin/env bash
# scripts/oidc.sh: installs the real OpenID provider that the tests of human login start
# (scripts/oidc/provider.mjs: panva's certified `oidc-provider` 8.x, pinned in
# scripts/oidc/package.json and package-lock.json), idempotently and quietly:
#   - Debian's nodejs and npm, only if `node` or `npm` is missing (`apt-get update` only then;
#     sudo only if not root), as scripts/test.sh installs its packages;
#   - `npm ci` into scripts/oidc/node_modules, only when node_modules is missing or
#     package-lock.json changed since the last install (a stamp in node_modules holds the lock's
#     sha256).
# It starts no server: each test starts its own provider (crates/berth/tests/support/oidc.rs).
# Node 18 (Debian bookworm's) or later.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="$ROOT/scripts/oidc"
STAMP="$DIR/node_modules/.berth-package-lock.sha256"

log() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

export DEBIAN_FRONTEND=noninteractive
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    SUDO=(sudo -n)
fi

# --- node and npm ------------------------------------------------------------------------------
missing=()
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ "${#missing[@]}" -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]}, and apt-get is not available: install Node.js 18 or later yourself"
    if [ "${#SUDO[@]}" -gt 0 ] && ! command -v sudo >/dev/null 2>&1; then
        die "missing ${missing[*]}: not root and sudo is not available, install them yourself"
    fi
    log "apt-get update"
    "${SUDO[@]}" apt-get update -qq </dev/null
    log "installing Debian packages: ${missing[*]}"
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
fi
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 18 ? 0 : 1)' \
    || die "node $(node --version) is too old for oidc-provider 8: Node.js 18 or later is needed"

# --- oidc-provider -------------------------------------------------------------------------------
want="$(sha256sum "$DIR/package-lock.json" | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -f "$DIR/node_modules/oidc-provider/package.json" ]; then
    log "oidc-provider $(node -p 'require(process.argv[1]).version' "$DIR/node_modules/oidc-provider/package.json") already installed in scripts/oidc/node_modules (node $(node --version))"
else
    log "installing scripts/oidc/node_modules (npm ci)"
    npm ci --prefix "$DIR" --no-audit --no-fund --loglevel=error </dev/null >/dev/null \
        || die "npm ci in scripts/oidc failed"
    printf '%s\n' "$want" >"$STAMP"
    log "oidc-provider $(node -p 'require(process.argv[1]).version' "$DIR/node_modules/oidc-provider/package.json") installed (node $(node --version))"
fi
