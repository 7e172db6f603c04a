#!/usr/bin/env bash
# scripts/test.sh: THE test command of Berth (see README.md, "Tests"; CI runs it via .ci/run).
#
# Installs what the end-to-end tests need, idempotently, then runs the whole test suite:
#   - Debian packages, only if missing: skopeo, podman, openssl, python3, python3-venv
#     (`apt-get update` runs only when something must be installed; sudo only if not root)
#   - a Python virtualenv at <repo>/.venv with the PyPI package `oras`, only if not importable
#   - `cargo test --workspace --locked --no-fail-fast` (dev profile: every test binary runs even
#     after a failure); the script exits with its status.
# The e2e tests find oras' interpreter at <repo>/.venv/bin/python (or $BERTH_TEST_PYTHON if the
# caller sets it). This script deliberately does not export BERTH_TEST_PYTHON: Berth reads every
# BERTH_* variable as configuration and refuses unknown ones, and some tests start the binary
# with the inherited environment.
# Extra arguments go to `cargo test`, e.g. `./scripts/test.sh -- skopeo` runs the tests whose
# names contain "skopeo".
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

export DEBIAN_FRONTEND=noninteractive
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    SUDO=(sudo -n)
fi

APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "missing $*, and apt-get is not available: install them yourself"
    if [ "${#SUDO[@]}" -gt 0 ] && ! command -v sudo >/dev/null 2>&1; then
        die "missing $*: not root and sudo is not available, install them yourself"
    fi
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        "${SUDO[@]}" apt-get update -qq </dev/null
        APT_UPDATED=1
    fi
    log "installing Debian packages: $*"
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "$@" </dev/null
}

# --- Debian packages -------------------------------------------------------------------------
missing=()
command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
command -v podman >/dev/null 2>&1 || missing+=(podman)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v python3 >/dev/null 2>&1 || missing+=(python3 python3-venv)
if [ "${#missing[@]}" -gt 0 ]; then
    apt_install "${missing[@]}"
else
    log "Debian packages present: skopeo, podman, openssl, python3"
fi
# skopeo needs a signature policy; Debian's containers-common provides it, but be sure.
if [ ! -e /etc/containers/policy.json ]; then
    log "writing a permissive /etc/containers/policy.json for skopeo"
    "${SUDO[@]}" mkdir -p /etc/containers
    printf '{"default":[{"type":"insecureAcceptAnything"}]}\n' | "${SUDO[@]}" tee /etc/containers/policy.json >/dev/null
fi
log "$(skopeo --version)"
log "$(podman --version)"
log "$(openssl version)"

# --- Python virtualenv with oras -------------------------------------------------------------
VENV="$ROOT/.venv"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    log "creating the Python virtualenv $VENV"
    rm -rf "$VENV"
    if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
        # Debian's python3 needs python3-venv (ensurepip) to create virtualenvs.
        rm -rf "$VENV"
        apt_install python3-venv
        python3 -m venv "$VENV"
    fi
fi
if "$VENV/bin/python" -c 'import oras.client' >/dev/null 2>&1; then
    log "oras already installed in $VENV"
else
    log "installing oras into $VENV (pip)"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check oras </dev/null
    "$VENV/bin/python" -c 'import oras.client' || die "oras is not importable after installing it"
fi
log "oras $("$VENV/bin/python" -c 'from importlib.metadata import version; print(version("oras"))') in $VENV"
command -v cargo >/dev/null 2>&1 || die "cargo is not on PATH: install the Rust toolchain (rustup)"

# --- S3 server for the blob store tests ---------------------------------------------------------
# moto's S3 server (PyPI moto[server], installed into the virtualenv above) on 127.0.0.1, started
# if not running, with the test bucket: all done by scripts/s3.sh, which prints the endpoint. The
# S3 blob store tests (crates/blob/tests/s3_suite.rs) read it from TEST_S3_ENDPOINT (not BERTH_*:
# see above), or from target/test-s3/endpoint when run without this script.
TEST_S3_ENDPOINT="$("$ROOT/scripts/s3.sh")" || die "could not start the S3 test server (scripts/s3.sh; log in target/test-s3/moto.log)"
export TEST_S3_ENDPOINT
log "S3 test server at $TEST_S3_ENDPOINT"
# --- end of the S3 server block ------------------------------------------------------------------

# --- PostgreSQL for the metadata store tests ---------------------------------------------------
# scripts/postgres.sh installs Debian's postgresql if missing, starts a test cluster on
# 127.0.0.1:54329 (as the user postgres when run as root; idempotent) and writes its URL to
# target/test-postgres.url, where berth-meta's PostgreSQL tests read it. Not exported as
# BERTH_TEST_POSTGRES_URL (which overrides the file when a caller sets it): see above.
"$ROOT/scripts/postgres.sh" || die "could not start the PostgreSQL test server (scripts/postgres.sh)"
# --- end of the PostgreSQL block ---------------------------------------------------------------
"$ROOT/scripts/oidc.sh" || die "could not install the OpenID test provider (scripts/oidc.sh: nodejs, npm ci in scripts/oidc)"
"$ROOT/scripts/browser.sh" || die "could not install the browser of the UI tests (scripts/browser.sh: chromium, nodejs, npm ci in scripts/browser)"

# --- The tests -------------------------------------------------------------------------------
# The e2e tests run other packages' binaries (the kubelet plugin) from target/debug: build them
# first, so a binary left there by an older build of another feature set is never the one run.
# A fresh clone gains nothing from incremental compilation, which would write another copy of
# every crate's intermediate state (many GB) into target/: CI machines have little disk.
if [ -n "${CI:-}" ]; then
    export CARGO_INCREMENTAL=0
fi
log "disk free for target/: $(df -h --output=avail "$ROOT" | tail -1 | tr -d ' ') (a full build of the workspace and its tests takes about 4 GB)"
log "building the workspace's binaries"
cargo build --workspace --bins --locked
log "running: cargo test --workspace --locked --no-fail-fast $*"
start=$SECONDS
status=0
cargo test --workspace --locked --no-fail-fast "$@" || status=$?
if [ "$status" -eq 0 ]; then
    log "all tests passed ($((SECONDS - start)) s)"
else
    log "tests FAILED with exit status $status ($((SECONDS - start)) s)"
fi
exit "$status"
