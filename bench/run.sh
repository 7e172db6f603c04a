#!/usr/bin/env bash
# bench/run.sh: side-by-side performance benchmark of Berth against CNCF distribution 2.8
# (Debian's `docker-registry`), run on this machine, writing bench/RESULTS.md.
#
# Three registries run at once on 127.0.0.1, each with its own data folder under bench/work/:
#   1. distribution 2.8, no auth (filesystem storage, in-memory blob descriptor cache as in
#      Debian's default config, access log off, log level error);
#   2. Berth with BERTH_ANONYMOUS=read-write, no auth;
#   3. Berth with auth on (BERTH_ANONYMOUS=off): every request carries
#      `Authorization: Bearer <token>` from GET /service/token (Basic admin:<password>).
# They are measured one at a time, round-robin per repetition, so machine noise spreads evenly;
# before each measurement the script waits until no server is using CPU any more (distribution
# keeps working for seconds after acknowledging a large upload), flushes dirty pages, and (as
# root) drops the clean page cache and reloads the file to push, so every push allocates memory
# the same way (first-touch page faults on a VM otherwise slow down the later pushes of a run).
#
# Measurements (single transfers repeated REPS=5 times; the MEDIAN is reported):
#   - pull of a pre-pushed 256 MiB random blob with `curl -o /dev/null` (GB/s, GB = 1e9 bytes);
#   - monolithic push of a 256 MiB blob: `POST /v2/<repo>/blobs/uploads/?digest=` with the whole
#     body. distribution 2.8 ignores a body on POST, so there it is POST then one `PUT ?digest=`
#     carrying the whole body (the time of both requests);
#   - chunked push: POST, 32 PATCHes of 8 MiB (Content-Range, Content-Type
#     application/octet-stream), then PUT ?digest= (the sum of curl's time_total of all requests,
#     so curl process start-up is not counted);
#     every push repetition uses a fresh random blob (the base blob with a new random prefix),
#     so nothing is deduplicated and every push really uploads and verifies;
#   - `openssl dgst -sha256` on the same file as the single-core hashing limit, and each push's
#     ratio to it;
#   - manifest GET by tag (OCI manifest, Accept header) with `wrk -t2 -c32 -d10s --latency`
#     after pushing a small image (config + layer + OCI manifest with curl): requests/s and p99;
#   - VmRSS from /proc/<pid>/status right after start (idle) and after the load, plus VmHWM;
#   - the server's CPU time (utime + stime from /proc/<pid>/stat) per transfer and per manifest
#     GET: a figure that suffers less than wall-clock time from other load on the machine;
#   - `dd conv=fsync` of the blob to the same disk: both registries fsync an upload before
#     acknowledging it, so the disk is a push limit too.
# Then the ratios Berth/distribution and Berth-auth/Berth, and met / not met for the goals.
# It builds Berth itself (`cargo build --release -p berth`) and installs docker-registry and wrk
# with apt-get when they are missing. Only loopback addresses are used. Processes it starts are
# stopped by an EXIT trap; the data under bench/work/ is removed too unless KEEP_WORK=1.
#
# Usage: bench/run.sh            (env: REPS=5, WRK_DURATION=10s, PORT_BASE=15500, KEEP_WORK=0)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH="$ROOT/bench"
WORK="$BENCH/work/run"
RESULTS="$BENCH/RESULTS.md"
REPS=${REPS:-5}
WRK_DURATION=${WRK_DURATION:-10s}
WRK_CONNS=32
PORT_BASE=${PORT_BASE:-15500}
BLOB_MIB=256
CHUNK_MIB=8
BLOB_BYTES=$((BLOB_MIB << 20))
CHUNK_BYTES=$((CHUNK_MIB << 20))
ADMIN_PW="bench-admin-password-$$"
OCI_MANIFEST=application/vnd.oci.image.manifest.v1+json

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

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
for tool in curl openssl awk split cargo git; do command -v "$tool" >/dev/null || die "$tool is required"; done

log "building Berth (cargo build --release -p berth)"
(cd "$ROOT" && cargo build --release -p berth) || die "build failed"
TARGET_DIR=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps 2>/dev/null | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
BERTH_BIN="${TARGET_DIR:-$ROOT/target}/release/berth"
[ -x "$BERTH_BIN" ] || die "no binary at $BERTH_BIN"

# ---------------------------------------------------------------- processes and cleanup
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ "${KEEP_WORK:-0}" != 1 ]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

rm -rf "$WORK"
mkdir -p "$WORK"/{bin,files,logs,tmp}
# Run a private copy of the binary under a neutral name: the machine is shared, and this keeps
# the servers safe from a concurrent rebuild of target/release/berth and from other people's
# `pkill berth` (which did end runs of this script).
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

