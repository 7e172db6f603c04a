#!/usr/bin/env bash
# bench/s3.sh: side-by-side benchmark of Berth on PostgreSQL + S3 against CNCF distribution 2.8
# (Debian's `docker-registry`) with its `s3` storage driver, both on the SAME S3 server, run on
# this machine, writing bench/RESULTS-S3.md. A benchmark, not a test; the filesystem comparison is
# bench/run.sh (whose approach this follows: round-robin repetitions, medians, waiting for idle
# CPU before each measurement, curl and wrk, ratios, met / not met).
#
# What runs (all on 127.0.0.1, stopped by an EXIT trap):
#   - moto's S3 server (PyPI `moto[server]`, from the repository's .venv like scripts/s3.sh), a
#     PRIVATE instance on its own port with the bucket berth-test: the shared one of
#     scripts/s3.sh (port 18333) serves the test suites of whoever else works in this tree, and
#     this script must be free to fill it with gigabytes and to restart it. Each run uses fresh
#     prefixes (run-<id>/dist, run-<id>/berth). moto keeps small objects in memory and spills
#     large ones to temporary files; the bytes of every pushed test blob are deleted from the
#     bucket right after the push is checked (nothing reads them again), and moto is restarted
#     between push repetitions if its RSS still passes MOTO_MAX_RSS_MB;
#   - distribution 2.8, s3 driver (region us-east-1, regionendpoint = moto, secure: false,
#     v4auth; path-style addressing, which 2.8 uses whenever regionendpoint is set (it has no
#     forcepathstyle option); default chunksize and multipart-copy settings), in-memory blob
#     descriptor cache, access log off, twice on one rootdirectory: "dist" with
#     `storage.redirect.disable: true` (blobs are streamed through the registry) and "distredir"
#     with the driver's default (a blob GET is answered 307 to a presigned S3 URL);
#   - Berth (`target/release/berth serve`, built with `cargo build --release -p berth` when missing
#     or older than the sources) on a fresh PostgreSQL database (CREATE DATABASE on the cluster of
#     scripts/postgres.sh, URL from target/test-postgres.url; dropped at the end) and S3
#     (BERTH_STORAGE_URL=s3://berth-test/run-<id>/berth?region=us-east-1&endpoint=...&
#     path_style=true&allow_http=true, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY=test),
#     BERTH_ANONYMOUS=read-write: three replicas on that one database and prefix: "berth" and
#     "berth2" (BERTH_STORAGE__REDIRECT=false), "berthredir" (BERTH_STORAGE__REDIRECT=true: blob
#     GETs answer 307 to a presigned S3 URL).
#
# Measurements (REPS=3 repetitions, round-robin across the registries; the MEDIAN is reported):
#   - pull of a pre-pushed SIZE_MIB (256) MiB random blob with `curl -o /dev/null`, streamed
#     (dist, berth) and redirected (distredir, berthredir, `curl -L`: both requests are timed;
#     the script checks that exactly one redirect happened), and the time of the 307 alone;
#   - monolithic push of a fresh SIZE_MIB blob (Berth: one POST ?digest= with the body;
#     distribution 2.8: POST, then PUT ?digest= with the body) and chunked push (POST, PATCHes
#     of CHUNK_MIB (8) MiB, PUT ?digest=; the sum of curl's time_total); each checked by a HEAD;
#   - manifest GET by tag (small OCI image) with `wrk -t2 -c32 -d10s --latency`: req/s and p99;
#   - replicas: `wrk -t2 -c32` against one Berth replica, then two wrk processes at once
#     (`-t1 -c16` each, one per replica, same total of threads and connections) against
#     berth and berth2; the sum of their req/s. All measured in the same rounds, so within one
#     run the ratios compare like with like;
#   - per operation: the registry's CPU time (utime + stime of the process), moto's CPU time,
#     the number of S3 requests (lines of moto's request log), PostgreSQL's CPU time and
#     transactions per manifest GET (the benchmark database's backends), the whole machine's busy
#     share during each wrk run (from /proc/stat): client, servers, moto and PostgreSQL all share
#     the same cores, which limits what a second replica can add.
# Before each measurement the script waits until the registries and moto stop using CPU (all
# their ticks together move by at most 1 in 0.5 s; at most 10 s) and flushes dirty pages.
# Only loopback addresses. Data under bench/work/s3 is removed at the end unless KEEP_WORK=1.
#
# Usage: bench/s3.sh   (env: REPS=3, SIZE_MIB=256, CHUNK_MIB=8, WRK_DURATION=10s,
#                       PORT_BASE=15700, MOTO_MAX_RSS_MB=3072, KEEP_WORK=0)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH="$ROOT/bench"
WORK="$BENCH/work/s3"
RESULTS="$BENCH/RESULTS-S3.md"
REPS=${REPS:-3}
SIZE_MIB=${SIZE_MIB:-256}
CHUNK_MIB=${CHUNK_MIB:-8}
WRK_DURATION=${WRK_DURATION:-10s}
PORT_BASE=${PORT_BASE:-15700}
MOTO_MAX_RSS_MB=${MOTO_MAX_RSS_MB:-3072}
WRK_CONNS=32
BUCKET=berth-test
BLOB_BYTES=$((SIZE_MIB << 20))
CHUNK_BYTES=$((CHUNK_MIB << 20))
ADMIN_PW="bench-admin-password-$$"
OCI_MANIFEST=application/vnd.oci.image.manifest.v1+json
VENV="$ROOT/.venv"
RUN_ID="$(date +%Y%m%d%H%M%S)-$$"
RUN_PREFIX="run-$RUN_ID"
COMMAND="REPS=$REPS SIZE_MIB=$SIZE_MIB CHUNK_MIB=$CHUNK_MIB WRK_DURATION=$WRK_DURATION bench/s3.sh"
T_START=$(date +%s)

