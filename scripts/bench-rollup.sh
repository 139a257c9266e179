#!/usr/bin/env bash
# Rollup benchmark (docs/BENCHMARKS.md): SERIES series x MINUTES one-minute samples of yesterday are loaded with
# binary COPY into a private PostgreSQL, then one pass of the real rollup job is timed (samples/s); then a year of
# one interface is loaded with its rollups and graph requests of 30 days and 1 year are timed through the real API
# router, next to the same daily graph computed from the raw samples. See controlplane/examples/rollup_bench.rs.
#
# Usage: scripts/bench-rollup.sh [SERIES] [MINUTES]   (default 10000 x 1440)
# Environment: BENCH_DIR (default /var/tmp/octoisp-bench-rollup), CARGO_TARGET_DIR, PROFILE (release, the
# default, or dev: the figures are PostgreSQL's work either way, the client only sends statements and JSON).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

SERIES=${1:-10000}
MINUTES=${2:-1440}
DIR=${BENCH_DIR:-/var/tmp/octoisp-bench-rollup}
PG_PORT=56532
ensure_pg_packages
stop_private_pg "$DIR/pg"
rm -rf "$DIR"; mkdir -p "$DIR"
[ "$(id -u)" = 0 ] && chmod 755 "$DIR"
start_private_pg "$DIR/pg" "$PG_PORT" -c shared_buffers=512MB -c max_wal_size=4GB
trap 'stop_private_pg "$DIR/pg"' EXIT
psql "postgres://postgres@127.0.0.1:$PG_PORT/postgres" -Xqc "create database octoisp"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$(default_target_dir)}"
PROFILE=${PROFILE:-release}
say "building the benchmark ($PROFILE)"
cargo build --profile "$PROFILE" --locked -p octoisp-controlplane --example rollup_bench
OUT=$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")
say "commit $(git rev-parse --short HEAD), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
"$CARGO_TARGET_DIR/$OUT/examples/rollup_bench" \
    "postgres://postgres@127.0.0.1:$PG_PORT/octoisp" "postgres://octoisp_app@127.0.0.1:$PG_PORT/octoisp" \
    "$SERIES" "$MINUTES"