# Registry "objects": name, URL, pid, whether it needs a token, how it does monolithic pushes.
NAMES=(dist berth berthauth)
declare -A LABEL=([dist]="distribution 2.8 (no auth)" [berth]="Berth (no auth)" [berthauth]="Berth (token auth)")
declare -A URL PID AUTH MONO TOKEN

rss_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
# CPU time (user + system, all threads, in clock ticks) the process has used so far.
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/${PID[$1]}/stat"; }
# Waits until no registry uses CPU (their ticks stop moving for 0.5 s; at most 10 s), so a
# measurement never competes with another server's leftover work (distribution keeps a core busy
# for seconds after acknowledging a 256 MiB upload).
# Drops the clean page cache and reloads only `files`: on a VM, memory the guest never touched is
# slow to allocate the first time, so without this the pushes late in a run (after gigabytes of
# test files filled the cache) pay for first-touch page faults that early ones do not.
fresh_cache() { # files...
    sync
    if [ -w /proc/sys/vm/drop_caches ]; then echo 1 >/proc/sys/vm/drop_caches; fi
    cat "$@" >/dev/null
}
settle() {
    local n before after i
    for i in $(seq 1 20); do
        before=""; after=""
        for n in "${NAMES[@]}"; do before+="$(cpu_ticks "$n") "; done
        sleep 0.5
        for n in "${NAMES[@]}"; do after+="$(cpu_ticks "$n") "; done
        [ "$before" = "$after" ] && return 0
    done
    log "servers still busy after 10 s; measuring anyway"
}
ticks_to_s() { awk -v t="$1" -v hz="$CLK_TCK" 'BEGIN { printf "%.3f", t / hz }'; }

wait_ready() { # url
    local i code
    for i in $(seq 1 200); do
        code=$(curl -s -o /dev/null -w '%{http_code}' "$1/v2/" || true)
        case "$code" in 200|401) return 0 ;; esac
        sleep 0.1
    done
    return 1
}

pick_port; DIST_PORT=$PICKED
mkdir -p "$WORK/dist-data"
cat >"$WORK/dist-config.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $WORK/dist-data
  cache:
    blobdescriptor: inmemory
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$DIST_PORT
  secret: bench-secret-not-used-elsewhere
EOF
(exec docker-registry serve "$WORK/dist-config.yml" >"$WORK/logs/dist.log" 2>&1) &
PID[dist]=$!; PIDS+=("${PID[dist]}")
URL[dist]="http://127.0.0.1:$DIST_PORT"; AUTH[dist]=0; MONO[dist]=post-put

start_berth() { # name anonymous-mode
    pick_port
    (BERTH_LISTEN="127.0.0.1:$PICKED" BERTH_DATA_DIR="$WORK/$1-data" BERTH_ADMIN_PASSWORD="$ADMIN_PW" \
        BERTH_ANONYMOUS="$2" BERTH_LOG_LEVEL=warn RUST_LOG='' \
        exec "$BERTH_BIN" serve >"$WORK/logs/$1.log" 2>&1) &
    PID[$1]=$!; PIDS+=("${PID[$1]}")
    URL[$1]="http://127.0.0.1:$PICKED"; MONO[$1]=post
}
start_berth berth read-write; AUTH[berth]=0
start_berth berthauth off; AUTH[berthauth]=1

declare -A RSS_IDLE RSS_END RSS_PEAK
for n in "${NAMES[@]}"; do
    wait_ready "${URL[$n]}" || { tail -20 "$WORK/logs/$n.log" >&2; die "$n did not start"; }
done
sleep 1
for n in "${NAMES[@]}"; do
    kill -0 "${PID[$n]}" || die "$n exited"
    comm=$(cat "/proc/${PID[$n]}/comm")
    case "$comm" in bench-b|docker-registry) ;; *) die "pid ${PID[$n]} of $n is $comm, not the server" ;; esac
    RSS_IDLE[$n]=$(rss_kb "${PID[$n]}" VmRSS)
    log "$n: ${URL[$n]} pid ${PID[$n]} idle VmRSS ${RSS_IDLE[$n]} kB"
done

# ---------------------------------------------------------------- HTTP helpers
REPO_BLOB=bench/blob
REPO_SMALL=bench/small

refresh_token() { # name
    [ "${AUTH[$1]}" = 1 ] || return 0
    local body
    body=$(curl -sf -u "admin:$ADMIN_PW" \
        "${URL[$1]}/service/token?service=berth&scope=repository:$REPO_BLOB:pull,push&scope=repository:$REPO_SMALL:pull,push") \
        || die "token request to $1 failed"
    TOKEN[$1]=$(printf '%s' "$body" | sed -n 's/.*"token" *: *"\([^"]*\)".*/\1/p')
    [ -n "${TOKEN[$1]}" ] || die "no token in $body"
}

