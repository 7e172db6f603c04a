#!/usr/bin/env bash
# scripts/abuse.sh: replays the resource-exhaustion attacks of issue 8 against the real binary on
# 127.0.0.1, with bounded counts, and prints for each attack the peak RSS, open descriptors and the
# latency of normal requests (GET /healthz and an authenticated GET /v2/) while it runs.
#
#   ./scripts/abuse.sh            # builds `berth` (release) and runs every attack (~2 minutes)
#   ./scripts/abuse.sh logins     # only the named attacks (see scripts/abuse.py --help)
#
# It needs python3 (standard library only) and raises its own descriptor limit. Results are
# printed as a Markdown table; docs/operations.md ("Limits, measured") keeps the last run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
cargo build --release --locked -p berth >&2
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec python3 "$ROOT/scripts/abuse.py" --berth "$ROOT/target/release/berth" "$@"
