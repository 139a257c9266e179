#!/usr/bin/env bash
# Benchmark of the agent's TR-069 ACS: complete CWMP sessions per second with thousands of concurrent simulated
# CPEs on loopback, a boot storm, and memory with many registered devices.
#
#   scripts/bench-acs.sh                       # defaults below
#   DEVICES=5000 CONCURRENCY=2000 scripts/bench-acs.sh
#
# Environment:
#   DEVICES        distinct CPEs of the light and mixed runs (default 5000)
#   CONCURRENCY    CPEs in a session at once (default 2000)
#   LIGHT          sessions of the light run (default 50000)
#   MIXED          sessions of the mixed run (default 20000)
#   BOOT_DEVICES   devices of the boot storm (default 100000)
#   INPROCESS      1 (default): the in-process runs; 0: skip them
#   SEPARATE       1 (default): also run the light sessions and the boot storm against the release daemon in a
#                  process of its own, and report the daemon's peak RSS (VmHWM); 0: in-process runs only
#
# What runs: `agent/examples/cpe_sim.rs` (release build). It starts the ACS in-process (store and outbox in a
# temporary directory, outbox synchronous=NORMAL) on 127.0.0.1 port 0 and drives it with simulated CPEs
# (agent/tests/acs_support/cpe.rs), each session on a new TCP connection as CPEs do:
#   light: Inform with 30 parameters -> InformResponse -> empty POST -> 204 (device row and parameters persisted)
#   mixed: the same plus one GetParameterValues of 32 parameters and one SetParameterValues, queued as tasks
#          before each session (the task inserts are part of the measured work)
#   boot:  every device once with 0 BOOTSTRAP + 1 BOOT: registration, 30 parameters stored, 4 outbox records
#          each (2 events, inventory, parameters); the run checks that none is missing
# In-process, the simulator shares the two cores and the allocator with the ACS, so those figures are a floor.
# Separate process: `octoisp-agent -c CONFIG run --acs-listen 127.0.0.1:PORT` (release; state and outbox in a
# temporary directory, outbox synchronous=normal, standalone: no control plane) driven by `cpe_sim --acs`: the
# light run (after registering DEVICES devices) and the boot storm of BOOT_DEVICES devices, then the daemon's
# VmHWM (peak RSS) and its registered device count (`octoisp-agent acs devices --json`). GenieACS, the usual peer, is not
# packaged for Debian (Node.js + MongoDB), so no side-by-side run is made here.
set -euo pipefail
cd "$(dirname "$0")/.."

DEVICES=${DEVICES:-5000}
CONCURRENCY=${CONCURRENCY:-2000}
LIGHT=${LIGHT:-50000}
MIXED=${MIXED:-20000}
BOOT_DEVICES=${BOOT_DEVICES:-100000}
SEPARATE=${SEPARATE:-1}
INPROCESS=${INPROCESS:-1}

cargo build --release -p octoisp-agent --example cpe_sim --bin octoisp-agent >&2
TARGET=${CARGO_TARGET_DIR:-target}
SIM="$TARGET/release/examples/cpe_sim"
AGENT="$TARGET/release/octoisp-agent"

echo "commit $(git rev-parse --short HEAD), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
if [ "$INPROCESS" = 1 ]; then
"$SIM" --mode light --devices "$DEVICES" --concurrency "$CONCURRENCY" --sessions "$LIGHT"
"$SIM" --mode mixed --devices "$DEVICES" --concurrency "$CONCURRENCY" --sessions "$MIXED"
"$SIM" --mode boot --devices "$BOOT_DEVICES" --concurrency "$CONCURRENCY"
fi

[ "$SEPARATE" = 1 ] || exit 0

# The daemon in a process of its own: one for the light run, a fresh one for the boot storm (its peak RSS is the
# memory figure with BOOT_DEVICES registered devices).
separate() { # mode devices sessions
    local dir port pid
    dir=$(mktemp -d)
    # Below the ephemeral range (32768-60999): a port a client of the previous run still holds in TIME_WAIT
    # cannot be bound.
    port=$((20000 + RANDOM % 12000))
    printf 'state_dir = "%s/state"\n[outbox]\nsynchronous = "normal"\n[log]\nlevel = "warn"\n' "$dir" > "$dir/agent.toml"
    "$AGENT" --config "$dir/agent.toml" run --acs-listen "127.0.0.1:$port" > "$dir/agent.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.1
    done
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "the agent did not start:" >&2
        cat "$dir/agent.log" >&2
        exit 1
    fi
    echo "separate process: agent pid $pid, RSS at start $(awk '/VmRSS/ {print $2}' "/proc/$pid/status") kB, load $(cut -d' ' -f1-3 /proc/loadavg)"
    "$SIM" --acs "127.0.0.1:$port" --mode "$1" --devices "$2" --concurrency "$CONCURRENCY" --sessions "$3"
    echo "agent: VmRSS $(awk '/VmRSS/ {print $2}' "/proc/$pid/status") kB, VmHWM (peak) $(awk '/VmHWM/ {print $2}' "/proc/$pid/status") kB, devices $("$AGENT" --config "$dir/agent.toml" acs devices --json | grep -o '"id"' | wc -l), load $(cut -d' ' -f1-3 /proc/loadavg)"
    kill "$pid"
    wait "$pid" || true
    rm -rf "$dir"
}
separate light "$DEVICES" "$LIGHT"
separate boot "$BOOT_DEVICES" "$BOOT_DEVICES"