# curl with the registry's Authorization header. Prints "<http_code> <time_total>".
CURL_OUT="$WORK/tmp/headers"
rcurl() { # name curl-args...
    local n=$1; shift
    local auth=()
    [ "${AUTH[$n]}" = 1 ] && auth=(-H "Authorization: Bearer ${TOKEN[$n]}")
    curl -sS -o /dev/null -D "$CURL_OUT" -w '%{http_code} %{time_total}\n' -H 'Expect:' "${auth[@]}" "$@"
}

# The Location header of the last response, made absolute.
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
    local n
    for n in "${NAMES[@]}"; do
        if ! kill -0 "${PID[$n]}" 2>/dev/null; then
            local st=0
            wait "${PID[$n]}" 2>/dev/null || st=$?
            log "$n (pid ${PID[$n]}) is not running (exit status $st); its log ends with:"
            tail -20 "$WORK/logs/$n.log" >&2
        fi
    done
    die "$3: HTTP $1, expected $2 ($(head -c 600 "$CURL_OUT" | tr -d '\r' | tr '\n' ' '))"
}

# Monolithic push of file with digest to repo. Prints the seconds it took (HTTP time only).
push_mono() { # name repo file digest
    local n=$1 repo=$2 file=$3 digest=$4 code t t2 loc
    if [ "${MONO[$n]}" = post ]; then
        read -r code t < <(rcurl "$n" -X POST -H 'Content-Type: application/octet-stream' \
            -H 'Expect:' -T "$file" "${URL[$n]}/v2/$repo/blobs/uploads?digest=$digest")
        expect_code "$code" 201 "$n monolithic POST"
        echo "$t"
    else
        read -r code t < <(rcurl "$n" -X POST "${URL[$n]}/v2/$repo/blobs/uploads/")
        expect_code "$code" 202 "$n POST"
        loc=$(location "$n")
        read -r code t2 < <(rcurl "$n" -X PUT -H 'Content-Type: application/octet-stream' \
            -H 'Expect:' -T "$file" "$(with_param "$loc" "digest=$digest")")
        expect_code "$code" 201 "$n PUT with body"
        awk -v a="$t" -v b="$t2" 'BEGIN { printf "%.6f\n", a + b }'
    fi
}

# Chunked push: POST, PATCH each chunk file, PUT ?digest=. Prints the summed HTTP time.
push_chunked() { # name repo digest chunk-files...
    local n=$1 repo=$2 digest=$3 code t total loc offset=0 size chunk
    shift 3
    read -r code t < <(rcurl "$n" -X POST "${URL[$n]}/v2/$repo/blobs/uploads/")
    expect_code "$code" 202 "$n POST"
    total=$t
    for chunk in "$@"; do
        loc=$(location "$n")
        size=$(stat -c %s "$chunk")
        read -r code t < <(rcurl "$n" -X PATCH -H 'Content-Type: application/octet-stream' \
            -H "Content-Range: $offset-$((offset + size - 1))" -H 'Expect:' -T "$chunk" "$loc")
        expect_code "$code" 202 "$n PATCH at $offset"
        total=$(awk -v a="$total" -v b="$t" 'BEGIN { printf "%.6f", a + b }')
        offset=$((offset + size))
    done
    loc=$(location "$n")
    read -r code t < <(rcurl "$n" -X PUT "$(with_param "$loc" "digest=$digest")")
    expect_code "$code" 201 "$n final PUT"
    awk -v a="$total" -v b="$t" 'BEGIN { printf "%.6f\n", a + b }'
}

check_blob() { # name repo digest size
    local code
    read -r code _ < <(rcurl "$1" -I "${URL[$1]}/v2/$2/blobs/$3")
    expect_code "$code" 200 "$1 HEAD blob $3"
    local len
    len=$(tr -d '\r' <"$CURL_OUT" | awk 'tolower($1) == "content-length:" { print $2 }' | tail -1)
    [ "$len" = "$4" ] || die "$1: blob $3 has length $len, expected $4"
}

