#!/usr/bin/env bash
# bench/federation.sh: workload identity federation benchmark, writing bench/FEDERATION.md.
#
#  1. Token exchanges per second over HTTP: Berth (release build) with an RS256 identity provider
#     (static keys) and 10,000 federated robots; wrk with 32 connections sends GET /service/token
#     with Basic jwt:<OIDC token>, every request a DIFFERENT token (minted beforehand), so each
#     one pays the full RS256 verification + claims validation + robot matching + registry token
#     signing (nothing is served from the verified-token cache).
#  2. In-process: decode + verify + validate + match (10,000 robots) per token, as a ratio to a
#     bare RS256 verification with the same library (cargo bench -p berth-identity --bench federation).
# Goals (issue 3): >= 5,000 exchanges/s on this 2-core machine; verify + match <= 2x bare.
#
# Usage: bench/federation.sh   (env: DURATION=5s CONNS=32 TOKENS=60000 ROBOTS=10000 PORT=15600)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK="$ROOT/bench/work/federation"
OUT="$ROOT/bench/FEDERATION.md"
DURATION=${DURATION:-5s}
CONNS=${CONNS:-32}
TOKENS=${TOKENS:-60000}
ROBOTS=${ROBOTS:-10000}
PORT=${PORT:-15600}
ISSUER=https://ci.bench.example
AUD=registry.bench.example
PW="bench-admin-$$"
log() { printf '[fed-bench %s] %s\n' "$(date +%T)" "$*" >&2; }

command -v wrk >/dev/null || { log "installing wrk"; sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd=sudo; $sudo_cmd apt-get install -y -q wrk >/dev/null; }
rm -rf "$WORK" && mkdir -p "$WORK"
log "building (release)"
(cd "$ROOT" && cargo build --release -q -p berth && cargo build --release -q -p berth-identity --example mint_tokens)
BERTH="$ROOT/target/release/berth"

log "minting $TOKENS RS256 tokens for $ROBOTS robots"
"$ROOT/target/release/examples/mint_tokens" "$WORK" "$ISSUER" "$AUD" "$ROBOTS" "$TOKENS"

BERTH_ADMIN_PASSWORD="$PW" BERTH_DATA_DIR="$WORK/data" BERTH_LOG_LEVEL=warn "$BERTH" serve --listen "127.0.0.1:$PORT" >"$WORK/berth.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break; sleep 0.1; done

log "applying the provider and $ROBOTS robots"
t0=$(date +%s.%N)
BERTH_SERVER="http://127.0.0.1:$PORT" BERTH_USERNAME=admin BERTH_PASSWORD="$PW" "$BERTH" apply -f "$WORK/berth.json" >/dev/null
t1=$(date +%s.%N)
APPLY_SECS=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')