log() { printf '[s3-bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ "$REPS" =~ ^[1-9][0-9]*$ ]] || die "REPS must be a positive integer"
[[ "$SIZE_MIB" =~ ^[1-9][0-9]*$ ]] || die "SIZE_MIB must be a positive integer"
[[ "$CHUNK_MIB" =~ ^[1-9][0-9]*$ ]] || die "CHUNK_MIB must be a positive integer"
((SIZE_MIB >= 2 * CHUNK_MIB)) || die "SIZE_MIB must be at least 2 × CHUNK_MIB"

# ---------------------------------------------------------------- prerequisites
need_install=()
command -v docker-registry >/dev/null || need_install+=(docker-registry)
command -v wrk >/dev/null || need_install+=(wrk)
if ((${#need_install[@]})); then
    log "installing ${need_install[*]}"
    export DEBIAN_FRONTEND=noninteractive
    SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q "${need_install[@]}"
fi
for tool in curl openssl awk split cargo git psql python3; do command -v "$tool" >/dev/null || die "$tool is required"; done

# moto[server] in the repository's virtualenv, installed the way scripts/s3.sh does it (that
# script would also start the shared server, which this benchmark does not use).
if [ ! -x "$VENV/bin/moto_server" ]; then
    if [ ! -x "$VENV/bin/python" ]; then
        log "creating the Python virtualenv $VENV"
        python3 -m venv "$VENV" || die "cannot create $VENV (Debian needs python3-venv)"
    fi
    log "installing moto[server] into $VENV (pip)"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check 'moto[server]>=5.1,<6' </dev/null
    [ -x "$VENV/bin/moto_server" ] || die "moto_server is missing after installing moto[server]"
fi
MOTO_VERSION=$("$VENV/bin/python" -c 'from importlib.metadata import version; print(version("moto"))')

# Berth: built when the binary is missing or older than the sources.
TARGET_DIR=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps 2>/dev/null | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
BERTH_BIN="${TARGET_DIR:-$ROOT/target}/release/berth"
BUILD_NOTE="\`cargo build --release -p berth\`"
newer_sources() {
    [ -x "$BERTH_BIN" ] || return 0
    [ -n "$(cd "$ROOT" && find Cargo.toml Cargo.lock crates -newer "$BERTH_BIN" -type f \
        \( -name '*.rs' -o -name '*.toml' -o -name '*.sql' -o -name '*.lock' \) -print -quit 2>/dev/null)" ]
}
if newer_sources; then
    log "building Berth (cargo build --release -p berth; waits if another cargo holds the lock)"
    if ! (cd "$ROOT" && cargo build --release -p berth); then
        [ -x "$BERTH_BIN" ] || die "build failed and there is no binary at $BERTH_BIN"
        log "WARNING: the build failed; using the existing binary, which is older than the sources"
        BUILD_NOTE="the existing release binary (the build of the current sources FAILED, so it is older than them)"
    fi
else
    log "target/release/berth is newer than the sources; not building"
fi
[ -x "$BERTH_BIN" ] || die "no binary at $BERTH_BIN"
BIN_TIME=$(date -u -r "$BERTH_BIN" '+%Y-%m-%d %H:%M UTC')

# PostgreSQL: the test cluster of scripts/postgres.sh (started, and then stopped at the end, only
# if it is not running).
PG_PORT=${PG_TEST_PORT:-54329}
PG_STARTED=0
if ! pg_isready -q -h 127.0.0.1 -p "$PG_PORT" 2>/dev/null; then
    log "starting the PostgreSQL test cluster (scripts/postgres.sh)"
    "$ROOT/scripts/postgres.sh" >&2 || die "scripts/postgres.sh failed"
    PG_STARTED=1
fi
[ -f "$ROOT/target/test-postgres.url" ] || "$ROOT/scripts/postgres.sh" >&2 || die "scripts/postgres.sh failed"
PG_BASE_URL=$(head -1 "$ROOT/target/test-postgres.url")
PG_BASE_URL=${PG_BASE_URL%%\?*}
DB_NAME="bench_s3_${RUN_ID//-/_}"
DB_URL="${PG_BASE_URL%/*}/$DB_NAME"
PG_VERSION=$(psql -X -At "$PG_BASE_URL" -c 'SHOW server_version' 2>/dev/null || echo "?")

# ---------------------------------------------------------------- processes and cleanup
PIDS=()
DB_CREATED=0
MOTO_PID=""
cleanup() {
    local pid
    for pid in "${PIDS[@]}" $MOTO_PID; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}" $MOTO_PID; do wait "$pid" 2>/dev/null || true; done
    if [ "$DB_CREATED" = 1 ]; then
        psql -X -q "$PG_BASE_URL" -c "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" >/dev/null 2>&1 \
            || log "could not drop the database $DB_NAME"
    fi
    if [ "$PG_STARTED" = 1 ]; then "$ROOT/scripts/postgres.sh" stop >&2 || true; fi
    if [ "${KEEP_WORK:-0}" != 1 ]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

rm -rf "$WORK"
mkdir -p "$WORK"/{bin,files,logs,tmp}
# A private copy of the binary under a neutral name (safe from a concurrent rebuild and from
# other people's `pkill berth`), as bench/run.sh does.
cp "$BERTH_BIN" "$WORK/bin/bench-b"
BERTH_BIN="$WORK/bin/bench-b"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
next_port=$PORT_BASE
pick_port() {
    while ! port_free "$next_port"; do next_port=$((next_port + 1)); done
    PICKED=$next_port
    next_port=$((next_port + 1))
}

CLK_TCK=$(getconf CLK_TCK)
ticks_of() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
rss_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
ticks_to_s() { awk -v t="$1" -v hz="$CLK_TCK" 'BEGIN { printf "%.3f", t / hz }'; }

# ---------------------------------------------------------------- moto
pick_port; S3_PORT=$PICKED
S3="http://127.0.0.1:$S3_PORT"
MOTO_LOG="$WORK/logs/moto.log"
MOTO_RESTARTS=0
MOTO_PEAK_KB=0
start_moto() {
    (exec "$VENV/bin/moto_server" -H 127.0.0.1 -p "$S3_PORT" >>"$MOTO_LOG" 2>&1 </dev/null) &
    MOTO_PID=$!
    local i code=""
    for i in $(seq 1 120); do
        code=$(curl -s -o /dev/null -w '%{http_code}' "$S3/" || true)
        [ "$code" = 200 ] && break
        kill -0 "$MOTO_PID" 2>/dev/null || { tail -20 "$MOTO_LOG" >&2; die "moto_server exited"; }
        sleep 0.5
    done
    [ "$code" = 200 ] || die "moto_server does not answer at $S3"
    # moto does not check signatures: an unsigned PUT creates the bucket.
    code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT "$S3/$BUCKET")
    [ "$code" = 200 ] || die "cannot create the bucket $BUCKET at $S3 (HTTP $code)"
}
note_moto_peak() {
    local hwm
    hwm=$(rss_kb "$MOTO_PID" VmHWM)
    ((hwm > MOTO_PEAK_KB)) && MOTO_PEAK_KB=$hwm
    return 0
}
# S3 requests moto has answered so far (its werkzeug request log, one line per request).
s3_requests() { grep -c 'HTTP/1\.1' "$MOTO_LOG" || true; }
log "starting moto_server $MOTO_VERSION at $S3"
start_moto
MOTO_RSS_IDLE=$(rss_kb "$MOTO_PID" VmRSS)

# ---------------------------------------------------------------- registries
NAMES=(dist distredir berth berth2 berthredir)
declare -A LABEL=([dist]="distribution 2.8, s3, redirect off" [distredir]="distribution 2.8, s3, redirect on (default)"
    [berth]="Berth replica 1" [berth2]="Berth replica 2" [berthredir]="Berth, storage.redirect=true")
declare -A URL PID MONO

start_dist() { # name redirect-disable
    pick_port
    cat >"$WORK/$1-config.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  s3:
    accesskey: test
    secretkey: test
    region: us-east-1
    regionendpoint: $S3
    bucket: $BUCKET
    rootdirectory: /$RUN_PREFIX/dist
    secure: false
    v4auth: true
  cache:
    blobdescriptor: inmemory
  delete:
    enabled: true
  redirect:
    disable: $2
http:
  addr: 127.0.0.1:$PICKED
  secret: bench-secret-not-used-elsewhere
EOF
    # AWS_CA_BUNDLE (set in some environments) makes aws-sdk-go v1 refuse distribution's transport.
    (exec env -u AWS_CA_BUNDLE docker-registry serve "$WORK/$1-config.yml" >"$WORK/logs/$1.log" 2>&1) &
    PID[$1]=$!; PIDS+=("${PID[$1]}")
    URL[$1]="http://127.0.0.1:$PICKED"; MONO[$1]=post-put
}
start_berth() { # name redirect
    pick_port
    (exec env -u AWS_CA_BUNDLE BERTH_LISTEN="127.0.0.1:$PICKED" BERTH_DATA_DIR="$WORK/$1-data" \
        BERTH_METADATA_URL="$DB_URL" \
        BERTH_STORAGE_URL="s3://$BUCKET/$RUN_PREFIX/berth?region=us-east-1&endpoint=$S3&path_style=true&allow_http=true" \
        AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test BERTH_STORAGE__REDIRECT="$2" \
        BERTH_ADMIN_PASSWORD="$ADMIN_PW" BERTH_ANONYMOUS=read-write BERTH_LOG_LEVEL=warn RUST_LOG='' \
        "$BERTH_BIN" serve >"$WORK/logs/$1.log" 2>&1) &
    PID[$1]=$!; PIDS+=("${PID[$1]}")
    URL[$1]="http://127.0.0.1:$PICKED"; MONO[$1]=post
}
wait_ready() { # name
    local i code
    for i in $(seq 1 300); do
        code=$(curl -s -o /dev/null -w '%{http_code}' "${URL[$1]}/v2/" || true)
        [ "$code" = 200 ] && return 0
        kill -0 "${PID[$1]}" 2>/dev/null || break
        sleep 0.1
    done
    tail -20 "$WORK/logs/$1.log" >&2
    die "$1 did not start"
}

psql -X -q -v ON_ERROR_STOP=1 "$PG_BASE_URL" -c "CREATE DATABASE $DB_NAME" >/dev/null || die "CREATE DATABASE $DB_NAME failed"
DB_CREATED=1
log "PostgreSQL $PG_VERSION: database $DB_NAME"

start_dist dist true
start_dist distredir false
# The first replica migrates the schema; the others start after it is ready.
start_berth berth false
wait_ready berth
start_berth berth2 false
start_berth berthredir true
declare -A RSS_IDLE RSS_END RSS_PEAK
for n in "${NAMES[@]}"; do wait_ready "$n"; done
sleep 1
for n in "${NAMES[@]}"; do
    kill -0 "${PID[$n]}" || die "$n exited"
    comm=$(cat "/proc/${PID[$n]}/comm")
    case "$comm" in bench-b|docker-registry) ;; *) die "pid ${PID[$n]} of $n is $comm, not the server" ;; esac
    RSS_IDLE[$n]=$(rss_kb "${PID[$n]}" VmRSS)
    log "$n: ${URL[$n]} pid ${PID[$n]} idle VmRSS ${RSS_IDLE[$n]} kB"
done

# The CPU ticks of every server and moto together.
all_ticks() {
    local n s=0
    for n in "${NAMES[@]}"; do s=$((s + $(ticks_of "${PID[$n]}"))); done
    echo $((s + $(ticks_of "$MOTO_PID")))
}
# Waits until the registries and moto have stopped working (at most 1 tick in 0.5 s; 10 s at most).
settle() {
    local i before after
    for i in $(seq 1 20); do
        before=$(all_ticks); sleep 0.5; after=$(all_ticks)
        ((after - before <= 1)) && return 0
    done
    log "servers still busy after 10 s; measuring anyway"
}
# The whole machine's busy share between two /proc/stat samples ("total idle" jiffies).
cpu_sample() { awk '$1 == "cpu" { t = 0; for (i = 2; i <= NF; i++) t += $i; print t, $5 + $6 }' /proc/stat; }
busy_pct() { # "t0 i0" "t1 i1"
    awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " "); t = y[1] - x[1]; i = y[2] - x[2]; p = 0; if (t > 0) p = 100 * (t - i) / t; printf "%.0f", p }'
}
# CPU ticks of the PostgreSQL backends connected to the benchmark's database.
pg_pids() { psql -X -At "$PG_BASE_URL" -c "SELECT pid FROM pg_stat_activity WHERE datname = '$DB_NAME'" 2>/dev/null || true; }
# Transactions committed or rolled back in the benchmark's database so far (statistics reach
# pg_stat_database when a backend flushes them: at most about a second later).
pg_xacts() { psql -X -At "$PG_BASE_URL" -c "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = '$DB_NAME'" 2>/dev/null || echo 0; }
pg_ticks() { local p s=0; for p in "$@"; do s=$((s + $(ticks_of "$p"))); done; echo "$s"; }

