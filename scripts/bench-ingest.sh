#!/usr/bin/env bash
# End-to-end ingest benchmark (docs/BENCHMARKS.md): N synthetic samples are produced into an agent's outbox while
# the control plane is down; then the control plane starts and we time the drain until all N rows are committed
# in PostgreSQL. In the same run, PostgreSQL's own `COPY ... FROM file (FORMAT binary)` of the very same rows into
# the same (emptied) table is timed: that is the ceiling the pipeline is reported against.
#
# Usage: scripts/bench-ingest.sh [N]   (default 2,000,000; the issue's backlog figure is 10,000,000)
# Environment: SERIES (default 10000), BENCH_DIR (default /var/tmp/octoisp-bench), CARGO_TARGET_DIR,
# BENCH_NO_BUILD=1 to use the release binaries already built.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

N=${1:-2000000}
SERIES=${SERIES:-10000}
DIR=${BENCH_DIR:-/var/tmp/octoisp-bench}
PG_PORT=56432; QUIC_PORT=56443
ensure_pg_packages
cleanup() { kill ${AGPID:-} ${CPPID:-} 2>/dev/null || true; }
trap cleanup EXIT
stop_private_pg "$DIR/pg"
rm -rf "$DIR"; mkdir -p "$DIR"
[ "$(id -u)" = 0 ] && chmod 755 "$DIR"
start_private_pg "$DIR/pg" "$PG_PORT"
ADMIN="postgres://postgres@127.0.0.1:$PG_PORT/octoisp"
psql "postgres://postgres@127.0.0.1:$PG_PORT/postgres" -Xqc "create database octoisp"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$(default_target_dir)}"
if [ -z "${BENCH_NO_BUILD:-}" ]; then say "building release binaries"; cargo build --release --locked --bins; fi
CP="$CARGO_TARGET_DIR/release/octoisp-controlplane"; AGENT="$CARGO_TARGET_DIR/release/octoisp-agent"

cat >"$DIR/cp.toml" <<TOML
data_dir = "$DIR/cp"
[database]
url = "postgres://octoisp_app@127.0.0.1:$PG_PORT/octoisp"
admin_url = "$ADMIN"
[ingest]
listen = "127.0.0.1:$QUIC_PORT"
[http]
listen = "127.0.0.1:56080"
[log]
level = "warn"
TOML
cat >"$DIR/agent.toml" <<TOML
state_dir = "$DIR/agent"
[uplink]
server = "127.0.0.1:$QUIC_PORT"
[metrics]
listen = "127.0.0.1:56464"
[log]
level = "warn"
[[monitors.generator]]
name = "bench"
series = $SERIES
interval_ms = 10
total = $N
TOML
export OCTOISP_CP_CONFIG="$DIR/cp.toml" OCTOISP_AGENT_CONFIG="$DIR/agent.toml"
"$CP" migrate >/dev/null
"$CP" provider create --slug bench --name Bench >/dev/null
"$CP" pop create --provider bench --slug pop --name Pop >/dev/null
"$CP" serve --roles ingest >"$DIR/cp.log" 2>&1 & CPPID=$!
sleep 1
"$AGENT" enroll --server "127.0.0.1:$QUIC_PORT" --token "$("$CP" pop enroll-token --provider bench --pop pop)" >/dev/null
kill $CPPID; wait $CPPID || true

say "filling the outbox with $N samples ($SERIES series) while the control plane is down"
t0=$(date +%s.%N)
"$AGENT" run >"$DIR/agent.log" 2>&1 & AGPID=$!
while :; do
    s=$("$AGENT" status 2>/dev/null | sed -n 's/^outbox: [0-9]* chunks, \([0-9]*\) samples.*/\1/p' || true)
    [ "${s:-0}" -ge "$N" ] && break
    kill -0 $AGPID 2>/dev/null || die "agent died; see $DIR/agent.log"
    sleep 0.5
done
t1=$(date +%s.%N)
kill $AGPID; wait $AGPID || true
OUTBOX_BYTES=$(stat -c %s "$DIR/agent/outbox.db")

say "draining: control plane and agent up, timing until $N rows are committed"
"$CP" serve --roles ingest >>"$DIR/cp.log" 2>&1 & CPPID=$!
sleep 1
t2=$(date +%s.%N)
"$AGENT" run >>"$DIR/agent.log" 2>&1 & AGPID=$!
while :; do
    c=$(psql "$ADMIN" -XtAc "select count(*) from samples" 2>/dev/null || echo 0)
    [ "$c" -ge "$N" ] && break
    sleep 0.1
done
t3=$(date +%s.%N)
WIRE=$(curl -fs http://127.0.0.1:56080/metrics | sed -n 's/^octoisp_ingest_bytes_received_total \([0-9.e+]*\)$/\1/p' | head -1)
kill $AGPID $CPPID; wait $AGPID $CPPID 2>/dev/null || true

say "ceiling: PostgreSQL's own binary COPY of the same rows into the same table"
DUMP="$DIR/pg/samples.copy"
psql "$ADMIN" -Xqc "copy (select * from samples) to '$DUMP' (format binary)"
psql "$ADMIN" -Xqc "truncate samples"
COPY_MS=$(psql "$ADMIN" -X -c "set app.global_admin = 'on'" -c '\timing on' -c "copy samples from '$DUMP' (format binary)" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p')

python3 - "$N" "$t0" "$t1" "$t2" "$t3" "$COPY_MS" "${WIRE:-0}" "$OUTBOX_BYTES" <<'PY'
import sys
n, t0, t1, t2, t3, copy_ms, wire, outbox = sys.argv[1:]
n = int(n); fill = float(t1) - float(t0); drain = float(t3) - float(t2); copy = float(copy_ms) / 1000
wire = float(wire); outbox = int(outbox)
print(f"samples                 {n:>12,}")
print(f"fill (producer→outbox)  {fill:8.1f} s  {n / fill:>12,.0f} samples/s  outbox file {outbox / n:.2f} B/sample")
print(f"drain (outbox→PG rows)  {drain:8.1f} s  {n / drain:>12,.0f} samples/s")
print(f"PostgreSQL binary COPY  {copy:8.1f} s  {n / copy:>12,.0f} samples/s")
print(f"pipeline / COPY         {copy / drain * 100:8.1f} %")
if wire:
    print(f"wire bytes per sample   {wire / n:8.2f} B (frames, this synthetic load)")
PY
stop_private_pg "$DIR/pg"
