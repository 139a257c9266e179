#!/usr/bin/env bash
# Brings up a complete local OctoISP: private PostgreSQL and Redis (installed from the distribution's packages
# when missing), migrations, a demo provider and POP, the control plane serving the web console (built here with
# npm), and one enrolled agent pinging loopback addresses, and a demo user. Safe to run again: it reuses what it already created. Stop it with scripts/dev-down.sh.
#
# Environment: OCTOISP_DEV_DIR (default /var/tmp/octoisp-dev), OCTOISP_DEV_PORT_BASE (default 55000: PostgreSQL
# on +432, Redis on +379, QUIC on +443, HTTP on +080, agent metrics on +464), CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

DEV=${OCTOISP_DEV_DIR:-/var/tmp/octoisp-dev}
BASE=${OCTOISP_DEV_PORT_BASE:-55000}
PG_PORT=$((BASE + 432)); REDIS_PORT=$((BASE + 379)); QUIC_PORT=$((BASE + 443)); HTTP_PORT=$((BASE + 80))
AGENT_METRICS=$((BASE + 464))
mkdir -p "$DEV"

command -v cargo >/dev/null || die "Rust is needed: install it with rustup (https://rustup.rs) and run this again"
ensure_pkg cc build-essential
ensure_pg_packages
start_private_pg "$DEV/pg" "$PG_PORT"
start_private_redis "$DEV/redis" "$REDIS_PORT"
ADMIN_URL="postgres://postgres@127.0.0.1:$PG_PORT/octoisp"
psql "postgres://postgres@127.0.0.1:$PG_PORT/postgres" -XtAc "select 1 from pg_database where datname='octoisp'" | grep -q 1 \
    || psql "postgres://postgres@127.0.0.1:$PG_PORT/postgres" -Xqc "create database octoisp"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$(default_target_dir)}"
say "building octoisp-controlplane and octoisp-agent (the first build takes a few minutes)"
cargo build --locked --bins
CP="$CARGO_TARGET_DIR/debug/octoisp-controlplane"

# The web console, served by the control plane at / (http.web_dir below).
ensure_pkg node nodejs
ensure_pkg npm npm
node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' \
    || die "the web console needs Node.js 20 or newer (found $(node --version)); install a newer nodejs and run this again"
say "building the web console (npm ci && npm run build in web/)"
(cd web && npm ci --no-audit --no-fund --loglevel=error && npm run build >/dev/null)
WEB_DIR="$(pwd)/web/dist"
AGENT="$CARGO_TARGET_DIR/debug/octoisp-agent"

# A JWT secret of this installation only, generated once, kept with the data (never in the repository).
[ -s "$DEV/jwt_secret" ] || (umask 077; head -c 32 /dev/urandom | base64 | tr -d '\n' >"$DEV/jwt_secret")
umask 077
cat > "$DEV/controlplane.toml" <<TOML
data_dir = "$DEV/controlplane"

[database]
url = "postgres://octoisp_app@127.0.0.1:$PG_PORT/octoisp"
admin_url = "$ADMIN_URL"

[ingest]
listen = "127.0.0.1:$QUIC_PORT"

[http]
listen = "127.0.0.1:$HTTP_PORT"
web_dir = "$WEB_DIR"

[api]
redis_url = "redis://127.0.0.1:$REDIS_PORT"

[auth]
jwt_secret = "$(cat "$DEV/jwt_secret")"
TOML
umask 022
cat > "$DEV/agent.toml" <<TOML
state_dir = "$DEV/agent"

[uplink]
server = "127.0.0.1:$QUIC_PORT"

[metrics]
listen = "127.0.0.1:$AGENT_METRICS"

[[monitors.ping]]
name = "loopback"
targets = ["127.0.0.1", "127.0.0.2", "::1"]
interval_ms = 5000
count = 3
TOML
export OCTOISP_CP_CONFIG="$DEV/controlplane.toml" OCTOISP_AGENT_CONFIG="$DEV/agent.toml"

say "applying migrations"
"$CP" migrate
"$CP" provider create --slug demo --name "Provedor Demo" --tier small >/dev/null 2>&1 || true
"$CP" pop create --provider demo --slug centro --name "POP Centro" >/dev/null 2>&1 || true
DEMO_PASSWORD=${OCTOISP_DEMO_PASSWORD:-octoisp-demo-2026}
OCTOISP_USER_PASSWORD="$DEMO_PASSWORD" "$CP" user create --provider demo --email admin@demo.example \
    --name "Admin Demo" --role "Provider Admin" >/dev/null 2>&1 || true

stop_pidfile() { [ -f "$1" ] && kill "$(cat "$1")" 2>/dev/null && sleep 1; rm -f "$1"; }
stop_pidfile "$DEV/controlplane.pid"
say "starting the control plane (log: $DEV/controlplane.log)"
nohup "$CP" serve >"$DEV/controlplane.log" 2>&1 &
echo $! >"$DEV/controlplane.pid"
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$HTTP_PORT/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
curl -fs "http://127.0.0.1:$HTTP_PORT/readyz" >/dev/null || die "the control plane is not ready; see $DEV/controlplane.log"

if [ ! -f "$DEV/agent/identity/agent.json" ]; then
    say "enrolling the agent"
    TOKEN=$("$CP" pop enroll-token --provider demo --pop centro --ttl-secs 600)
    "$AGENT" enroll --server "127.0.0.1:$QUIC_PORT" --token "$TOKEN"
fi
stop_pidfile "$DEV/agent.pid"
say "starting the agent (log: $DEV/agent.log)"
nohup "$AGENT" run >"$DEV/agent.log" 2>&1 &
echo $! >"$DEV/agent.pid"

say "waiting for the first ping samples to reach PostgreSQL"
n=0
for _ in $(seq 60); do
    n=$(psql "$ADMIN_URL" -XtAc "select count(*) from samples" 2>/dev/null || echo 0)
    [ "${n:-0}" -gt 0 ] && break
    sleep 1
done
[ "${n:-0}" -gt 0 ] || die "no samples arrived within 60 s; see $DEV/agent.log and $DEV/controlplane.log"

cat <<INFO

OctoISP is running locally.
  PostgreSQL     127.0.0.1:$PG_PORT   psql $ADMIN_URL
  Redis          127.0.0.1:$REDIS_PORT
  web console    http://127.0.0.1:$HTTP_PORT/   (sign in as the demo user below; built from web/ into web/dist)
  control plane  QUIC 127.0.0.1:$QUIC_PORT   http://127.0.0.1:$HTTP_PORT/metrics  /healthz  /readyz
                 log $DEV/controlplane.log
  agent          pings 127.0.0.1, 127.0.0.2 and ::1 every 5 s   http://127.0.0.1:$AGENT_METRICS/metrics
                 log $DEV/agent.log   outbox: OCTOISP_AGENT_CONFIG=$DEV/agent.toml $AGENT status
  demo tenant    provider "demo", POP "centro", user admin@demo.example / $DEMO_PASSWORD (Provider Admin)
                 token: curl -s http://127.0.0.1:$HTTP_PORT/api/v1/auth/login -H 'content-type: application/json' \\
                          -d '{"email":"admin@demo.example","password":"$DEMO_PASSWORD"}'
                 API description: http://127.0.0.1:$HTTP_PORT/api/v1/openapi.json

Samples so far: $n. Watch them arrive:
  psql $ADMIN_URL -c "select s.metric, s.labels, x.ts, x.value from samples x join series s on s.id = x.series_id order by x.ts desc limit 10"
Stop everything: scripts/dev-down.sh
INFO
