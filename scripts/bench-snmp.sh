#!/usr/bin/env bash
# SNMP benchmark: the agent's poller and Prometheus snmp_exporter doing the same work, side by side, against the
# agent's simulator of many devices on loopback (one UDP port per device on 127.0.0.1).
#
# Work per device poll: system group (sysUpTime), IF-MIB for 8 interfaces (64-bit octets, errors, discards,
# oper/admin status, speed, with ifName/ifDescr/ifAlias labels), HOST-RESOURCES CPU (hrProcessorLoad) and storage.
#
# Usage: scripts/bench-snmp.sh [DEVICES] [SECONDS] [SCALE_DEVICES]
#   DEVICES        devices for the throughput phase (default 1000)
#   SECONDS        length of each throughput run (default 30)
#   SCALE_DEVICES  devices for the scale phase, polled every 60 s for 70 s (default 20000; 0 skips it)
# Needs: a release build (cargo build --release -p octoisp-agent), prometheus-snmp-exporter, python3, curl.
set -euo pipefail

N=${1:-1000}
DUR=${2:-30}
SCALE=${3:-20000}
BASE=${BASE_PORT:-31000}
SCALE_BASE=${SCALE_BASE_PORT:-10000}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN=${BIN:-$TARGET_DIR/release/octoisp-agent}
EXPORTER=${EXPORTER:-prometheus-snmp-exporter}
EXPORTER_PORT=${EXPORTER_PORT:-$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")}
CONCURRENCY=${CONCURRENCY:-64}

[ -x "$BIN" ] || { echo "build first: cargo build --release -p octoisp-agent (or set BIN)" >&2; exit 1; }
command -v "$EXPORTER" >/dev/null || { echo "install prometheus-snmp-exporter" >&2; exit 1; }
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT

cpu_of() { awk '{print ($14 + $15) / 100}' "/proc/$1/stat"; }
rss_mib() { awk '/VmRSS/ {print $2 / 1024}' "/proc/$1/status"; }

echo "== machine: $(nproc) cores, $(awk '/MemTotal/ {print int($2/1024)" MiB"}' /proc/meminfo), $(uname -r)"
echo "== commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
"$BIN" snmp simulate --base-port "$BASE" --count "$N" --interfaces 8 2>"$TMP/sim.log" &
SIM=$!; PIDS+=("$SIM")
sleep 2

echo "== octoisp poller: $N devices, interval 1 s (as fast as it goes), ${DUR} s"
SIM_CPU0=$(cpu_of "$SIM")
"$BIN" snmp bench --base-port "$BASE" --count "$N" --interval-secs 1 --duration-secs "$DUR" | tee "$TMP/ours.json"
SIM_CPU1=$(cpu_of "$SIM")
echo "   simulator CPU during the run: $(echo "$SIM_CPU1 - $SIM_CPU0" | bc) s"

cat > "$TMP/snmp.yml" <<'YAML'
bench:
  version: 2
  auth:
    community: public
  max_repetitions: 25
  retries: 1
  timeout: 2s
  get:
  - 1.3.6.1.2.1.1.3.0
  walk:
  - 1.3.6.1.2.1.2.2.1.2
  - 1.3.6.1.2.1.2.2.1.7
  - 1.3.6.1.2.1.2.2.1.8
  - 1.3.6.1.2.1.2.2.1.13
  - 1.3.6.1.2.1.2.2.1.14
  - 1.3.6.1.2.1.2.2.1.19
  - 1.3.6.1.2.1.2.2.1.20
  - 1.3.6.1.2.1.31.1.1.1.1
  - 1.3.6.1.2.1.31.1.1.1.6
  - 1.3.6.1.2.1.31.1.1.1.10
  - 1.3.6.1.2.1.31.1.1.1.15
  - 1.3.6.1.2.1.31.1.1.1.18
  - 1.3.6.1.2.1.25.3.3.1.2
  - 1.3.6.1.2.1.25.2.3.1.3
  - 1.3.6.1.2.1.25.2.3.1.4
  - 1.3.6.1.2.1.25.2.3.1.5
  - 1.3.6.1.2.1.25.2.3.1.6
  metrics:
  - {name: sysUpTime, oid: 1.3.6.1.2.1.1.3, type: gauge}
YAML
for col in "ifAdminStatus 1.3.6.1.2.1.2.2.1.7 gauge" "ifOperStatus 1.3.6.1.2.1.2.2.1.8 gauge" \
  "ifInDiscards 1.3.6.1.2.1.2.2.1.13 counter" "ifInErrors 1.3.6.1.2.1.2.2.1.14 counter" \
  "ifOutDiscards 1.3.6.1.2.1.2.2.1.19 counter" "ifOutErrors 1.3.6.1.2.1.2.2.1.20 counter" \
  "ifHCInOctets 1.3.6.1.2.1.31.1.1.1.6 counter" "ifHCOutOctets 1.3.6.1.2.1.31.1.1.1.10 counter" \
  "ifHighSpeed 1.3.6.1.2.1.31.1.1.1.15 gauge"; do
  set -- $col
  cat >> "$TMP/snmp.yml" <<YAML
  - name: $1
    oid: $2
    type: $3
    indexes: [{labelname: ifIndex, type: gauge}]
    lookups:
    - {labels: [ifIndex], labelname: ifName, oid: 1.3.6.1.2.1.31.1.1.1.1, type: DisplayString}
    - {labels: [ifIndex], labelname: ifDescr, oid: 1.3.6.1.2.1.2.2.1.2, type: DisplayString}
    - {labels: [ifIndex], labelname: ifAlias, oid: 1.3.6.1.2.1.31.1.1.1.18, type: DisplayString}
YAML
done
cat >> "$TMP/snmp.yml" <<'YAML'
  - name: hrProcessorLoad
    oid: 1.3.6.1.2.1.25.3.3.1.2
    type: gauge
    indexes: [{labelname: hrDeviceIndex, type: gauge}]
  - name: hrStorageAllocationUnits
    oid: 1.3.6.1.2.1.25.2.3.1.4
    type: gauge
    indexes: [{labelname: hrStorageIndex, type: gauge}]
    lookups: [{labels: [hrStorageIndex], labelname: hrStorageDescr, oid: 1.3.6.1.2.1.25.2.3.1.3, type: DisplayString}]
  - name: hrStorageSize
    oid: 1.3.6.1.2.1.25.2.3.1.5
    type: gauge
    indexes: [{labelname: hrStorageIndex, type: gauge}]
    lookups: [{labels: [hrStorageIndex], labelname: hrStorageDescr, oid: 1.3.6.1.2.1.25.2.3.1.3, type: DisplayString}]
  - name: hrStorageUsed
    oid: 1.3.6.1.2.1.25.2.3.1.6
    type: gauge
    indexes: [{labelname: hrStorageIndex, type: gauge}]
    lookups: [{labels: [hrStorageIndex], labelname: hrStorageDescr, oid: 1.3.6.1.2.1.25.2.3.1.3, type: DisplayString}]
YAML

echo "== snmp_exporter $("$EXPORTER" --version 2>&1 | head -1 | awk '{print $3}'): same devices, $CONCURRENCY scrapes at once, ${DUR} s"
"$EXPORTER" --config.file="$TMP/snmp.yml" --web.listen-address="127.0.0.1:$EXPORTER_PORT" 2>"$TMP/exporter.log" &
EXP=$!; PIDS+=("$EXP")
sleep 1
curl -sf "http://127.0.0.1:$EXPORTER_PORT/snmp?module=bench&target=127.0.0.1:$BASE" | grep -q '^ifHCInOctets{' \
  || { echo "snmp_exporter does not scrape the simulator:"; cat "$TMP/exporter.log"; exit 1; }
EXP_CPU0=$(cpu_of "$EXP")
python3 - "$EXPORTER_PORT" "$BASE" "$N" "$DUR" "$CONCURRENCY" > "$TMP/theirs.txt" <<'PY'
import sys, threading, time, urllib.request
port, base, n, dur, conc = (int(a) for a in sys.argv[1:])
done = [0, 0]
lock = threading.Lock()
end = time.time() + dur
def worker(k):
    i = k
    while time.time() < end:
        url = f"http://127.0.0.1:{port}/snmp?module=bench&target=127.0.0.1:{base + i % n}"
        try:
            body = urllib.request.urlopen(url, timeout=30).read()
            ok = b"\nifHCInOctets{" in body
        except Exception:
            ok = False
        with lock:
            done[0 if ok else 1] += 1
        i += conc
ts = [threading.Thread(target=worker, args=(k,)) for k in range(conc)]
start = time.time()
[t.start() for t in ts]
[t.join() for t in ts]
print(done[0], done[1], time.time() - start)
PY
EXP_CPU1=$(cpu_of "$EXP")
read -r OK BAD WALL < "$TMP/theirs.txt"
EXP_CPU=$(echo "$EXP_CPU1 - $EXP_CPU0" | bc)
python3 - "$OK" "$BAD" "$WALL" "$EXP_CPU" "$(rss_mib "$EXP")" "$TMP/ours.json" <<'PY'
import json, sys
ok, bad, wall, cpu, rss = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
ours = json.load(open(sys.argv[6]))
theirs_eff = ok / cpu if cpu else 0
print(json.dumps({"snmp_exporter": {"polls": ok, "errors": bad, "polls_per_sec": round(ok / wall, 1),
      "cpu_secs": round(cpu, 2), "polls_per_cpu_sec": round(theirs_eff, 1), "rss_mib": round(rss, 1)}}))
print(f"== polls per CPU-second: octoisp {ours['polls_per_cpu_sec']:.0f}, snmp_exporter {theirs_eff:.0f}, "
      f"ratio {ours['polls_per_cpu_sec'] / theirs_eff if theirs_eff else float('inf'):.1f}x")
PY
kill "$EXP" 2>/dev/null || true

if [ "$SCALE" -gt 0 ]; then
  echo "== scale: $SCALE devices every 60 s for 70 s (one core = 1.0 cpu_cores_used)"
  # One socket per simulated device: at most 10000 per simulator process (the open-files limit here is 20000).
  for ((start = 0; start < SCALE; start += 10000)); do
    count=$(( SCALE - start < 10000 ? SCALE - start : 10000 ))
    "$BIN" snmp simulate --base-port $(( SCALE_BASE + start )) --count "$count" --interfaces 8 2>>"$TMP/sim2.log" &
    PIDS+=("$!")
  done
  sleep $(( SCALE / 2000 + 2 ))
  "$BIN" snmp bench --base-port "$SCALE_BASE" --count "$SCALE" --interval-secs 60 --duration-secs 70
fi
