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
#
# What runs: `agent/examples/cpe_sim.rs` (release build). It starts the ACS in-process (store and outbox in a
# temporary directory, outbox synchronous=NORMAL) on 127.0.0.1 port 0 and drives it with simulated CPEs
# (agent/tests/acs_support/cpe.rs), each session on a new TCP connection as CPEs do:
#   light: Inform with 30 parameters -> InformResponse -> empty POST -> 204 (device row and parameters persisted)
#   mixed: the same plus one GetParameterValues of 32 parameters and one SetParameterValues, queued as tasks
#          before each session (the task inserts are part of the measured work)
#   boot:  every device once with 0 BOOTSTRAP + 1 BOOT: registration, 30 parameters stored, 4 outbox records
#          each (2 events, inventory, parameters); the run checks that none is missing
# The simulator shares the two cores with the ACS, so the figures are a floor. GenieACS, the usual peer, is not
# packaged for Debian (Node.js + MongoDB), so no side-by-side run is made here.
set -euo pipefail
cd "$(dirname "$0")/.."

DEVICES=${DEVICES:-5000}
CONCURRENCY=${CONCURRENCY:-2000}
LIGHT=${LIGHT:-50000}
MIXED=${MIXED:-20000}
BOOT_DEVICES=${BOOT_DEVICES:-100000}

cargo build --release -p octoisp-agent --example cpe_sim >&2
TARGET=${CARGO_TARGET_DIR:-target}
SIM="$TARGET/release/examples/cpe_sim"

echo "commit $(git rev-parse --short HEAD), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
"$SIM" --mode light --devices "$DEVICES" --concurrency "$CONCURRENCY" --sessions "$LIGHT"
"$SIM" --mode mixed --devices "$DEVICES" --concurrency "$CONCURRENCY" --sessions "$MIXED"
"$SIM" --mode boot --devices "$BOOT_DEVICES" --concurrency "$CONCURRENCY"
