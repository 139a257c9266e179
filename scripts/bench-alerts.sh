#!/usr/bin/env bash
# Alert engine benchmark (docs/BENCHMARKS.md): with SERIES active series in the engine and writers storing samples
# through Store::store_batch as fast as it takes them, the latency from a batch's commit to the commit of the
# alert_events rows it causes (p50/p90/p99/max), plus the engine's in-memory evaluation rate.
#
# Usage: scripts/bench-alerts.sh [SERIES] [SECONDS]   (defaults 1,000,000 and 60)
# Environment: WRITERS (default 2), BATCH (default 50000), QUEUE (store -> engine queue capacity in samples,
# default 100000 as in production), OCTOISP_TEST_PG (admin URL of the PostgreSQL to create
# the benchmark database in; default postgres://postgres@127.0.0.1:5432/postgres), CARGO_TARGET_DIR,
# BENCH_NO_BUILD=1 to use the example already built, NOTIFY=0 to leave the notifier out.
#
# By default the real notifier (default [notify] settings) also runs, to a webhook receiver in the same process,
# and the run prints the latency from a batch's commit to the webhook request carrying each event it caused:
# sample arrival to notification, end to end.
set -euo pipefail
cd "$(dirname "$0")/.."

SERIES=${1:-1000000}
SECONDS_LOAD=${2:-60}
WRITERS=${WRITERS:-2}
BATCH=${BATCH:-50000}
export OCTOISP_TEST_PG=${OCTOISP_TEST_PG:-postgres://postgres@127.0.0.1:5432/postgres}

echo "== machine: $(nproc) cores, $(awk '/MemTotal/ {print int($2/1024)" MiB"}' /proc/meminfo), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -z "${BENCH_NO_BUILD:-}" ]; then
    cargo build --release -p octoisp-controlplane --example alert_bench
fi
BIN="${CARGO_TARGET_DIR:-target}/release/examples/alert_bench"
/usr/bin/time -v "$BIN" --series "$SERIES" --seconds "$SECONDS_LOAD" --writers "$WRITERS" --batch "$BATCH" \
    --queue-samples "${QUEUE:-100000}" $([ "${NOTIFY:-1}" = 0 ] || echo --notify) \
    2> >(grep -E "Maximum resident|Elapsed" >&2)