sha256_of() { openssl dgst -sha256 -r "$1" | awk '{ print "sha256:" $1 }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
gbps() { awk -v b="$BLOB_BYTES" -v s="$1" 'BEGIN { printf "%.3f", b / s / 1e9 }'; }
now_ns() { date +%s%N; }

# ---------------------------------------------------------------- test data
F="$WORK/files"
log "generating a ${BLOB_MIB} MiB random blob and $((2 * REPS)) variants"
openssl rand -out "$F/base" "$BLOB_BYTES"
BASE_DIGEST=$(sha256_of "$F/base")
# Variant i: the base blob with 64 fresh random bytes at the start (a distinct digest).
make_variant() { # path
    cp "$F/base" "$1"
    openssl rand 64 | dd of="$1" conv=notrunc status=none
}
declare -a MONO_FILE MONO_DIGEST CHUNK_DIR CHUNK_DIGEST
for i in $(seq 1 "$REPS"); do
    MONO_FILE[i]="$F/mono-$i"; make_variant "${MONO_FILE[i]}"; MONO_DIGEST[i]=$(sha256_of "${MONO_FILE[i]}")
    CHUNK_DIR[i]="$F/chunks-$i"; mkdir -p "${CHUNK_DIR[i]}"
    make_variant "$F/tmp-variant"; CHUNK_DIGEST[i]=$(sha256_of "$F/tmp-variant")
    split -b "$CHUNK_BYTES" -d -a 3 "$F/tmp-variant" "${CHUNK_DIR[i]}/c"
    rm -f "$F/tmp-variant"
done
# Flush the gigabytes just written, so their writeback does not run during the measurements.
sync
mapfile -t CHUNKS_1 < <(ls "${CHUNK_DIR[1]}"/c*)
[ "${#CHUNKS_1[@]}" = $((BLOB_MIB / CHUNK_MIB)) ] || die "split produced ${#CHUNKS_1[@]} chunks"

# Small image: a layer, a config, an OCI manifest.
head -c 4096 /dev/urandom | gzip -c >"$F/layer.tar.gz"
LAYER_DIGEST=$(sha256_of "$F/layer.tar.gz")
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["%s"]},"config":{}}' \
    "$BASE_DIGEST" >"$F/config.json"
CONFIG_DIGEST=$(sha256_of "$F/config.json")
printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":%d}]}' \
    "$OCI_MANIFEST" "$CONFIG_DIGEST" "$(stat -c %s "$F/config.json")" "$LAYER_DIGEST" "$(stat -c %s "$F/layer.tar.gz")" >"$F/manifest.json"

# ---------------------------------------------------------------- hashing limit
log "openssl dgst -sha256 speed"
declare -a SSL_T
cat "$F/base" >/dev/null
for i in $(seq 1 "$REPS"); do
    t0=$(now_ns); openssl dgst -sha256 "$F/base" >/dev/null; t1=$(now_ns)
    SSL_T[i]=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f", (b - a) / 1e9 }')
done
SSL_GBPS=$(gbps "$(median "${SSL_T[@]}")")
log "openssl sha256: $SSL_GBPS GB/s"

# Both registries fsync a blob before acknowledging it, so the disk's write + fsync speed is the
# other limit of a push. Measured in bench/work (the registries' disk).
log "disk write + fsync speed (dd conv=fsync)"
declare -a DISK_T
for i in 1 2 3; do
    t0=$(now_ns); dd if="$F/base" of="$WORK/tmp/ddtest" bs=1M conv=fsync status=none; t1=$(now_ns)
    DISK_T[i]=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f", (b - a) / 1e9 }')
    rm -f "$WORK/tmp/ddtest"
done
DISK_GBPS=$(gbps "$(median "${DISK_T[@]}")")
log "disk write + fsync: $DISK_GBPS GB/s"

# ---------------------------------------------------------------- setup: pre-push the pull blob and the small image
for n in "${NAMES[@]}"; do
    refresh_token "$n"
    push_mono "$n" "$REPO_BLOB" "$F/base" "$BASE_DIGEST" >/dev/null
    check_blob "$n" "$REPO_BLOB" "$BASE_DIGEST" "$BLOB_BYTES"
    push_mono "$n" "$REPO_SMALL" "$F/layer.tar.gz" "$LAYER_DIGEST" >/dev/null
    push_mono "$n" "$REPO_SMALL" "$F/config.json" "$CONFIG_DIGEST" >/dev/null
    read -r code _ < <(rcurl "$n" -X PUT -H "Content-Type: $OCI_MANIFEST" --data-binary "@$F/manifest.json" \
        "${URL[$n]}/v2/$REPO_SMALL/manifests/v1")
    expect_code "$code" 201 "$n manifest PUT"
    read -r code _ < <(rcurl "$n" -H "Accept: $OCI_MANIFEST" "${URL[$n]}/v2/$REPO_SMALL/manifests/v1")
    expect_code "$code" 200 "$n manifest GET"
    ctype=$(tr -d '\r' <"$CURL_OUT" | awk 'tolower($1) == "content-type:" { print $2 }')
    [ "$ctype" = "$OCI_MANIFEST" ] || die "$n serves the manifest as $ctype"
