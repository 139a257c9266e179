#!/usr/bin/env bash
# Command queue benchmark (docs/BENCHMARKS.md, "Command queue"): throughput of enqueue -> reserve -> complete with
# WORKERS workers, and a small tenant's p99 queue wait (leased_ms - ready_ms) while a large tenant floods FLOOD jobs.
# Side by side, in the same run: redis-benchmark's raw LPUSH/RPOP rate on the same Redis (a reference point:
# one plain command per operation, no scripts, no fairness), PEER_N operations each (default 50,000).
#
# Usage: scripts/bench-queue.sh [JOBS] [FLOOD]   (defaults 200,000 and 100,000)
# Environment: WORKERS (default 4), BATCH (leases per reserve, default 100), OCTOISP_TEST_REDIS (default
# redis://127.0.0.1:6379), CARGO_TARGET_DIR, BENCH_NO_BUILD=1 to use the example already built.
# Keys go under a random bench:queue:* prefix and are deleted at the end; nothing else in Redis is touched.
set -euo pipefail
cd "$(dirname "$0")/.."

JOBS=${1:-200000}
FLOOD=${2:-100000}
WORKERS=${WORKERS:-4}
BATCH=${BATCH:-100}
PEER_N=${PEER_N:-50000}
REDIS=${OCTOISP_TEST_REDIS:-redis://127.0.0.1:6379}

echo "== machine: $(nproc) cores, $(awk '/MemTotal/ {print int($2/1024)" MiB"}' /proc/meminfo), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "== redis: $(redis-server --version | awk '{print $3}'), appendonly $(redis-cli -u "$REDIS" config get appendonly | tail -1), appendfsync $(redis-cli -u "$REDIS" config get appendfsync | tail -1)"
if [ -z "${BENCH_NO_BUILD:-}" ]; then
    cargo build --release -p octoisp-controlplane --example queue_bench
fi
BIN="${CARGO_TARGET_DIR:-target}/release/examples/queue_bench"

echo "== peer: redis-benchmark LPUSH/RPOP, 1 and 4 clients, pipelining off (one round trip per operation)"
HOSTPORT=${REDIS#redis://}
HOST=${HOSTPORT%%:*}
PORT=${HOSTPORT##*:}
PORT=${PORT%%/*}
PEER_KEY="bench:queue:peer:$$"
for c in 1 4; do
    echo "-- $c client(s):"
    redis-benchmark -h "$HOST" -p "$PORT" -c "$c" -n "$PEER_N" -q LPUSH "$PEER_KEY" '{"kind":"ping"}' | tr '\r' '\n' | tail -1
    redis-benchmark -h "$HOST" -p "$PORT" -c "$c" -n "$PEER_N" -q RPOP "$PEER_KEY" | tr '\r' '\n' | tail -1
done
redis-cli -h "$HOST" -p "$PORT" DEL "$PEER_KEY" >/dev/null

echo "== queue_bench"
/usr/bin/time -v "$BIN" --redis "$REDIS" --jobs "$JOBS" --flood "$FLOOD" --workers "$WORKERS" --batch "$BATCH" \
    2> >(grep -E "Maximum resident|Elapsed" >&2)
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg)"
