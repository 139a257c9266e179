#!/usr/bin/env bash
# Benchmark of the device list API: 1,000,000 devices across 10 providers, device search with filters and keyset
# pagination as authenticated Viewers of several providers, under wrk on loopback.
#
#   scripts/bench-api.sh                 # defaults below; needs PostgreSQL (admin URL), Redis and wrk
#   DEVICES=100000 RATE_CONNS="8 32" scripts/bench-api.sh
#
# Environment:
#   OCTOISP_BENCH_PG     admin URL of the cluster (default postgres://postgres@127.0.0.1:5432/postgres)
#   OCTOISP_BENCH_REDIS  Redis for the rate limiter (default redis://127.0.0.1:6379)
#   DEVICES, PROVIDERS   seed size (default 1000000, 10)
#   DURATION             seconds per wrk run (default 20)
#   CONNS                wrk connection counts to try, one run each (default "4 16 64")
#   PORT                 listen port of the API (default 18080)
#   SKIP_SEED=1          reuse the database of a previous run
#   SKIP_BUILD=1         use the api_seed example already built in CARGO_TARGET_DIR
#   WARMUP               seconds of unreported load at the largest connection count first (default 5; 0: none)
#   FILTERS              Lua list of query strings the requests cycle through (default: a mix of every filter)
#   RATE                 paced runs: after each answer a connection waits a random time (exponential, mean
#                        CONNS * 1000 / RATE ms: wrk's delay()), so the runs stay near RATE requests/s (a little
#                        under: the answer's own time adds to the wait) with arrivals like independent users,
#                        instead of saturating the server; wrk reports the rate reached
#
# What runs: `cargo run --release --example api_seed` seeds with generate_series as the admin role, then serves
# the real API router (gateway middleware, rate limiter in Redis, row-level security as octoisp_app, handlers);
# only bearer-token verification is a map lookup. wrk (not wrk2, which Debian lacks) is closed-loop: it reports
# throughput and the latency distribution at that throughput, so the maximum sustainable rate is the highest
# throughput whose p99 stays under 25 ms, and the figure "at ~1,000 req/s" is read from the run closest to it.
set -euo pipefail

ADMIN_URL=${OCTOISP_BENCH_PG:-postgres://postgres@127.0.0.1:5432/postgres}
REDIS=${OCTOISP_BENCH_REDIS:-redis://127.0.0.1:6379}
DEVICES=${DEVICES:-1000000}
PROVIDERS=${PROVIDERS:-10}
DURATION=${DURATION:-20}
CONNS=${CONNS:-4 16 64}
PORT=${PORT:-18080}
DB=octoisp_bench
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/octoisp-target}

command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
cd "$(dirname "$0")/.."

base=${ADMIN_URL%/*}
host_part=${base#*@}
app_url="postgres://octoisp_app@${host_part}/${DB}"

[ -n "${SKIP_BUILD:-}" ] || cargo build --release -p octoisp-controlplane --example api_seed
bin="$CARGO_TARGET_DIR/release/examples/api_seed"

if [ -z "${SKIP_SEED:-}" ]; then
  psql "$ADMIN_URL" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
  "$bin" seed "$base/$DB" "$DEVICES" "$PROVIDERS"
fi
FILTERS=${FILTERS:-'"vendor=Huawei", "status=online", "tag=vip", "serial=SN00001", "vendor=ZTE&tag=olt-3", "ip=10.0.0.0/16", "q=cliente%201", ""'}

"$bin" serve "$app_url" "127.0.0.1:$PORT" bench-token &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  curl -fs "http://127.0.0.1:$PORT/api/v1/openapi.json" >/dev/null 2>&1 && break
  sleep 0.2
done

lua=$(mktemp --suffix=.lua)
cat >"$lua" <<LUA
-- Each connection is a Viewer of one provider and walks the device list with filters, following next_cursor.
local providers = $PROVIDERS
local filters = { $FILTERS }
local counter = 0
pace = __PACE__
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end
function init(args)
  math.randomseed(id + 1)
  token = "bench-token-" .. (id % providers)
  n = id
  cursor = nil
end
-- Paced runs: a think time drawn from an exponential distribution of mean \`pace\` ms, so the connections do
-- not fire in step (a fixed wait lines them up into bursts) and arrivals look like many independent users.
function delay()
  if pace == 0 then return 0 end
  return math.floor(-math.log(1 - math.random()) * pace)
end
function request()
  n = n + 1
  local f = filters[(n % #filters) + 1]
  local path = "/api/v1/devices?limit=50"
  if f ~= "" then path = path .. "&" .. f end
  if cursor and n % 4 ~= 0 then path = path .. "&cursor=" .. cursor end
  return wrk.format("GET", path, { ["Authorization"] = "Bearer " .. token })
end
function response(status, headers, body)
  if status ~= 200 then
    errors = (errors or 0) + 1
  end
  -- The cursor ends the body: look for it in the tail only (a pattern scan of a 50-device page costs the load
  -- generator more CPU than the lookup), and in the whole body when a long key pushed it further.
  local tail = body:find('"next_cursor":', math.max(1, #body - 2048), true) or body:find('"next_cursor":', 1, true)
  cursor = tail and body:match('^"next_cursor":"([^"]+)"', tail) or nil
end
LUA

# Warm-up, not reported: the pool opens its connections and each PostgreSQL backend fills its catalog caches
# and prepares (and, for the value-free filters, plans) each statement on its first requests, 10-100 ms each.
# A control plane that has been running has done all that; without it those first requests are the p99.
max_conns=0
for c in $CONNS; do [ "$c" -gt "$max_conns" ] && max_conns=$c; done
if [ "${WARMUP:-5}" -gt 0 ]; then
  echo "=== warm-up: $max_conns connections, ${WARMUP:-5}s (not reported) ==="
  sed 's/__PACE__/0/' "$lua" >"$lua.run.lua"
  wrk -t2 -c"$max_conns" -d"${WARMUP:-5}s" -s "$lua.run.lua" "http://127.0.0.1:$PORT" >/dev/null
fi

for c in $CONNS; do
  threads=$(( c < 2 ? 1 : 2 ))
  pace=0
  [ -n "${RATE:-}" ] && pace=$(( c * 1000 / RATE ))
  sed "s/__PACE__/$pace/" "$lua" >"$lua.run.lua"
  echo "=== wrk: $c connections, $threads threads, ${DURATION}s${RATE:+, paced: ${pace} ms between the requests of a connection (RATE=$RATE)} ==="
  wrk -t"$threads" -c"$c" -d"${DURATION}s" --latency -s "$lua.run.lua" "http://127.0.0.1:$PORT"
done
rm -f "$lua" "$lua.run.lua"