done

# distribution 2.8: does it take a monolithic POST? (It is expected not to; checked, not assumed.)
DIST_MONO_NOTE="POST then one PUT ?digest= with the whole body (distribution 2.8 does not accept the body of a POST)"
read -r code _ < <(rcurl dist -X POST -H 'Content-Type: application/octet-stream' --data-binary "@$F/config.json" \
    "${URL[dist]}/v2/bench/probe/blobs/uploads/?digest=$CONFIG_DIGEST")
if [ "$code" = 201 ]; then
    MONO[dist]=post
    DIST_MONO_NOTE="a monolithic POST ?digest= (accepted by this build)"
fi
log "distribution monolithic push: ${MONO[dist]} (probe POST answered $code)"

# ---------------------------------------------------------------- blob pull
declare -A PULL PUSHM PUSHC PULL_CPU PUSHM_CPU PUSHC_CPU
log "blob pull: warm-up"
for n in "${NAMES[@]}"; do
    refresh_token "$n"
    read -r code _ < <(rcurl "$n" "${URL[$n]}/v2/$REPO_BLOB/blobs/$BASE_DIGEST")
    expect_code "$code" 200 "$n pull warm-up"
done
for i in $(seq 1 "$REPS"); do
    line=""
    for n in "${NAMES[@]}"; do
        auth=(); [ "${AUTH[$n]}" = 1 ] && auth=(-H "Authorization: Bearer ${TOKEN[$n]}")
        settle
        c0=$(cpu_ticks "$n")
        read -r code t size < <(curl -s -o /dev/null -w '%{http_code} %{time_total} %{size_download}\n' \
            "${auth[@]}" "${URL[$n]}/v2/$REPO_BLOB/blobs/$BASE_DIGEST")
        expect_code "$code" 200 "$n pull"
        [ "$size" = "$BLOB_BYTES" ] || die "$n pull got $size bytes"
        PULL_CPU[$n]+="$(($(cpu_ticks "$n") - c0)) "
        PULL[$n]+="$t "; line+="$n=${t}s "
    done
    log "pull rep $i: $line"
done

# ---------------------------------------------------------------- pushes
for i in $(seq 1 "$REPS"); do
    sync # every push starts with no dirty pages left by the previous one
    line=""
    for n in "${NAMES[@]}"; do
        refresh_token "$n"
        fresh_cache "${MONO_FILE[i]}" # and no registry pays for the writeback of the one before
        settle
        c0=$(cpu_ticks "$n")
        t=$(push_mono "$n" "$REPO_BLOB" "${MONO_FILE[i]}" "${MONO_DIGEST[i]}")
        PUSHM_CPU[$n]+="$(($(cpu_ticks "$n") - c0)) "
        check_blob "$n" "$REPO_BLOB" "${MONO_DIGEST[i]}" "$BLOB_BYTES"
        PUSHM[$n]+="$t "; line+="$n=${t}s "
    done
    log "monolithic push rep $i: $line"
done
for i in $(seq 1 "$REPS"); do
    mapfile -t chunks < <(ls "${CHUNK_DIR[i]}"/c*)
    cat "${chunks[@]}" >/dev/null
    sync
    line=""
    for n in "${NAMES[@]}"; do
        refresh_token "$n"
        fresh_cache "${chunks[@]}"
        settle
        c0=$(cpu_ticks "$n")
        t=$(push_chunked "$n" "$REPO_BLOB" "${CHUNK_DIGEST[i]}" "${chunks[@]}")
        PUSHC_CPU[$n]+="$(($(cpu_ticks "$n") - c0)) "
        check_blob "$n" "$REPO_BLOB" "${CHUNK_DIGEST[i]}" "$BLOB_BYTES"
        PUSHC[$n]+="$t "; line+="$n=${t}s "
    done
    log "chunked push rep $i: $line"
done

