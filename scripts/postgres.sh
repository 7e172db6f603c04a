#!/usr/bin/env bash
# scripts/postgres.sh: the PostgreSQL server of the metadata store's tests (scripts/test.sh runs
# it; run it yourself before `cargo test -p berth-meta`). Idempotent:
#   - installs Debian's `postgresql` if no server binaries are found under /usr/lib/postgresql
#     (`apt-get update` once, only then; sudo -n if not root)
#   - initialises a cluster in $PG_TEST_DIR (default /tmp/berth-pg-<uid>) as an unprivileged user:
#     `postgres` when run as root (PostgreSQL refuses to run as root), else the caller
#   - starts it on 127.0.0.1:$PG_TEST_PORT (default 54329), loopback only, `trust` auth, tuned for
#     tests (fsync off: a crash of the machine loses only test databases)
#   - creates the role `berth` (LOGIN CREATEDB: each test makes its own database and drops it) and
#     the database `berth_test`
#   - writes the URL, postgres://berth@127.0.0.1:<port>/berth_test, to <repo>/target/test-postgres.url
#     (where the tests read it) and prints it.
# Nothing is exported: Berth reads every BERTH_* variable as configuration and refuses unknown
# ones, and some tests start the binary with the inherited environment. (BERTH_TEST_POSTGRES_URL,
# when the caller sets it, overrides the file for the tests.)
# `scripts/postgres.sh stop` stops the cluster; `scripts/postgres.sh status` says whether it runs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PORT="${PG_TEST_PORT:-54329}"
DIR="${PG_TEST_DIR:-/tmp/berth-pg-$(id -u)}"
DATA="$DIR/data"
URL_FILE="$ROOT/target/test-postgres.url"
URL="postgres://berth@127.0.0.1:$PORT/berth_test"

log() { printf '==> postgres: %s\n' "$*"; }
die() { printf 'error: postgres: %s\n' "$*" >&2; exit 1; }

export DEBIAN_FRONTEND=noninteractive
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    SUDO=(sudo -n)
fi

# The newest server under /usr/lib/postgresql/<version>/bin (Debian's layout).
find_bin() {
    local d best=""
    for d in /usr/lib/postgresql/*/bin; do
        [ -x "$d/postgres" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] || continue
        if [ -z "$best" ] || [ "$(basename "$(dirname "$d")")" -gt "$(basename "$(dirname "$best")")" ] 2>/dev/null; then
            best="$d"
        fi
    done
    printf '%s' "$best"
}

BIN="$(find_bin)"
if [ -z "$BIN" ]; then
    command -v apt-get >/dev/null 2>&1 || die "no PostgreSQL server under /usr/lib/postgresql, and apt-get is not available: install postgresql yourself"
    if [ "${#SUDO[@]}" -gt 0 ] && ! command -v sudo >/dev/null 2>&1; then
        die "no PostgreSQL server: not root and sudo is not available, install postgresql yourself"
    fi
    log "apt-get update"
    "${SUDO[@]}" apt-get update -qq </dev/null
    log "installing Debian's postgresql"
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends postgresql </dev/null
    BIN="$(find_bin)"
    [ -n "$BIN" ] || die "postgresql is installed but no server was found under /usr/lib/postgresql/*/bin"
fi
VERSION="$(basename "$(dirname "$BIN")")"

# Run the server's tools as an unprivileged user.
if [ "$(id -u)" -eq 0 ]; then
    RUN_USER=postgres
    if ! id "$RUN_USER" >/dev/null 2>&1; then
        log "creating the system user $RUN_USER"
        useradd --system --home-dir "$DIR" --no-create-home --shell /usr/sbin/nologin "$RUN_USER"
    fi
    as_server() { runuser -u "$RUN_USER" -- "$@"; }
else
    RUN_USER="$(id -un)"
    as_server() { "$@"; }
fi

running() { as_server "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }

case "${1:-start}" in
    stop)
        if [ -d "$DATA" ] && running; then
            as_server "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null
            log "stopped the cluster in $DATA"
        else
            log "not running ($DATA)"
        fi
        exit 0
        ;;
    status)
        if [ -d "$DATA" ] && running; then log "running: $URL ($DATA)"; exit 0; else log "not running ($DATA)"; exit 3; fi
        ;;
    start) ;;
    *) die "usage: $0 [start|stop|status]" ;;
esac

# The cluster's folder belongs to the server's user; the folder above it must be reachable by it.
mkdir -p "$DIR"
if [ "$(id -u)" -eq 0 ]; then
    chown "$RUN_USER" "$DIR"
fi
chmod 700 "$DIR"
as_server test -w "$DIR" || die "$RUN_USER cannot write $DIR (set PG_TEST_DIR to a folder it can reach)"

# A cluster of another major version (an upgraded package) is made again: it holds test data only.
if [ -f "$DATA/PG_VERSION" ] && [ "$(cat "$DATA/PG_VERSION")" != "$VERSION" ]; then
    log "the cluster in $DATA is PostgreSQL $(cat "$DATA/PG_VERSION"), the server is $VERSION: making it again"
    running && as_server "$BIN/pg_ctl" -D "$DATA" -m immediate -w stop >/dev/null || true
    rm -rf "$DATA"
fi
if [ ! -f "$DATA/PG_VERSION" ]; then
    log "initialising a PostgreSQL $VERSION cluster in $DATA (as $RUN_USER)"
    rm -rf "$DATA"
    as_server "$BIN/initdb" -D "$DATA" --username=postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 >"$DIR/initdb.log" 2>&1 \
        || as_server "$BIN/initdb" -D "$DATA" --username=postgres --auth=trust --encoding=UTF8 --no-locale >"$DIR/initdb.log" 2>&1 \
        || { cat "$DIR/initdb.log" >&2; die "initdb failed"; }
    # Test settings: loopback only, our port, sockets in the cluster's folder, durability off,
    # room for the tests' pools (each test opens a few connections to its own database).
    cat >>"$DATA/postgresql.conf" <<EOF

# --- scripts/postgres.sh (a test cluster) ---
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$DIR'
max_connections = 300
shared_buffers = 128MB
fsync = off
synchronous_commit = off
full_page_writes = off
log_min_messages = warning
log_min_error_statement = panic
EOF
fi

if running; then
    log "already running in $DATA"
else
    if "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" 2>/dev/null; then
        die "another server answers on 127.0.0.1:$PORT (not the cluster in $DATA): stop it, or set PG_TEST_PORT"
    fi
    log "starting PostgreSQL $VERSION on 127.0.0.1:$PORT"
    as_server "$BIN/pg_ctl" -D "$DATA" -l "$DIR/server.log" -o "-p $PORT" -w -t 60 start >/dev/null \
        || { tail -n 20 "$DIR/server.log" >&2 || true; die "the server did not start (log: $DIR/server.log)"; }
fi

psql_admin() { "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -At "$@"; }
if [ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = 'berth'")" != "1" ]; then
    log "creating the role berth (LOGIN CREATEDB)"
    psql_admin -c "CREATE ROLE berth LOGIN CREATEDB"
fi
if [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = 'berth_test'")" != "1" ]; then
    log "creating the database berth_test"
    psql_admin -c "CREATE DATABASE berth_test OWNER berth"
fi

mkdir -p "$(dirname "$URL_FILE")"
printf '%s\n' "$URL" >"$URL_FILE"
log "ready: $URL (written to $URL_FILE)"
