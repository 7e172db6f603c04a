#!/usr/bin/env bash
# scripts/s3.sh: a real S3 server on 127.0.0.1 for the S3 blob store tests
# (crates/blob/tests/s3_suite.rs), idempotently:
#   - installs moto's server (PyPI `moto[server]`) into the repository's virtualenv <repo>/.venv
#     (the one scripts/test.sh makes for oras; created here if missing), only if not installed;
#   - starts `moto_server -H 127.0.0.1 -p $TEST_S3_PORT` (default 18333) in the background,
#     only if nothing answers there yet (log and pid in target/test-s3/);
#   - waits until it answers S3 requests, creates the bucket $TEST_S3_BUCKET (default
#     berth-test) if missing;
#   - writes the endpoint to target/test-s3/endpoint (the tests read it when TEST_S3_ENDPOINT
#     is not set) and prints it on stdout (progress goes to stderr).
# Why moto: a PyPI package in the virtualenv the tests already have (no compile, ~30 s to
# install), and it implements what the store uses: multipart uploads with UploadPartCopy and
# ranged copies, the 5 MiB part minimum, conditional writes (If-None-Match), ranged GETs,
# ListObjectsV2 with delimiters and pages, ListMultipartUploads. It keeps objects in memory
# (large ones spill to temporary files): restart it to start empty
# (kill "$(cat target/test-s3/moto.pid)").
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PORT="${TEST_S3_PORT:-18333}"
BUCKET="${TEST_S3_BUCKET:-berth-test}"
ENDPOINT="http://127.0.0.1:$PORT"
STATE="$ROOT/target/test-s3"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

mkdir -p "$STATE"

# --- moto[server] in the virtualenv ------------------------------------------------------------
if [ ! -x "$PY" ] || ! "$PY" -m pip --version >/dev/null 2>&1; then
    log "creating the Python virtualenv $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV" >/dev/null 2>&1 || die "cannot create $VENV (Debian needs python3-venv): run ./scripts/test.sh, which installs it"
fi
if [ -x "$VENV/bin/moto_server" ] && "$PY" -c 'import moto.server, flask, boto3' >/dev/null 2>&1; then
    log "moto $("$PY" -c 'from importlib.metadata import version; print(version("moto"))') already installed in $VENV"
else
    log "installing moto[server] into $VENV (pip)"
    "$PY" -m pip install --quiet --disable-pip-version-check 'moto[server]>=5.1,<6' </dev/null
    [ -x "$VENV/bin/moto_server" ] || die "moto_server is missing after installing moto[server]"
fi

# --- the server ----------------------------------------------------------------------------------
# Answers when an S3 ListBuckets through boto3 succeeds (exit 0); the bucket is made if asked.
s3_probe() {
    "$PY" - "$ENDPOINT" "${1:-}" <<'EOF' >/dev/null 2>&1
import sys
import boto3
from botocore.config import Config
endpoint, bucket = sys.argv[1], sys.argv[2]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
                  aws_secret_access_key="test",
                  config=Config(connect_timeout=2, read_timeout=10, retries={"max_attempts": 1},
                                s3={"addressing_style": "path"}))
names = [b["Name"] for b in s3.list_buckets().get("Buckets", [])]
if bucket and bucket not in names:
    s3.create_bucket(Bucket=bucket)
EOF
}

if s3_probe; then
    log "an S3 server already answers at $ENDPOINT"
else
    log "starting moto_server at $ENDPOINT (log: $STATE/moto.log)"
    # setsid + nohup: the server outlives this script (and the test run that started it).
    setsid nohup "$VENV/bin/moto_server" -H 127.0.0.1 -p "$PORT" >"$STATE/moto.log" 2>&1 </dev/null &
    echo $! >"$STATE/moto.pid"
    for _ in $(seq 1 120); do
        if s3_probe; then
            break
        fi
        if ! kill -0 "$(cat "$STATE/moto.pid")" 2>/dev/null; then
            tail -n 20 "$STATE/moto.log" >&2 || true
            die "moto_server exited (port $PORT taken by something else? set TEST_S3_PORT)"
        fi
        sleep 0.5
    done
    s3_probe || die "moto_server does not answer at $ENDPOINT after 60 s (see $STATE/moto.log)"
fi
s3_probe "$BUCKET" || die "cannot create the bucket $BUCKET at $ENDPOINT"
log "bucket $BUCKET ready at $ENDPOINT"
echo "$ENDPOINT" >"$STATE/endpoint"
echo "$ENDPOINT"