# ---------------------------------------------------------------- manifest GET under load
declare -A RPS P99 WRK_NOTE REQ_CPU
to_ms() { # wrk latency like 1.23ms / 850.00us / 1.02s
    awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000; else if (v ~ /m$/) n *= 60000; printf "%.2f", n }'
}
for n in "${NAMES[@]}"; do
    refresh_token "$n"
    hdr=(-H "Accept: $OCI_MANIFEST")
    [ "${AUTH[$n]}" = 1 ] && hdr+=(-H "Authorization: Bearer ${TOKEN[$n]}")
    murl="${URL[$n]}/v2/$REPO_SMALL/manifests/v1"
    wrk -t2 -c"$WRK_CONNS" -d2s "${hdr[@]}" "$murl" >/dev/null 2>&1 || true # warm-up
    settle
    log "wrk $n ($WRK_DURATION, $WRK_CONNS connections)"
    c0=$(cpu_ticks "$n")
    wrk -t2 -c"$WRK_CONNS" -d"$WRK_DURATION" --latency "${hdr[@]}" "$murl" >"$WORK/logs/wrk-$n.txt" 2>&1 \
        || die "wrk failed for $n: $(cat "$WORK/logs/wrk-$n.txt")"
    c1=$(cpu_ticks "$n")
    nreq=$(awk '$2 == "requests" && $3 == "in" { print $1 }' "$WORK/logs/wrk-$n.txt")
    [ -n "$nreq" ] && [ "$nreq" -gt 0 ] || die "wrk made no requests against $n: $(cat "$WORK/logs/wrk-$n.txt")"
    REQ_CPU[$n]=$(awk -v t="$((c1 - c0))" -v hz="$CLK_TCK" -v r="$nreq" 'BEGIN { printf "%.1f", t / hz / r * 1e6 }')
    RPS[$n]=$(awk '$1 == "Requests/sec:" { printf "%.0f", $2 }' "$WORK/logs/wrk-$n.txt")
    P99[$n]=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$WORK/logs/wrk-$n.txt")")
    WRK_NOTE[$n]=$(grep -E 'Non-2xx|Socket errors' "$WORK/logs/wrk-$n.txt" | tr -s ' ' | paste -sd';' - || true)
    [ -z "${WRK_NOTE[$n]}" ] || log "WARNING $n: ${WRK_NOTE[$n]}"
    RSS_END[$n]=$(rss_kb "${PID[$n]}" VmRSS)
    RSS_PEAK[$n]=$(rss_kb "${PID[$n]}" VmHWM)
    log "$n: ${RPS[$n]} req/s, p99 ${P99[$n]} ms, VmRSS ${RSS_END[$n]} kB"
done
for n in "${NAMES[@]}"; do kill -0 "${PID[$n]}" || die "$n died during the run"; done

# ---------------------------------------------------------------- figures and report
declare -A V # V[metric,name]
for n in "${NAMES[@]}"; do
    read -ra s <<<"${PULL[$n]}"; V[pull,$n]=$(gbps "$(median "${s[@]}")")
    read -ra s <<<"${PUSHM[$n]}"; V[pushm,$n]=$(gbps "$(median "${s[@]}")")
    read -ra s <<<"${PUSHC[$n]}"; V[pushc,$n]=$(gbps "$(median "${s[@]}")")
    V[pushm_ssl,$n]=$(awk -v a="${V[pushm,$n]}" -v b="$SSL_GBPS" 'BEGIN { printf "%.2f", a / b }')
    V[pushc_ssl,$n]=$(awk -v a="${V[pushc,$n]}" -v b="$SSL_GBPS" 'BEGIN { printf "%.2f", a / b }')
    V[pushm_disk,$n]=$(awk -v a="${V[pushm,$n]}" -v b="$DISK_GBPS" 'BEGIN { printf "%.2f", a / b }')
    V[pushc_disk,$n]=$(awk -v a="${V[pushc,$n]}" -v b="$DISK_GBPS" 'BEGIN { printf "%.2f", a / b }')
    read -ra s <<<"${PULL_CPU[$n]}"; V[pull_cpu,$n]=$(ticks_to_s "$(median "${s[@]}")")
    read -ra s <<<"${PUSHM_CPU[$n]}"; V[pushm_cpu,$n]=$(ticks_to_s "$(median "${s[@]}")")
    read -ra s <<<"${PUSHC_CPU[$n]}"; V[pushc_cpu,$n]=$(ticks_to_s "$(median "${s[@]}")")
    V[req_cpu,$n]=${REQ_CPU[$n]}
    V[rps,$n]=${RPS[$n]}
    V[p99,$n]=${P99[$n]}
    V[rss_idle,$n]=$(awk -v k="${RSS_IDLE[$n]}" 'BEGIN { printf "%.1f", k * 1024 / 1e6 }')
    V[rss_end,$n]=$(awk -v k="${RSS_END[$n]}" 'BEGIN { printf "%.1f", k * 1024 / 1e6 }')
    V[rss_peak,$n]=$(awk -v k="${RSS_PEAK[$n]}" 'BEGIN { printf "%.1f", k * 1024 / 1e6 }')
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "n/a"; else printf "%.2f×", a / b }'; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 >= b + 0) }'; }
verdict() { if "$@"; then echo "**met**"; else echo "**not met**"; fi; }

