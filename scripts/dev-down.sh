#!/usr/bin/env bash
# Stops what scripts/dev-up.sh started. Data stays in OCTOISP_DEV_DIR; pass --purge to delete it.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
DEV=${OCTOISP_DEV_DIR:-/var/tmp/octoisp-dev}
for p in agent controlplane; do
    [ -f "$DEV/$p.pid" ] && kill "$(cat "$DEV/$p.pid")" 2>/dev/null && say "stopped $p"
    rm -f "$DEV/$p.pid"
done
[ -f "$DEV/redis/redis.pid" ] && kill "$(cat "$DEV/redis/redis.pid")" 2>/dev/null && say "stopped Redis"
stop_private_pg "$DEV/pg" && say "stopped PostgreSQL"
if [ "${1:-}" = --purge ]; then rm -rf "$DEV"; say "deleted $DEV"; fi