# ---------------------------------------------------------------- HTTP helpers
REPO_BLOB=bench/blob
REPO_SMALL=bench/small
CURL_OUT="$WORK/tmp/headers"
# curl printing "<http_code> <time_total>".
rcurl() { curl -sS -o /dev/null -D "$CURL_OUT" -w '%{http_code} %{time_total}\n' -H 'Expect:' "$@"; }
location() { # name
    local loc
    loc=$(tr -d '\r' <"$CURL_OUT" | awk 'tolower($1) == "location:" { print $2 }' | tail -1)
    [ -n "$loc" ] || die "no Location header: $(cat "$CURL_OUT")"
    case "$loc" in /*) loc="${URL[$1]}$loc" ;; esac
    printf '%s' "$loc"
}
with_param() { case "$1" in *\?*) printf '%s&%s' "$1" "$2" ;; *) printf '%s?%s' "$1" "$2" ;; esac; }
expect_code() { # got want what
    [ "$1" = "$2" ] && return 0
    local n st
    for n in "${NAMES[@]}"; do
        if ! kill -0 "${PID[$n]}" 2>/dev/null; then
            st=0; wait "${PID[$n]}" 2>/dev/null || st=$?
            log "$n (pid ${PID[$n]}) is not running (exit status $st); its log ends with:"
            tail -20 "$WORK/logs/$n.log" >&2
        fi
    done
    die "$3: HTTP $1, expected $2 ($(head -c 600 "$CURL_OUT" | tr -d '\r' | tr '\n' ' '))"
}
push_mono() { # name repo file digest; prints the HTTP time
    local n=$1 repo=$2 file=$3 digest=$4 code t t2 loc
    if [ "${MONO[$n]}" = post ]; then
        # (No slash before "?": `curl -T` appends the file's name to a URL whose path ends in "/".)
        read -r code t < <(rcurl -X POST -H 'Content-Type: application/octet-stream' -T "$file" \
            "${URL[$n]}/v2/$repo/blobs/uploads?digest=$digest")
        expect_code "$code" 201 "$n monolithic POST"
        echo "$t"
    else
        read -r code t < <(rcurl -X POST "${URL[$n]}/v2/$repo/blobs/uploads/")
        expect_code "$code" 202 "$n POST"
        loc=$(location "$n")
        read -r code t2 < <(rcurl -X PUT -H 'Content-Type: application/octet-stream' -T "$file" \
            "$(with_param "$loc" "digest=$digest")")
        expect_code "$code" 201 "$n PUT with body"
        awk -v a="$t" -v b="$t2" 'BEGIN { printf "%.6f\n", a + b }'
    fi
}
push_chunked() { # name repo digest chunk-files...; prints the summed HTTP time
    local n=$1 repo=$2 digest=$3 code t total loc offset=0 size chunk
    shift 3
    read -r code t < <(rcurl -X POST "${URL[$n]}/v2/$repo/blobs/uploads/")
    expect_code "$code" 202 "$n POST"
    total=$t
    for chunk in "$@"; do
        loc=$(location "$n")
        size=$(stat -c %s "$chunk")
        read -r code t < <(rcurl -X PATCH -H 'Content-Type: application/octet-stream' \
            -H "Content-Range: $offset-$((offset + size - 1))" -T "$chunk" "$loc")
        expect_code "$code" 202 "$n PATCH at $offset"
        total=$(awk -v a="$total" -v b="$t" 'BEGIN { printf "%.6f", a + b }')
        offset=$((offset + size))
    done
    loc=$(location "$n")
    read -r code t < <(rcurl -X PUT "$(with_param "$loc" "digest=$digest")")
    expect_code "$code" 201 "$n final PUT"
    awk -v a="$total" -v b="$t" 'BEGIN { printf "%.6f\n", a + b }'
}
check_blob() { # name repo digest size
    local code len
    read -r code _ < <(rcurl -I "${URL[$1]}/v2/$2/blobs/$3")
    expect_code "$code" 200 "$1 HEAD blob $3"
    len=$(tr -d '\r' <"$CURL_OUT" | awk 'tolower($1) == "content-length:" { print $2 }' | tail -1)
    [ "$len" = "$4" ] || die "$1: blob $3 has length $len, expected $4"
}
# Deletes a pushed test blob's bytes from the bucket behind the registry's back (it is never
# read again), so moto's memory and temporary files stay bounded. Prints how many objects.
PURGE_MISSES=0
purge_blob() { # name digest
    local hex=${2#sha256:} prefix key count=0
    case "$1" in
        dist*) prefix="$RUN_PREFIX/dist/docker/registry/v2/blobs/sha256/${hex:0:2}/$hex/" ;;
        *) prefix="$RUN_PREFIX/berth/blobs/sha256/${hex:0:2}/$hex/" ;;
    esac
    for key in $(curl -s "$S3/$BUCKET?list-type=2&prefix=$prefix" | grep -o '<Key>[^<]*</Key>' | sed 's/<[^>]*>//g'); do
        curl -s -o /dev/null -X DELETE "$S3/$BUCKET/$key" && count=$((count + 1))
    done
    if [ "$count" = 0 ]; then
        PURGE_MISSES=$((PURGE_MISSES + 1))
        log "WARNING: no object of $1's blob $2 under $prefix to delete"
    fi
}
moto_check() {
    local rss
    note_moto_peak
    rss=$(rss_kb "$MOTO_PID" VmRSS)
    log "moto VmRSS $((rss / 1024)) MiB"
    if ((rss / 1024 > MOTO_MAX_RSS_MB)); then
        log "moto passed ${MOTO_MAX_RSS_MB} MiB: restarting it (only fresh blobs are pushed from now on)"
        kill "$MOTO_PID"; wait "$MOTO_PID" 2>/dev/null || true
        start_moto
        MOTO_RESTARTS=$((MOTO_RESTARTS + 1))
    fi
}

sha256_of() { openssl dgst -sha256 -r "$1" | awk '{ print "sha256:" $1 }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
gbps() { awk -v b="$BLOB_BYTES" -v s="$1" 'BEGIN { printf "%.3f", b / s / 1e9 }'; }

# ---------------------------------------------------------------- test data
F="$WORK/files"
log "generating a ${SIZE_MIB} MiB random blob and $((2 * REPS)) variants"
openssl rand -out "$F/base" "$BLOB_BYTES"
BASE_DIGEST=$(sha256_of "$F/base")
make_variant() { cp "$F/base" "$1"; openssl rand 64 | dd of="$1" conv=notrunc status=none; }
declare -a MONO_FILE MONO_DIGEST CHUNK_DIR CHUNK_DIGEST
for i in $(seq 1 "$REPS"); do
    MONO_FILE[i]="$F/mono-$i"; make_variant "${MONO_FILE[i]}"; MONO_DIGEST[i]=$(sha256_of "${MONO_FILE[i]}")
    CHUNK_DIR[i]="$F/chunks-$i"; mkdir -p "${CHUNK_DIR[i]}"
    make_variant "$F/tmp-variant"; CHUNK_DIGEST[i]=$(sha256_of "$F/tmp-variant")
    split -b "$CHUNK_BYTES" -d -a 4 "$F/tmp-variant" "${CHUNK_DIR[i]}/c"
    rm -f "$F/tmp-variant"
done
sync
mapfile -t CHUNKS_1 < <(ls "${CHUNK_DIR[1]}"/c*)
NCHUNKS=${#CHUNKS_1[@]}

head -c 4096 /dev/urandom | gzip -c >"$F/layer.tar.gz"
LAYER_DIGEST=$(sha256_of "$F/layer.tar.gz")
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["%s"]},"config":{}}' \
    "$BASE_DIGEST" >"$F/config.json"
CONFIG_DIGEST=$(sha256_of "$F/config.json")
printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":%d}]}' \
    "$OCI_MANIFEST" "$CONFIG_DIGEST" "$(stat -c %s "$F/config.json")" "$LAYER_DIGEST" "$(stat -c %s "$F/layer.tar.gz")" >"$F/manifest.json"

# ---------------------------------------------------------------- setup: the pull blob and the small image
# distribution: pushed through "dist" (distredir shares its rootdirectory); Berth: through
# "berth" (the other replicas share its database and prefix). Every server is then checked.
DIST_MONO_NOTE="POST, then one PUT ?digest= with the whole body (distribution 2.8 does not accept the body of a POST)"
read -r code _ < <(rcurl -X POST -H 'Content-Type: application/octet-stream' --data-binary "@$F/config.json" \
    "${URL[dist]}/v2/bench/probe/blobs/uploads/?digest=$CONFIG_DIGEST")
if [ "$code" = 201 ]; then
    MONO[dist]=post; MONO[distredir]=post
    DIST_MONO_NOTE="a monolithic POST ?digest= (accepted by this build)"
fi
log "distribution monolithic push: ${MONO[dist]} (probe POST answered $code)"
for n in dist berth; do
    push_mono "$n" "$REPO_BLOB" "$F/base" "$BASE_DIGEST" >/dev/null
    push_mono "$n" "$REPO_SMALL" "$F/layer.tar.gz" "$LAYER_DIGEST" >/dev/null
    push_mono "$n" "$REPO_SMALL" "$F/config.json" "$CONFIG_DIGEST" >/dev/null
    read -r code _ < <(rcurl -X PUT -H "Content-Type: $OCI_MANIFEST" --data-binary "@$F/manifest.json" \
        "${URL[$n]}/v2/$REPO_SMALL/manifests/v1")
    expect_code "$code" 201 "$n manifest PUT"
done
for n in "${NAMES[@]}"; do
    if [ "$n" = distredir ]; then
        # distribution redirects a blob HEAD too (to a URL presigned for GET).
        read -r code _ < <(rcurl -I "${URL[$n]}/v2/$REPO_BLOB/blobs/$BASE_DIGEST")
        expect_code "$code" 307 "$n HEAD blob"
    else
        check_blob "$n" "$REPO_BLOB" "$BASE_DIGEST" "$BLOB_BYTES"
    fi
    read -r code _ < <(rcurl -H "Accept: $OCI_MANIFEST" "${URL[$n]}/v2/$REPO_SMALL/manifests/v1")
    expect_code "$code" 200 "$n manifest GET"
    ctype=$(tr -d '\r' <"$CURL_OUT" | awk 'tolower($1) == "content-type:" { print $2 }')
    [ "$ctype" = "$OCI_MANIFEST" ] || die "$n serves the manifest as $ctype"
done
# The redirecting servers must really redirect a blob GET (and the others must not).
for n in dist distredir berth berthredir; do
    read -r code _ < <(rcurl "${URL[$n]}/v2/$REPO_BLOB/blobs/$BASE_DIGEST" -r 0-0)
    case "$n" in
        *redir) [ "$code" = 307 ] || die "$n answered a blob GET with $code, not a 307 redirect" ;;
        *) case "$code" in 200|206) ;; *) die "$n answered a blob GET with $code" ;; esac ;;
    esac
done
REDIR_HOST=$(tr -d '\r' <"$CURL_OUT" | awk 'tolower($1) == "location:" { print $2 }' | sed 's#^\(https\?://[^/]*\).*#\1#')
log "setup done; Berth's redirect goes to $REDIR_HOST"

# ---------------------------------------------------------------- blob pull
PULLERS=(dist distredir berth berthredir)
declare -A PULL PULL_CPU PULL_MCPU PULL_REQ REDIR_MS
declare -A V # V[metric,name]: the reported figures
pull_once() { # name; prints "code time size redirects"
    local follow=()
    case "$1" in *redir) follow=(-L) ;; esac
    curl -s -o /dev/null "${follow[@]}" -w '%{http_code} %{time_total} %{size_download} %{num_redirects}\n' \
        "${URL[$1]}/v2/$REPO_BLOB/blobs/$BASE_DIGEST"
}
log "blob pull: warm-up"
for n in "${PULLERS[@]}"; do
    read -r code _ < <(pull_once "$n")
    expect_code "$code" 200 "$n pull warm-up"
done
for i in $(seq 1 "$REPS"); do
    line=""
    for n in "${PULLERS[@]}"; do
        sync; settle
        c0=$(ticks_of "${PID[$n]}"); m0=$(ticks_of "$MOTO_PID"); r0=$(s3_requests)
        read -r code t size redirects < <(pull_once "$n")
        expect_code "$code" 200 "$n pull"
        [ "$size" = "$BLOB_BYTES" ] || die "$n pull got $size bytes"
        case "$n" in
            *redir) [ "$redirects" = 1 ] || die "$n pull followed $redirects redirects, expected 1" ;;
            *) [ "$redirects" = 0 ] || die "$n pull was redirected" ;;
        esac
        settle
        PULL_CPU[$n]+="$(($(ticks_of "${PID[$n]}") - c0)) "
        PULL_MCPU[$n]+="$(($(ticks_of "$MOTO_PID") - m0)) "
        PULL_REQ[$n]+="$(($(s3_requests) - r0)) "
        PULL[$n]+="$t "; line+="$n=${t}s "
    done
    log "pull rep $i: $line"
done
# The registry's own part of a redirected pull: the time to answer 307 (20 sequential GETs without
# following the redirect, one curl each; median in ms).
for n in distredir berthredir; do
    settle
    ts=()
    for j in $(seq 1 20); do
        read -r code t < <(curl -s -o /dev/null -w '%{http_code} %{time_total}\n' "${URL[$n]}/v2/$REPO_BLOB/blobs/$BASE_DIGEST")
        expect_code "$code" 307 "$n redirect"
        ts+=("$t")
    done
    V[redir_ms,$n]=$(awk -v s="$(median "${ts[@]}")" 'BEGIN { printf "%.2f", s * 1000 }')
    REDIR_MS[$n]="${ts[*]}"
    log "$n: 307 answered in ${V[redir_ms,$n]} ms (median of 20)"
done
moto_check

# ---------------------------------------------------------------- manifest GET under load; replicas
declare -A RPS P99 REQ_CPU MOTO_CPU_GET S3_PER_GET PG_CPU_GET PG_XACT_GET BUSY WRK_NOTE
to_ms() { # wrk latency like 1.23ms / 850.00us / 1.02s
    awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000; else if (v ~ /m$/) n *= 60000; printf "%.2f", n }'
}
wrk_field() { # file field
    case "$2" in
        rps) awk '$1 == "Requests/sec:" { printf "%.0f", $2 }' "$1" ;;
        n) awk '$2 == "requests" && $3 == "in" { print $1 }' "$1" ;;
        p99) to_ms "$(awk '$1 == "99%" { print $2 }' "$1")" ;;
    esac
}
wrk_check() { # file label
    local n
    n=$(wrk_field "$1" n)
    [ -n "$n" ] && [ "$n" -gt 0 ] || die "wrk made no requests ($2): $(cat "$1")"
    if grep -qE 'Non-2xx|Socket errors' "$1"; then
        WRK_NOTE[$2]+="$(grep -E 'Non-2xx|Socket errors' "$1" | tr -s ' ' | paste -sd';' -) "
        log "WARNING $2: ${WRK_NOTE[$2]}"
    fi
}
HDR=(-H "Accept: $OCI_MANIFEST")
murl() { echo "${URL[$1]}/v2/$REPO_SMALL/manifests/v1"; }
declare -A RPS_R1 RPS_R2 P99_R
for i in $(seq 1 "$REPS"); do
    # One server (distribution, then one Berth replica) with wrk -t2 -c32.
    for n in dist berth; do
        wrk -t2 -c"$WRK_CONNS" -d2s "${HDR[@]}" "$(murl "$n")" >/dev/null 2>&1 || true # warm-up
        settle
        mapfile -t pgp < <(pg_pids)
        out="$WORK/logs/wrk-$n-$i.txt"
        sleep 1.2; x0=$(pg_xacts)
        c0=$(ticks_of "${PID[$n]}"); m0=$(ticks_of "$MOTO_PID"); r0=$(s3_requests); p0=$(pg_ticks "${pgp[@]}"); s0=$(cpu_sample)
        wrk -t2 -c"$WRK_CONNS" -d"$WRK_DURATION" --latency "${HDR[@]}" "$(murl "$n")" >"$out" 2>&1 || die "wrk failed for $n: $(cat "$out")"
        s1=$(cpu_sample); c1=$(ticks_of "${PID[$n]}"); m1=$(ticks_of "$MOTO_PID"); r1=$(s3_requests); p1=$(pg_ticks "${pgp[@]}")
        wrk_check "$out" "$n"
        nreq=$(wrk_field "$out" n)
        sleep 1.2; x1=$(pg_xacts)
        PG_XACT_GET[$n]+="$(awk -v a="$((x1 - x0))" -v r="$nreq" 'BEGIN { printf "%.2f", a / r }') "
        RPS[$n]+="$(wrk_field "$out" rps) "
        P99[$n]+="$(wrk_field "$out" p99) "
        BUSY[$n]+="$(busy_pct "$s0" "$s1") "
        REQ_CPU[$n]+="$(awk -v t="$((c1 - c0))" -v hz="$CLK_TCK" -v r="$nreq" 'BEGIN { printf "%.1f", t / hz / r * 1e6 }') "
        MOTO_CPU_GET[$n]+="$(awk -v t="$((m1 - m0))" -v hz="$CLK_TCK" -v r="$nreq" 'BEGIN { printf "%.1f", t / hz / r * 1e6 }') "
        PG_CPU_GET[$n]+="$(awk -v t="$((p1 - p0))" -v hz="$CLK_TCK" -v r="$nreq" 'BEGIN { printf "%.1f", t / hz / r * 1e6 }') "
        S3_PER_GET[$n]+="$(awk -v a="$((r1 - r0))" -v r="$nreq" 'BEGIN { printf "%.2f", a / r }') "
        log "wrk $n rep $i: $(wrk_field "$out" rps) req/s, p99 $(wrk_field "$out" p99) ms, machine busy $(busy_pct "$s0" "$s1")%"
    done
    # Two Berth replicas at once: one wrk -t1 -c16 against each, started together.
    half=$((WRK_CONNS / 2))
    wrk -t1 -c"$half" -d2s "${HDR[@]}" "$(murl berth)" >/dev/null 2>&1 &
    w1=$!
    wrk -t1 -c"$half" -d2s "${HDR[@]}" "$(murl berth2)" >/dev/null 2>&1 || true
    wait "$w1" || true
    settle
    mapfile -t pgp < <(pg_pids)
    o1="$WORK/logs/wrk-2rep-a-$i.txt"; o2="$WORK/logs/wrk-2rep-b-$i.txt"
    c0=$(($(ticks_of "${PID[berth]}") + $(ticks_of "${PID[berth2]}"))); p0=$(pg_ticks "${pgp[@]}"); s0=$(cpu_sample)
    wrk -t1 -c"$half" -d"$WRK_DURATION" --latency "${HDR[@]}" "$(murl berth)" >"$o1" 2>&1 &
    w1=$!
    wrk -t1 -c"$half" -d"$WRK_DURATION" --latency "${HDR[@]}" "$(murl berth2)" >"$o2" 2>&1 || die "wrk failed for berth2: $(cat "$o2")"
    wait "$w1" || die "wrk failed for berth: $(cat "$o1")"
    s1=$(cpu_sample); c1=$(($(ticks_of "${PID[berth]}") + $(ticks_of "${PID[berth2]}"))); p1=$(pg_ticks "${pgp[@]}")
    wrk_check "$o1" "berth x2"; wrk_check "$o2" "berth x2"
    a=$(wrk_field "$o1" rps); b=$(wrk_field "$o2" rps)
    nreq=$(($(wrk_field "$o1" n) + $(wrk_field "$o2" n)))
    RPS[berthx2]+="$((a + b)) "; RPS_R1[x]+="$a "; RPS_R2[x]+="$b "
    P99[berthx2]+="$(awk -v a="$(wrk_field "$o1" p99)" -v b="$(wrk_field "$o2" p99)" 'BEGIN { m = (a + 0 >= b + 0) ? a : b; print m }') "
    BUSY[berthx2]+="$(busy_pct "$s0" "$s1") "
    REQ_CPU[berthx2]+="$(awk -v t="$((c1 - c0))" -v hz="$CLK_TCK" -v r="$nreq" 'BEGIN { printf "%.1f", t / hz / r * 1e6 }') "
    PG_CPU_GET[berthx2]+="$(awk -v t="$((p1 - p0))" -v hz="$CLK_TCK" -v r="$nreq" 'BEGIN { printf "%.1f", t / hz / r * 1e6 }') "
    log "wrk 2 replicas rep $i: $a + $b = $((a + b)) req/s, machine busy $(busy_pct "$s0" "$s1")%"
done
for n in "${NAMES[@]}"; do kill -0 "${PID[$n]}" || die "$n died during the load"; done
moto_check

# ---------------------------------------------------------------- pushes
PUSHERS=(dist berth)
declare -A PUSHM PUSHC PUSHM_CPU PUSHC_CPU PUSHM_MCPU PUSHC_MCPU PUSHM_REQ PUSHC_REQ
for i in $(seq 1 "$REPS"); do
    line=""
    for n in "${PUSHERS[@]}"; do
        cat "${MONO_FILE[i]}" >/dev/null
        sync; settle
        c0=$(ticks_of "${PID[$n]}"); m0=$(ticks_of "$MOTO_PID"); r0=$(s3_requests)
        t=$(push_mono "$n" "$REPO_BLOB" "${MONO_FILE[i]}" "${MONO_DIGEST[i]}")
        settle
        PUSHM_CPU[$n]+="$(($(ticks_of "${PID[$n]}") - c0)) "
        PUSHM_MCPU[$n]+="$(($(ticks_of "$MOTO_PID") - m0)) "
        PUSHM_REQ[$n]+="$(($(s3_requests) - r0)) "
        check_blob "$n" "$REPO_BLOB" "${MONO_DIGEST[i]}" "$BLOB_BYTES"
        purge_blob "$n" "${MONO_DIGEST[i]}"
        PUSHM[$n]+="$t "; line+="$n=${t}s "
    done
    log "monolithic push rep $i: $line"
    moto_check
done
for i in $(seq 1 "$REPS"); do
    mapfile -t chunks < <(ls "${CHUNK_DIR[i]}"/c*)
    line=""
    for n in "${PUSHERS[@]}"; do
        cat "${chunks[@]}" >/dev/null
        sync; settle
        c0=$(ticks_of "${PID[$n]}"); m0=$(ticks_of "$MOTO_PID"); r0=$(s3_requests)
        t=$(push_chunked "$n" "$REPO_BLOB" "${CHUNK_DIGEST[i]}" "${chunks[@]}")
        settle
        PUSHC_CPU[$n]+="$(($(ticks_of "${PID[$n]}") - c0)) "
        PUSHC_MCPU[$n]+="$(($(ticks_of "$MOTO_PID") - m0)) "
        PUSHC_REQ[$n]+="$(($(s3_requests) - r0)) "
        check_blob "$n" "$REPO_BLOB" "${CHUNK_DIGEST[i]}" "$BLOB_BYTES"
        purge_blob "$n" "${CHUNK_DIGEST[i]}"
        PUSHC[$n]+="$t "; line+="$n=${t}s "
    done
    log "chunked push rep $i: $line"
    moto_check
done
for n in "${NAMES[@]}"; do
    kill -0 "${PID[$n]}" || die "$n died during the run"
    RSS_END[$n]=$(rss_kb "${PID[$n]}" VmRSS)
    RSS_PEAK[$n]=$(rss_kb "${PID[$n]}" VmHWM)
done
note_moto_peak
# Anything the servers logged at warn level or above (Berth) / error (distribution).
WARN_LINES=""
for n in "${NAMES[@]}"; do
    c=$(grep -c . "$WORK/logs/$n.log" || true)
    [ "$c" = 0 ] || WARN_LINES+="$n: $c lines ($(head -c 300 "$WORK/logs/$n.log" | head -1 | tr -d '`|'));"
done

# ---------------------------------------------------------------- figures and report
med() { local -a s; read -ra s <<<"$1"; median "${s[@]}"; }
for n in "${PULLERS[@]}"; do
    V[pull,$n]=$(gbps "$(med "${PULL[$n]}")")
    V[pull_cpu,$n]=$(ticks_to_s "$(med "${PULL_CPU[$n]}")")
    V[pull_mcpu,$n]=$(ticks_to_s "$(med "${PULL_MCPU[$n]}")")
    V[pull_req,$n]=$(med "${PULL_REQ[$n]}")
done
for n in "${PUSHERS[@]}"; do
    V[pushm,$n]=$(gbps "$(med "${PUSHM[$n]}")")
    V[pushc,$n]=$(gbps "$(med "${PUSHC[$n]}")")
    V[pushm_cpu,$n]=$(ticks_to_s "$(med "${PUSHM_CPU[$n]}")")
    V[pushc_cpu,$n]=$(ticks_to_s "$(med "${PUSHC_CPU[$n]}")")
    V[pushm_mcpu,$n]=$(ticks_to_s "$(med "${PUSHM_MCPU[$n]}")")
    V[pushc_mcpu,$n]=$(ticks_to_s "$(med "${PUSHC_MCPU[$n]}")")
    V[pushm_req,$n]=$(med "${PUSHM_REQ[$n]}")
    V[pushc_req,$n]=$(med "${PUSHC_REQ[$n]}")
    V[rps,$n]=$(med "${RPS[$n]}")
    V[p99,$n]=$(med "${P99[$n]}")
    V[req_cpu,$n]=$(med "${REQ_CPU[$n]}")
    V[req_mcpu,$n]=$(med "${MOTO_CPU_GET[$n]}")
    V[req_pg,$n]=$(med "${PG_CPU_GET[$n]}")
    V[req_s3,$n]=$(med "${S3_PER_GET[$n]}")
    V[req_xact,$n]=$(med "${PG_XACT_GET[$n]}")
    V[busy,$n]=$(med "${BUSY[$n]}")
done
V[req_pg,dist]="—"; V[req_xact,dist]="—" # distribution uses no database
V[rps,berthx2]=$(med "${RPS[berthx2]}")
V[p99,berthx2]=$(med "${P99[berthx2]}")
V[busy,berthx2]=$(med "${BUSY[berthx2]}")
V[req_cpu,berthx2]=$(med "${REQ_CPU[berthx2]}")
V[req_pg,berthx2]=$(med "${PG_CPU_GET[berthx2]}")
V[rps_r1,berthx2]=$(med "${RPS_R1[x]}")
V[rps_r2,berthx2]=$(med "${RPS_R2[x]}")
mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k * 1024 / 1e6 }'; }
for n in "${NAMES[@]}"; do
    V[rss_idle,$n]=$(mb "${RSS_IDLE[$n]}"); V[rss_end,$n]=$(mb "${RSS_END[$n]}"); V[rss_peak,$n]=$(mb "${RSS_PEAK[$n]}")
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "n/a"; else printf "%.2f×", a / b }'; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 >= b + 0) }'; }
verdict() { if "$@"; then echo "**met**"; else echo "**not met**"; fi; }
row() { # label dist-name berth-name metric
    printf '| %s | %s | %s | %s |\n' "$1" "${V[$4,$2]}" "${V[$4,$3]}" "$(ratio "${V[$4,$3]}" "${V[$4,$2]}")"
}
samples() { # label assoc-name names...
    local label=$1 n
    local -n arr=$2
    shift 2
    for n in "$@"; do printf -- '- %s, %s: %s\n' "$label" "$n" "${arr[$n]% }"; done
}

COMMIT=$(git -C "$ROOT" rev-parse --short=12 HEAD)
DIRTY=""
[ -z "$(git -C "$ROOT" status --porcelain -- crates Cargo.toml Cargo.lock 2>/dev/null)" ] \
    || DIRTY=" plus uncommitted changes in the working tree"
CPU=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
MEM=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
NPROC=$(nproc)
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
DIST_VERSION=$(docker-registry --version 2>/dev/null | awk '{ print $NF }')
ELAPSED=$(( $(date +%s) - T_START ))

rep_ratio=$(ratio "${V[rps,berthx2]}" "${V[rps,berth]}")
if ge "${V[rps,berthx2]}" "$(awk -v d="${V[rps,berth]}" 'BEGIN { print 1.6 * d }')"; then
    rep_ok="**met**"
elif ge "${V[busy,berth]}" 85; then
    rep_ok="**not met; not measurable on this machine**: with ONE replica the $NPROC cores were already ${V[busy,berth]}% busy (wrk, Berth and PostgreSQL share them), so a second replica has no core to run on"
else
    rep_ok="**not met**"
fi

{
    echo "# Berth on PostgreSQL + S3 vs distribution 2.8 on S3"
    echo
    echo "Generated by \`bench/s3.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC') in $((ELAPSED / 60)) min $((ELAPSED % 60)) s. Do not edit by hand; re-run the script."
    echo
    echo "- Command: \`$COMMAND\` (from the repository's root)"
    echo "- Machine: **$NPROC CPUs**, $CPU, **$MEM RAM**, $(uname -sr); load average at the start $LOAD_START, at the end $LOAD (other work on the machine makes wall-clock figures noisy; compare the ratios within one run)"
    echo "- Berth: commit \`$COMMIT\`$DIRTY; $BUILD_NOTE (binary built $BIN_TIME); three replicas on one PostgreSQL $PG_VERSION database (a fresh one, on the cluster of \`scripts/postgres.sh\`: fsync off, loopback) and one S3 prefix, \`BERTH_ANONYMOUS=read-write\`, log level warn"
    echo "- distribution: Debian \`docker-registry\` $DIST_VERSION, \`s3\` driver (region us-east-1, \`regionendpoint\` = moto, \`secure: false\`, \`v4auth: true\`, path-style, default chunksize and multipart-copy settings), in-memory blob descriptor cache, access log off; two processes on one rootdirectory: \`storage.redirect.disable: true\`, and the driver's default (redirect on)"
    echo "- S3: moto_server $MOTO_VERSION (Python, from \`.venv\`), one private instance on 127.0.0.1 for this run, bucket \`$BUCKET\`, prefixes \`$RUN_PREFIX/dist\` and \`$RUN_PREFIX/berth\`; both registries talk to it over plain HTTP with SigV4. moto is slow and single-process (Python): every transfer figure below is bounded by it, which is why they are far below bench/RESULTS.md's"
    echo "- Client, registries, moto and PostgreSQL share the same $NPROC CPUs. Measured one at a time, round-robin per repetition, each after the servers and moto have gone idle; single transfers: median of $REPS; GB/s = 10^9 bytes/s over a ${SIZE_MIB} MiB blob; MB = 10^6 bytes"
    echo
    echo "## Results"
    echo
    echo "| Measurement | distribution 2.8, s3 | Berth, PostgreSQL + S3 | Berth / distribution |"
    echo "|---|---:|---:|---:|"
    row "Blob pull ${SIZE_MIB} MiB, streamed through the registry (GB/s)" dist berth pull
    row "Blob pull ${SIZE_MIB} MiB, 307 to a presigned S3 URL, \`curl -L\` (GB/s) ¹" distredir berthredir pull
    row "Push ${SIZE_MIB} MiB, monolithic (GB/s) ²" dist berth pushm
    row "Push ${SIZE_MIB} MiB, ${CHUNK_MIB} MiB chunks (GB/s) ³" dist berth pushc
    row "Registry's answer to a blob GET with redirect: 307 time (ms, lower is better) ⁶" distredir berthredir redir_ms
    row "Manifest GET by tag, wrk -t2 -c$WRK_CONNS (req/s)" dist berth rps
    row "Manifest GET p99 latency (ms, lower is better)" dist berth p99
    row "Registry CPU per streamed pull (CPU-s, lower is better) ⁴" dist berth pull_cpu
    row "Registry CPU per redirected pull (CPU-s)" distredir berthredir pull_cpu
    row "Registry CPU per monolithic push (CPU-s)" dist berth pushm_cpu
    row "Registry CPU per chunked push (CPU-s)" dist berth pushc_cpu
    row "Registry CPU per manifest GET (µs)" dist berth req_cpu
    row "PostgreSQL CPU per manifest GET (µs) ⁵" dist berth req_pg
    row "PostgreSQL transactions per manifest GET ⁵" dist berth req_xact
    row "moto CPU per streamed pull (CPU-s)" dist berth pull_mcpu
    row "moto CPU per redirected pull (CPU-s)" distredir berthredir pull_mcpu
    row "moto CPU per monolithic push (CPU-s)" dist berth pushm_mcpu
    row "moto CPU per chunked push (CPU-s)" dist berth pushc_mcpu
    row "moto CPU per manifest GET (µs)" dist berth req_mcpu
    row "S3 requests per streamed pull" dist berth pull_req
    row "S3 requests per redirected pull (the client's GET included)" distredir berthredir pull_req
    row "S3 requests per monolithic push" dist berth pushm_req
    row "S3 requests per chunked push" dist berth pushc_req
    row "S3 requests per manifest GET" dist berth req_s3
    echo "| Machine CPU busy during the manifest wrk run (%) | ${V[busy,dist]} | ${V[busy,berth]} | — |"
    row "RSS idle after start (MB, lower is better)" dist berth rss_idle
    row "RSS at the end (MB, lower is better)" dist berth rss_end
    row "Peak RSS, VmHWM (MB, lower is better)" dist berth rss_peak
    echo
    echo "1. The redirected pull is two requests: the registry's 307 and the GET of the presigned URL from moto; \`curl -L\` times both and the script checks exactly one redirect. distribution redirects by default on S3; Berth with \`storage.redirect = true\`."
    echo "2. Berth: one \`POST /v2/<repo>/blobs/uploads?digest=\` with the whole body (\`curl -T\`, no \`Expect: 100-continue\`). distribution: $DIST_MONO_NOTE; the time of both requests."
    echo "3. POST, $NCHUNKS PATCHes of ${CHUNK_MIB} MiB with \`Content-Range\`, then \`PUT ?digest=\`; the sum of curl's \`time_total\` (one curl process and connection per request)."
    echo "4. utime + stime of the process (all threads) from \`/proc/<pid>/stat\`, from the start of the operation until the servers are idle again (work done after the answer counts), median; ${CLK_TCK} Hz ticks, so small figures are coarse. moto's the same way; S3 requests are lines of moto's request log in the same window."
    echo "5. The PostgreSQL backends connected to the benchmark's database (\`pg_stat_activity\`) at the start of the wrk run; transactions: \`xact_commit + xact_rollback\` of \`pg_stat_database\` (read 1.2 s after the run, when the backends have flushed their statistics; the replicas' own background polling is included). distribution uses no database."
    echo "6. 20 sequential GETs of the blob without following the redirect (one curl process each), median of curl's \`time_total\`: the registry's own share of a redirected pull."
    echo
    echo "Every push uploads a fresh blob (the random base blob with 64 new random bytes at the start), checked with a HEAD afterwards; its bytes are then deleted from the bucket directly (never read again) to bound moto's memory. moto's peak RSS: $(mb "$MOTO_PEAK_KB") MB (idle after start $(mb "$MOTO_RSS_IDLE") MB); restarts: $MOTO_RESTARTS."
    echo "Pushes go to \`dist\` and \`berth\` only (the redirect setting changes nothing for a push). distribution redirects a blob HEAD as well as a GET; Berth answers HEADs itself."
    echo "Pulls use \`curl -o /dev/null\` on a pre-pushed blob after one warm-up pull each. Manifest GETs: \`wrk --latency\` with \`Accept: $OCI_MANIFEST\` on a small OCI image, after a 2 s warm-up, $REPS runs of $WRK_DURATION per server."
    for k in "${!WRK_NOTE[@]}"; do echo "**Warning** ($k): wrk reported ${WRK_NOTE[$k]}."; done
    [ "$PURGE_MISSES" = 0 ] || echo "**Warning**: $PURGE_MISSES pushed blobs had no object where the script expected it in the bucket (their bytes stayed in moto)."
    [ -z "$WARN_LINES" ] || echo "Server logs were not empty (Berth logs at warn, distribution at error): $WARN_LINES"
    echo
    echo "## Two Berth replicas on one database and bucket"
    echo
    echo "| Load | Manifest GET req/s | vs one replica | p99 (ms) | Berth CPU per GET (µs) | PostgreSQL CPU per GET (µs) | machine CPU busy |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    echo "| one replica, one wrk -t2 -c$WRK_CONNS | ${V[rps,berth]} | 1.00× | ${V[p99,berth]} | ${V[req_cpu,berth]} | ${V[req_pg,berth]} | ${V[busy,berth]}% |"
    echo "| two replicas, two wrk -t1 -c$((WRK_CONNS / 2)) at once (one per replica; sum) | ${V[rps,berthx2]} (${V[rps_r1,berthx2]} + ${V[rps_r2,berthx2]}) | $rep_ratio | ${V[p99,berthx2]} (worse of the two) | ${V[req_cpu,berthx2]} | ${V[req_pg,berthx2]} | ${V[busy,berthx2]}% |"
    echo
    echo "Both loads use two wrk threads and $WRK_CONNS connections in all. On this $NPROC-CPU machine wrk, the replicas and PostgreSQL"
    echo "compete for the same cores (the busy column), so this measures whether two replicas on one database work together"
    echo "without losing throughput, not how they scale: scaling needs the replicas (and the database) on cores of their own."
    echo
    echo "## Goals"
    echo
    echo "| Goal | Figure | Verdict |"
    echo "|---|---|---|"
    echo "| Streamed blob pull ≥ distribution | $(ratio "${V[pull,berth]}" "${V[pull,dist]}") | $(verdict ge "${V[pull,berth]}" "${V[pull,dist]}") |"
    echo "| Redirected blob pull ≥ distribution's (both redirecting) | $(ratio "${V[pull,berthredir]}" "${V[pull,distredir]}") | $(verdict ge "${V[pull,berthredir]}" "${V[pull,distredir]}") |"
    echo "| Monolithic push ≥ distribution | $(ratio "${V[pushm,berth]}" "${V[pushm,dist]}") | $(verdict ge "${V[pushm,berth]}" "${V[pushm,dist]}") |"
    echo "| Chunked push ≥ distribution | $(ratio "${V[pushc,berth]}" "${V[pushc,dist]}") | $(verdict ge "${V[pushc,berth]}" "${V[pushc,dist]}") |"
    echo "| Manifest GET on PostgreSQL ≥ 5× distribution on S3 | $(ratio "${V[rps,berth]}" "${V[rps,dist]}") | $(verdict ge "${V[rps,berth]}" "$(awk -v d="${V[rps,dist]}" 'BEGIN { print 5 * d }')") |"
    echo "| Two replicas ≥ 1.6× one replica (where the cores allow) | $rep_ratio | $rep_ok |"
    echo
    echo "## Raw samples"
    echo
    samples "pull seconds" PULL "${PULLERS[@]}"
    samples "monolithic push seconds" PUSHM "${PUSHERS[@]}"
    samples "chunked push seconds" PUSHC "${PUSHERS[@]}"
    samples "307 answer seconds" REDIR_MS distredir berthredir
    samples "manifest GET req/s" RPS dist berth berthx2
    printf -- '- manifest GET req/s of each replica under the two-replica load: %s / %s\n' "${RPS_R1[x]% }" "${RPS_R2[x]% }"
    samples "manifest GET p99 ms" P99 dist berth berthx2
    samples "machine busy % during wrk" BUSY dist berth berthx2
    samples "registry CPU ticks per pull" PULL_CPU "${PULLERS[@]}"
    samples "registry CPU ticks per monolithic push" PUSHM_CPU "${PUSHERS[@]}"
    samples "registry CPU ticks per chunked push" PUSHC_CPU "${PUSHERS[@]}"
    samples "moto CPU ticks per pull" PULL_MCPU "${PULLERS[@]}"
    samples "moto CPU ticks per monolithic push" PUSHM_MCPU "${PUSHERS[@]}"
    samples "moto CPU ticks per chunked push" PUSHC_MCPU "${PUSHERS[@]}"
} >"$RESULTS"

log "wrote $RESULTS"
cat "$RESULTS"