RSS_LOADED=$(awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$PID/status")

# The first token, exchanged once by curl, checks the setup (and warms the snapshot).
first=$(head -1 "$WORK/tokens.txt")
code=$(curl -s -o "$WORK/first.json" -w '%{http_code}' -H "Authorization: Basic $first" "http://127.0.0.1:$PORT/service/token?service=berth&scope=repository:p/app:pull")
[ "$code" = 200 ] || { log "token exchange failed: HTTP $code $(cat "$WORK/first.json")"; exit 1; }

cat >"$WORK/tokens.lua" <<'LUA'
-- Each wrk thread walks its own slice of the token file, so no token is sent twice.
local counter = 0
local threads = {}
function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
  table.insert(threads, thread)
end
function init(args)
  tokens = {}
  for line in io.lines(os.getenv("TOKENS_FILE")) do tokens[#tokens + 1] = line end
  local n = tonumber(os.getenv("THREADS"))
  local per = math.floor(#tokens / n)
  first = (id - 1) * per + 2   -- line 1 was used by the warm-up
  last = id * per
  i = first
  sent = 0
end
function request()
  local t = tokens[i]
  i = i + 1
  if i > last then i = first end
  sent = sent + 1
  return wrk.format("GET", "/service/token?service=berth&scope=repository:p/app:pull", {["Authorization"] = "Basic " .. t})
end
function done(summary, latency, requests)
  io.write(string.format("non2xx=%d\n", summary.errors.status))
end
LUA

log "wrk: $CONNS connections for $DURATION, distinct tokens"
TOKENS_FILE="$WORK/tokens.txt" THREADS=2 wrk -t2 -c"$CONNS" -d"$DURATION" --latency -s "$WORK/tokens.lua" "http://127.0.0.1:$PORT/" >"$WORK/wrk.txt" 2>&1
RPS=$(awk '/Requests\/sec/ {print $2}' "$WORK/wrk.txt")
P99=$(awk '$1 == "99%" {print $2}' "$WORK/wrk.txt")
REQS=$(awk '/requests in/ {print $1}' "$WORK/wrk.txt")
NON2XX=$(awk -F= '/^non2xx=/ {print $2}' "$WORK/wrk.txt")
RSS=$(awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$PID/status")
kill $PID; wait $PID 2>/dev/null || true; trap - EXIT

log "in-process: cargo bench -p berth-identity --bench federation"
(cd "$ROOT" && cargo bench -q -p berth-identity --bench federation 2>/dev/null) >"$WORK/inproc.txt"
BARE=$(awk '/bare RS256/ {print $(NF-1)}' "$WORK/inproc.txt")
FULL=$(awk '/decode \+ verify/ {print $(NF-1)}' "$WORK/inproc.txt")
MATCH=$(awk '/of which matching/ {print $(NF-1)}' "$WORK/inproc.txt")
RATIO=$(awk '/ratio full/ {print $5}' "$WORK/inproc.txt")
verdict() { if awk -v a="$1" -v b="$2" "BEGIN { exit !(a $3 b) }"; then echo "**met**"; else echo "**not met**"; fi; }

cat >"$OUT" <<EOF2
# Federation benchmark

Generated by \`bench/federation.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'). Do not edit by hand; re-run the script.

- Machine: $(nproc) CPUs, $(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo | sed 's/^ *//'), load average at the end $(cut -d' ' -f1-3 /proc/loadavg); client (wrk) and server share the CPUs.
- Berth: commit \`$(git -C "$ROOT" rev-parse --short=12 HEAD)\`, release build; one identity provider (RS256, 2048-bit key, static JWKS), $ROBOTS federated robots (\`repository equals org/repo-<i>\` + \`ref glob refs/heads/*\`).

| Measurement | Figure | Goal | Verdict |
|---|---:|---:|---|
| Token exchanges over HTTP, distinct RS256 tokens, $CONNS connections (per s) | $RPS | >= 5,000 | $(verdict "$RPS" 5000 '>=') |
| p99 latency of an exchange | $P99 | | |
| Exchanges in the run / non-2xx answers | $REQS / ${NON2XX:-?} | 0 non-2xx | $(verdict "${NON2XX:-1}" 0 '==') |
| In-process: bare RS256 verification (aws-lc-rs) | $BARE µs | | |
| In-process: decode + verify + validate + match against $ROBOTS robots | $FULL µs | | |
| of which robot matching | $MATCH µs | | |
| Ratio full / bare | $RATIO | <= 2x | $(verdict "${RATIO%x}" 2 '<=') |
| Server RSS with $ROBOTS robots loaded, before the run | $RSS_LOADED MB | | |
| Server RSS after the run (verified-token cache full) | $RSS MB | | |
| \`berth apply\` of the provider and $ROBOTS robots | $APPLY_SECS s | | |

Every exchange verifies a token not seen before ($REQS requests, $(($TOKENS - 1)) distinct tokens), so the
verified-token cache never answers; each answer is a freshly signed ES256 registry token.
EOF2
cat "$OUT"