row() { # label metric
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$1" "${V[$2,dist]}" "${V[$2,berth]}" "${V[$2,berthauth]}" \
        "$(ratio "${V[$2,berth]}" "${V[$2,dist]}")" "$(ratio "${V[$2,berthauth]}" "${V[$2,dist]}")" \
        "$(ratio "${V[$2,berthauth]}" "${V[$2,berth]}")"
}
samples() { # label assoc-name
    local -n arr=$2
    local n
    for n in "${NAMES[@]}"; do printf -- '- %s, %s: %s s\n' "$1" "$n" "${arr[$n]% }"; done
}

COMMIT=$(git -C "$ROOT" rev-parse --short=12 HEAD)
DIRTY=""
[ -z "$(git -C "$ROOT" status --porcelain -- crates Cargo.toml Cargo.lock 2>/dev/null)" ] \
    || DIRTY=" (plus uncommitted changes in the working tree at build time)"
CPU=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
MEM=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
DIST_VERSION=$(docker-registry --version 2>/dev/null | awk '{ print $NF }')

pull_ok=$(verdict ge "${V[pull,berth]}" "$(awk -v d="${V[pull,dist]}" 'BEGIN { print 1.5 * d }')")
push_goal() { # metric
    ge "${V[$1,berth]}" "$(awk -v d="${V[$1,dist]}" 'BEGIN { print 3 * d }')" \
        && ge "${V[$1,berth]}" "$(awk -v s="$SSL_GBPS" 'BEGIN { print 0.5 * s }')"
}
pushm_ok=$(verdict push_goal pushm)
pushc_ok=$(verdict push_goal pushc)
rps_ok=$(verdict ge "${V[rps,berth]}" "$(awk -v d="${V[rps,dist]}" 'BEGIN { print 10 * d }')")
rss_goal() { ge 30 "${V[rss_idle,berth]}" && ge 30 "${V[rss_idle,berthauth]}"; }
rss_ok=$(verdict rss_goal)
auth_goal() {
    ge "${V[rps,berthauth]}" "$(awk -v d="${V[rps,berth]}" 'BEGIN { print 0.8 * d }')" \
        && ge "${V[pull,berthauth]}" "$(awk -v d="${V[pull,berth]}" 'BEGIN { print 0.8 * d }')"
}
auth_ok=$(verdict auth_goal)

