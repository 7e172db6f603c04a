#!/usr/bin/env bash
# scripts/fuzz.sh: runs Berth's cargo-fuzz targets (fuzz/, its own Cargo workspace).
#
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
#   SECONDS  how long to fuzz each target (libFuzzer -max_total_time), default 60
#   TARGET   which targets to run, default all of them:
#              reference  RepoName / Tag / Reference / Digest parsing (FromStr, Display round trip)
#              manifest   berth_oci::manifest::parse(bytes, content_type)
#              scope      berth_access::parse_scope, then intersect / token checks
#              apply      apply documents (YAML and JSON) through the admin API's validation
#              token_query  the token endpoint's query parsing (scope cap, grammar), then intersect
#
# What it does:
#   - installs cargo-fuzz if missing (`cargo install cargo-fuzz --locked`);
#   - builds with RUSTC_BOOTSTRAP=1, so a stable toolchain serves (cargo-fuzz needs nightly
#     flags), with debug assertions and AddressSanitizer; if the ASan build fails it falls back
#     to `--sanitizer none` (force one with FUZZ_SANITIZER=address|none);
#   - copies the committed seeds fuzz/seeds/<target>/ into the working corpus fuzz/corpus/<target>/
#     (gitignored, grows across runs), then fuzzes each target for SECONDS;
#   - prints runs and executions/s per target. Logs: fuzz/target/fuzz-logs/<target>.log.
#
# Exit status: 0 if no target failed; 1 if any target crashed (panic, failed invariant,
# sanitizer report, timeout, out of memory). For each crash it prints the crashing input's path
# (fuzz/artifacts/<target>/crash-*) and how to replay it. Extra libFuzzer flags can be given in
# FUZZ_ARGS, e.g. FUZZ_ARGS="-jobs=2 -workers=2".
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FUZZ="$ROOT/fuzz"
ALL_TARGETS=(reference manifest scope apply token_query)

SECONDS_PER_TARGET="${1:-60}"
[[ "$SECONDS_PER_TARGET" =~ ^[0-9]+$ ]] || { echo "usage: $0 [SECONDS] [TARGET...]" >&2; exit 2; }
shift || true
TARGETS=("$@")
[ "${#TARGETS[@]}" -gt 0 ] || TARGETS=("${ALL_TARGETS[@]}")

log() { printf '==> %s\n' "$*"; }

if ! cargo fuzz --version >/dev/null 2>&1; then
    log "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

# cargo-fuzz passes -Z flags (sanitizers, sancov) that need a nightly compiler; RUSTC_BOOTSTRAP
# lets the stable one accept them.
export RUSTC_BOOTSTRAP=1
cd "$FUZZ"

BUILD_FLAGS=(--release --debug-assertions)
SANITIZER="${FUZZ_SANITIZER:-}"
if [ -z "$SANITIZER" ]; then
    log "building the fuzz targets (AddressSanitizer)"
    if cargo fuzz build "${BUILD_FLAGS[@]}" --sanitizer address; then
        SANITIZER=address
    else
        log "the AddressSanitizer build failed; falling back to --sanitizer none"
        SANITIZER=none
    fi
fi
BUILD_FLAGS+=(--sanitizer "$SANITIZER")
log "building the fuzz targets (sanitizer: $SANITIZER)"
cargo fuzz build "${BUILD_FLAGS[@]}"

mkdir -p "$FUZZ/target/fuzz-logs"
declare -a SUMMARY=()
FAILED=0
for t in "${TARGETS[@]}"; do
    [ -f "$FUZZ/fuzz_targets/$t.rs" ] || { echo "error: no fuzz target $t (have: ${ALL_TARGETS[*]})" >&2; exit 2; }
    corpus="$FUZZ/corpus/$t"
    artifacts="$FUZZ/artifacts/$t"
    logf="$FUZZ/target/fuzz-logs/$t.log"
    mkdir -p "$corpus" "$artifacts"
    if [ -d "$FUZZ/seeds/$t" ]; then
        cp -n "$FUZZ/seeds/$t"/* "$corpus"/ 2>/dev/null || true
    fi
    before="$(ls -1 "$artifacts")"
    log "fuzzing $t for ${SECONDS_PER_TARGET}s (corpus: fuzz/corpus/$t, $(ls -1 "$corpus" | wc -l) inputs)"
    status=0
    # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
    cargo fuzz run "${BUILD_FLAGS[@]}" "$t" "$corpus" -- \
        -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -print_final_stats=1 ${FUZZ_ARGS:-} >"$logf" 2>&1 || status=$?
    runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$logf" | tail -1 | grep -o '[0-9]*$' || true)"
    eps="$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$logf" | tail -1 | grep -o '[0-9]*$' || true)"
    cov="$(grep -oE '#[0-9]+.*cov: [0-9]+' "$logf" | tail -1 | grep -oE 'cov: [0-9]+' || true)"
    if [ "$status" -eq 0 ]; then
        SUMMARY+=("$t: ok, ${runs:-?} runs, ${eps:-?} exec/s, ${cov:-cov: ?}, corpus $(ls -1 "$corpus" | wc -l)")
        log "$t: ok"
    else
        FAILED=1
        SUMMARY+=("$t: FAILED (exit $status), ${runs:-?} runs; log: $logf")
        echo "---- $t failed (exit $status); end of its log ($logf):" >&2
        tail -n 40 "$logf" >&2
        new="$(comm -13 <(printf '%s\n' "$before" | sort) <(ls -1 "$artifacts" | sort) || true)"
        if [ -n "$new" ]; then
            while IFS= read -r f; do
                [ -n "$f" ] || continue
                echo "CRASHING INPUT: $artifacts/$f" >&2
                echo "  replay: (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run ${BUILD_FLAGS[*]} $t artifacts/$t/$f)" >&2
                echo "  print:  (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz fmt $t artifacts/$t/$f)" >&2
            done <<<"$new"
        else
            echo "no new crashing input in $artifacts (a build or setup failure?)" >&2
        fi
    fi
done

log "summary (${SECONDS_PER_TARGET}s per target, sanitizer $SANITIZER)"
printf '    %s\n' "${SUMMARY[@]}"
exit "$FAILED"