{
    echo "# Berth benchmark results"
    echo
    echo "Generated by \`bench/run.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'). Do not edit by hand; re-run the script."
    echo
    echo "- Machine: $(nproc) CPUs, $CPU, $MEM RAM, $(uname -sr); load average at the start $LOAD_START, at the end $LOAD (other work on the machine makes wall-clock figures noisy)"
    echo "- Berth: commit \`$COMMIT\`$DIRTY, \`cargo build --release -p berth\`"
    echo "- distribution: Debian \`docker-registry\` $DIST_VERSION, filesystem storage, in-memory blob descriptor cache, access log off"
    echo "- All three registries run at once on 127.0.0.1 with data under \`bench/work/\` (same disk); they are"
    echo "  measured one at a time, round-robin per repetition, each after the servers have gone idle (no CPU for 0.5 s), dirty pages are flushed and the page cache holds only the file to push. Client and servers share the same $(nproc) CPUs."
    echo "- Single transfers: median of $REPS; GB/s = 10^9 bytes/s over a ${BLOB_MIB} MiB blob; MB = 10^6 bytes."
    echo
    echo "## Results"
    echo
    echo "| Measurement | distribution 2.8 | Berth (no auth) | Berth (token auth) | Berth / dist | Berth-auth / dist | Berth-auth / Berth |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    row "Blob pull, ${BLOB_MIB} MiB (GB/s)" pull
    row "Push, monolithic (GB/s) ¹" pushm
    row "Push, ${CHUNK_MIB} MiB chunks (GB/s) ²" pushc
    row "Monolithic push / openssl SHA-256 speed" pushm_ssl
    row "Chunked push / openssl SHA-256 speed" pushc_ssl
    row "Monolithic push / disk write+fsync speed" pushm_disk
    row "Chunked push / disk write+fsync speed" pushc_disk
    row "Manifest GET by tag, $WRK_CONNS conns (req/s)" rps
    row "Manifest GET p99 latency (ms, lower is better)" p99
    row "Server CPU per pull (CPU-seconds, lower is better) ³" pull_cpu
    row "Server CPU per monolithic push (CPU-seconds) ³" pushm_cpu
    row "Server CPU per chunked push (CPU-seconds) ³" pushc_cpu
    row "Server CPU per manifest GET (µs, lower is better) ³" req_cpu
    row "RSS idle after start (MB, lower is better)" rss_idle
    row "RSS after the load (MB, lower is better)" rss_end
    row "Peak RSS, VmHWM (MB, lower is better)" rss_peak
    echo
    echo "Limits: \`openssl dgst -sha256\` on the ${BLOB_MIB} MiB file runs at **$SSL_GBPS GB/s** (median of $REPS, one core, file in page cache)."
    echo "Writing the same ${BLOB_MIB} MiB to the registries' disk with \`dd conv=fsync\` runs at **$DISK_GBPS GB/s** (median of 3); both registries"
    echo "fsync an upload before acknowledging it, so a push cannot beat this either."
    echo
    echo "1. Berth: one \`POST /v2/<repo>/blobs/uploads?digest=\` carrying the whole body, streamed from the file by \`curl -T\` (no \`Expect: 100-continue\`). distribution: $DIST_MONO_NOTE; the time of both requests."
    echo "2. POST, $((BLOB_MIB / CHUNK_MIB)) PATCHes of ${CHUNK_MIB} MiB with \`Content-Range\` and \`Content-Type: application/octet-stream\`, then \`PUT ?digest=\`;"
    echo "   the sum of curl's \`time_total\` over all requests (bodies streamed with \`curl -T\`; one curl process, and one connection, per request; process start-up not counted)."
    echo "3. User + system CPU time of the server process (all threads) from \`/proc/<pid>/stat\` around each transfer (median), and over the"
    echo "   whole wrk run divided by its requests. Less sensitive to other load on the machine than the wall-clock figures; ${CLK_TCK} Hz ticks."
    echo
    echo "Every push repetition uploads a fresh blob (the random base blob with 64 new random bytes at the start), so no registry can skip or"
    echo "deduplicate the upload; each push is checked with a HEAD of the blob afterwards. Pulls use \`curl -o /dev/null\` on a pre-pushed blob"
    echo "(after one warm-up pull). Manifest GETs use \`wrk -t2 -c$WRK_CONNS -d$WRK_DURATION --latency\` with \`Accept: $OCI_MANIFEST\` (and the Bearer token"
    echo "for the auth column) after a 2 s warm-up; the image is a small OCI image (config + one layer) pushed with curl."
    echo "In the auth column every request, pushes and pulls included, carries \`Authorization: Bearer <token>\` from \`/service/token\`."
    for n in "${NAMES[@]}"; do
        [ -z "${WRK_NOTE[$n]}" ] || echo "**Warning** (${LABEL[$n]}): wrk reported ${WRK_NOTE[$n]}."
    done
    echo
    echo "## Goals"
    echo
    echo "| Goal | Figure | Verdict |"
    echo "|---|---|---|"
    echo "| Blob pull ≥ 1.5× distribution | $(ratio "${V[pull,berth]}" "${V[pull,dist]}") | $pull_ok |"
    echo "| Monolithic push ≥ 3× distribution and ≥ 0.5× openssl hashing | $(ratio "${V[pushm,berth]}" "${V[pushm,dist]}") of distribution, ${V[pushm_ssl,berth]}× openssl | $pushm_ok |"
    echo "| Chunked push ≥ 3× distribution and ≥ 0.5× openssl hashing | $(ratio "${V[pushc,berth]}" "${V[pushc,dist]}") of distribution, ${V[pushc_ssl,berth]}× openssl | $pushc_ok |"
    echo "| Manifest GET ≥ 10× distribution | $(ratio "${V[rps,berth]}" "${V[rps,dist]}") | $rps_ok |"
    echo "| Idle RSS ≤ 30 MB | ${V[rss_idle,berth]} MB (no auth), ${V[rss_idle,berthauth]} MB (auth) | $rss_ok |"
    echo "| Berth with auth within 20% of without (manifest GETs and pulls) | $(ratio "${V[rps,berthauth]}" "${V[rps,berth]}") req/s, $(ratio "${V[pull,berthauth]}" "${V[pull,berth]}") pull | $auth_ok |"
    echo
    echo "Goals are judged on the Berth column without auth except the last two."
    echo
    echo "## Raw samples (seconds per ${BLOB_MIB} MiB transfer)"
    echo
    samples "pull" PULL
    samples "monolithic push" PUSHM
    samples "chunked push" PUSHC
    printf -- '- openssl dgst -sha256: %s s\n' "${SSL_T[*]}"
    printf -- '- dd conv=fsync: %s s\n' "${DISK_T[*]}"
    for n in "${NAMES[@]}"; do
        printf -- '- server CPU ticks (%s Hz), %s: pull %s; monolithic push %s; chunked push %s\n' "$CLK_TCK" "$n" \
            "${PULL_CPU[$n]% }" "${PUSHM_CPU[$n]% }" "${PUSHC_CPU[$n]% }"
    done
} >"$RESULTS"

log "wrote $RESULTS"
cat "$RESULTS"
