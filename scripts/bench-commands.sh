#!/usr/bin/env bash
# Commands end to end: API -> PostgreSQL row -> Redis queue -> dispatcher -> QUIC stream to the agent -> the agent
# runs it (ledger, state frame) -> result through the agent's outbox -> ingest stores it and finishes the row.
#
# A large tenant floods COMMANDS `noop` commands (one POP-wide fan-out request per agent: one command per device
# of the POP) while a small tenant sends one `noop` every PROBE_MS on its own POP. Reported: commands per second
# from the first request to the last result stored, the time each phase took, and each tenant's queue wait
# (created -> dispatched) and start delay (created -> started on the agent), p50/p99/max, from the rows.
#
#   scripts/bench-commands.sh                      # 20,000 commands over 4 agents, release build
#   COMMANDS=50000 AGENTS=8 scripts/bench-commands.sh
#
# Environment (defaults in brackets):
#   COMMANDS [20000] AGENTS [4] PROBE_MS [200] PROFILE [release] SKIP_BUILD=1
#   DISPATCH [32]          commands.dispatch_concurrency of the control plane (its default)
#   AGENT_SLOTS [256]      commands.max_concurrent of each agent (max_queued is 4x)
#   OCTOISP_BENCH_PG       admin URL of the PostgreSQL cluster [postgres://postgres@127.0.0.1:5432/postgres]; the
#                          run uses a fresh database `octoisp_bench_cmd` in it
#   BASE_PORT [27000]      QUIC +443, HTTP +80, Redis (private, started here) +379, agent metrics +2000..
#   RUN_DIR [/var/tmp/octoisp-bench-commands/DATE]
#   PGSS=1                 the cluster preloads pg_stat_statements and has the extension in its admin database: its
#                          counters are reset before the flood and the costliest statements of the run's database
#                          are written to RUN_DIR/pg_stat_statements.txt (execution time per command; with
#                          pg_stat_statements.track = all the foreign-key checks appear too, nested in their INSERT)
#
# The large tier's per-tenant limits (queue.tenant_concurrency and tenant_rate, 500 and 200/s by default: a policy
# that spreads a provider's mass reboot over minutes) are lifted for the large tier, so the run measures what the
# machinery can carry; the small tier keeps its defaults (20 leased, 10/s).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

COMMANDS=${COMMANDS:-20000}; AGENTS=${AGENTS:-4}; PROBE_MS=${PROBE_MS:-200}; PROFILE=${PROFILE:-release}
DISPATCH=${DISPATCH:-32}; AGENT_SLOTS=${AGENT_SLOTS:-256}
ADMIN=${OCTOISP_BENCH_PG:-postgres://postgres@127.0.0.1:5432/postgres}
BASE=${BASE_PORT:-27000}
QUIC_PORT=$((BASE + 443)); HTTP_PORT=$((BASE + 80)); REDIS_PORT=$((BASE + 379)); METRICS_BASE=$((BASE + 2000))
RUN=${RUN_DIR:-/var/tmp/octoisp-bench-commands/$(date -u +%Y%m%dT%H%M%SZ)}
DB=octoisp_bench_cmd
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$(default_target_dir)}"
BIN="$CARGO_TARGET_DIR/$PROFILE"
mkdir -p "$RUN"
say "run directory $RUN"

if [ -z "${SKIP_BUILD:-}" ]; then
    flag=(); [ "$PROFILE" = release ] && flag=(--release)
    say "building octoisp-controlplane and octoisp-agent ($PROFILE)"
    cargo build "${flag[@]}" -p octoisp-controlplane -p octoisp-agent --bins
fi
CP="$BIN/octoisp-controlplane"; AGENT="$BIN/octoisp-agent"
for b in "$CP" "$AGENT"; do [ -x "$b" ] || die "$b is missing: build it or unset SKIP_BUILD"; done

PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    if [ -f "$RUN/redis/redis.pid" ]; then
        local rp
        rp=$(cat "$RUN/redis/redis.pid")
        kill "$rp" 2>/dev/null || true
        # Wait until it is gone: a run started right after this one would otherwise find the port still held
        # (its Redis did not start once, and that run could not begin).
        for _ in $(seq 50); do kill -0 "$rp" 2>/dev/null || break; sleep 0.1; done
    fi
}
trap cleanup EXIT

start_private_redis "$RUN/redis" "$REDIS_PORT"
fresh_run_config "$RUN" "$ADMIN" "$DB" "$QUIC_PORT" "$HTTP_PORT" "$REDIS_PORT" "[queue]
redis_url = \"redis://127.0.0.1:$REDIS_PORT\"
tenant_concurrency = [20, 100, 1000000]
tenant_rate = [10.0, 50.0, 1000000.0]

[commands]
dispatch_concurrency = $DISPATCH
max_fanout = $COMMANDS

[log]
level = \"warn\""
q() { psql "$DB_ADMIN" -XtAc "$1"; }
export OCTOISP_CP_CONFIG="$RUN/controlplane.toml"
"$CP" migrate >"$RUN/migrate.log" 2>&1 || die "migrations failed; see $RUN/migrate.log"
"$CP" provider create --slug big --name "Large provider" --tier large >/dev/null
"$CP" provider create --slug small --name "Small provider" --tier small >/dev/null
PASSWORD=bench-$(head -c 6 /dev/urandom | base64 | tr -dc a-zA-Z0-9)
for p in big small; do
    OCTOISP_USER_PASSWORD="$PASSWORD" "$CP" user create --provider "$p" --email "admin@$p.example" \
        --name "Admin $p" --role "Provider Admin" >/dev/null
done

"$CP" serve >>"$RUN/controlplane.log" 2>&1 &
CP_PID=$!; PIDS+=("$CP_PID")
for _ in $(seq 300); do curl -fs "http://127.0.0.1:$HTTP_PORT/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
curl -fs "http://127.0.0.1:$HTTP_PORT/readyz" >/dev/null || die "the control plane is not ready; see $RUN/controlplane.log"

# Agents: AGENTS POPs of the large provider, one POP of the small one.
AGENT_PIDS=()
start_agent() {  # start_agent PROVIDER POP INDEX
    local dir="$RUN/agent-$3"
    mkdir -p "$dir"
    cat > "$dir/agent.toml" <<TOML
state_dir = "$dir/state"
[uplink]
server = "127.0.0.1:$QUIC_PORT"
[metrics]
listen = "127.0.0.1:$((METRICS_BASE + $3))"
[outbox]
synchronous = "normal"
[commands]
max_concurrent = $AGENT_SLOTS
max_queued = $((AGENT_SLOTS * 4))
[log]
level = "warn"
TOML
    "$CP" pop create --provider "$1" --slug "$2" --name "$2" >/dev/null
    local token
    token=$("$CP" pop enroll-token --provider "$1" --pop "$2" --ttl-secs 600)
    OCTOISP_AGENT_CONFIG="$dir/agent.toml" "$AGENT" enroll --server "127.0.0.1:$QUIC_PORT" --token "$token" >/dev/null
    OCTOISP_AGENT_CONFIG="$dir/agent.toml" "$AGENT" run >"$dir/agent.log" 2>&1 &
    AGENT_PIDS+=($!); PIDS+=($!)
}
for k in $(seq 0 $((AGENTS - 1))); do start_agent big "pop-$k" "$k"; done
start_agent small pop-s "$AGENTS"
for _ in $(seq 300); do
    n=$(q "SELECT count(*) FROM agents WHERE last_seen IS NOT NULL")
    [ "$n" -ge $((AGENTS + 1)) ] && break; sleep 0.2
done
[ "$n" -ge $((AGENTS + 1)) ] || die "only $n of $((AGENTS + 1)) agents connected; see $RUN/agent-*/agent.log"

# Devices of the large provider's POPs: the fan-out makes one command per device.
PER_POP=$(( (COMMANDS + AGENTS - 1) / AGENTS ))
q "INSERT INTO devices (provider_id, pop_id, device_key)
   SELECT p.provider_id, p.id, 'bench-' || g FROM pops p
     JOIN providers v ON v.id = p.provider_id AND v.slug = 'big', generate_series(1, $PER_POP) g" >/dev/null
TOTAL=$(q "SELECT count(*) FROM devices d JOIN providers v ON v.id = d.provider_id AND v.slug = 'big'")

token_of() {
    curl -fs "http://127.0.0.1:$HTTP_PORT/api/v1/auth/login" -H 'content-type: application/json' \
        -d "{\"email\":\"admin@$1.example\",\"password\":\"$PASSWORD\"}" \
        | sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p'
}
BIG_TOKEN=$(token_of big); SMALL_TOKEN=$(token_of small)
[ -n "$BIG_TOKEN" ] && [ -n "$SMALL_TOKEN" ] || die "cannot sign in to the API"
SMALL_POP=$(q "SELECT p.id FROM pops p JOIN providers v ON v.id = p.provider_id WHERE v.slug = 'small'")
post() {  # post TOKEN BODY
    curl -s -o /dev/null -w "%{http_code}\n" -H "authorization: Bearer $1" -H 'content-type: application/json' \
        "http://127.0.0.1:$HTTP_PORT/api/v1/commands" -d "$2"
}

HZ=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
pg_ticks() {
    local t=0 p
    for p in $(pgrep -f "postgres: .* $DB " || true); do t=$((t + $(cpu_ticks "$p"))); done
    echo "$t"
}
agents_ticks() { local t=0 p; for p in "${AGENT_PIDS[@]}"; do t=$((t + $(cpu_ticks "$p"))); done; echo "$t"; }
REDIS_PID=$(cat "$RUN/redis/redis.pid")
C0=$(cpu_ticks "$CP_PID"); A0=$(agents_ticks); R0=$(cpu_ticks "$REDIS_PID"); P0=$(pg_ticks)
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
[ -n "${PGSS:-}" ] && psql "$ADMIN" -XtAc "SELECT pg_stat_statements_reset()" >/dev/null

say "flood: $TOTAL noop commands for the large provider over $AGENTS agents; a small-provider noop every $PROBE_MS ms"
# The small tenant's probes run until the flood is over.
(
    pause=$(awk "BEGIN {print $PROBE_MS / 1000}")
    while [ ! -f "$RUN/flood-done" ]; do
        post "$SMALL_TOKEN" "{\"name\":\"noop\",\"args\":{},\"pop_id\":\"$SMALL_POP\"}" >>"$RUN/probes.txt"
        sleep "$pause"
    done
) &
PROBE_PID=$!; PIDS+=("$PROBE_PID")
T0=$(date +%s.%N)
FANOUT=()
for pop in $(q "SELECT p.id FROM pops p JOIN providers v ON v.id = p.provider_id WHERE v.slug = 'big' ORDER BY p.slug"); do
    post "$BIG_TOKEN" "{\"name\":\"noop\",\"args\":{},\"pop_id\":\"$pop\",\"all_devices\":true}" >>"$RUN/fanout.txt" &
    FANOUT+=($!)
done
for j in "${FANOUT[@]}"; do wait "$j" || true; done
T_CREATED=$(date +%s.%N)
grep -qv '^202$' "$RUN/fanout.txt" && die "a fan-out request failed: $(sort "$RUN/fanout.txt" | uniq -c | tr '\n' ' ')"

FINAL="('succeeded','failed','expired','rejected','cancelled','dead')"
BIG="(SELECT id FROM providers WHERE slug = 'big')"
# Progress is polled through one psql session (a new psql and backend every 200 ms, and a count over every row
# each time, took about a tenth of the two cores: the benchmark competing with what it measures), less often
# while much is left: the next look comes after about half the time the rest needs at the rate so far
# (50 ms to 1 s). The end is therefore seen at most 50 ms late once the rate is known.
coproc PROGRESS { psql "$DB_ADMIN" -XtAq 2>&1; }
PIDS+=("$PROGRESS_PID")
FIRST_US=${EPOCHREALTIME/./}
while :; do
    echo "SELECT count(*) FROM commands WHERE provider_id = $BIG AND final_status IS NOT NULL;" >&"${PROGRESS[1]}"
    read -r done_n <&"${PROGRESS[0]}" || die "the progress query's psql ended"
    [[ "$done_n" =~ ^[0-9]+$ ]] || die "progress query: $done_n"
    [ "$done_n" -ge "$TOTAL" ] && break
    elapsed_us=$(( ${EPOCHREALTIME/./} - FIRST_US ))
    [ "$elapsed_us" -gt 1800000000 ] && die "only $done_n of $TOTAL finished after 30 min"
    # remaining / rate, halved, in ms; 50 ms to 1 s.
    wait_ms=1000
    [ "$done_n" -gt 0 ] && wait_ms=$(( (TOTAL - done_n) * elapsed_us / done_n / 2000 ))
    [ "$wait_ms" -gt 1000 ] && wait_ms=1000
    [ "$wait_ms" -lt 50 ] && wait_ms=50
    sleep "$((wait_ms / 1000)).$(printf %03d $((wait_ms % 1000)))"
done
T1=$(date +%s.%N)
echo '\q' >&"${PROGRESS[1]}"
touch "$RUN/flood-done"; wait "$PROBE_PID" 2>/dev/null || true
C1=$(cpu_ticks "$CP_PID"); A1=$(agents_ticks); R1=$(cpu_ticks "$REDIS_PID"); P1=$(pg_ticks)
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)
# Probes still in flight finish.
for _ in $(seq 100); do
    open=$(q "SELECT count(*) FROM commands c JOIN providers v ON v.id = c.provider_id AND v.slug = 'small' WHERE c.status NOT IN $FINAL")
    [ "$open" = 0 ] && break; sleep 0.2
done

wall=$(awk "BEGIN {printf \"%.2f\", $T1 - $T0}")
create=$(awk "BEGIN {printf \"%.2f\", $T_CREATED - $T0}")
rate=$(awk "BEGIN {printf \"%.0f\", $TOTAL / ($T1 - $T0)}")
cpu() { awk "BEGIN {printf \"%.1f\", ($2 - $1) / $HZ}"; }
{
    echo "commit $(git rev-parse --short HEAD) profile $PROFILE, $(nproc) cores, load $LOAD0 -> $LOAD1"
    echo "commands: $TOTAL over $AGENTS agents; dispatch_concurrency $DISPATCH; agent slots $AGENT_SLOTS"
    echo "statuses (large provider): $(q "SELECT string_agg(status || ' ' || n, ', ') FROM (SELECT status, count(*) n FROM commands WHERE provider_id = $BIG GROUP BY 1 ORDER BY 1) s")"
    echo "end to end: $wall s from the first request to the last result stored = $rate commands/s"
    echo "  of which the fan-out requests (rows + enqueue): $create s"
    echo "CPU seconds: control plane $(cpu "$C0" "$C1"), agents $(cpu "$A0" "$A1"), redis $(cpu "$R0" "$R1"), PostgreSQL backends $(cpu "$P0" "$P1") (those alive at the end)"
    for p in big small; do
        q "SELECT '$p: queue wait (created -> dispatched) p50 ' || round(percentile_cont(0.5) WITHIN GROUP (ORDER BY w)::numeric, 1)
              || ' ms, p99 ' || round(percentile_cont(0.99) WITHIN GROUP (ORDER BY w)::numeric, 1)
              || ' ms, max ' || round(max(w)::numeric, 1) || ' ms; created -> started p50 '
              || round(percentile_cont(0.5) WITHIN GROUP (ORDER BY s)::numeric, 1) || ' ms, p99 '
              || round(percentile_cont(0.99) WITHIN GROUP (ORDER BY s)::numeric, 1) || ' ms ('
              || count(*) || ' commands, ' || count(*) FILTER (WHERE c.status = 'succeeded') || ' succeeded)'
           FROM (SELECT c.status, extract(epoch FROM c.dispatched_at - c.created_at) * 1000 AS w,
                        extract(epoch FROM c.started_at - c.created_at) * 1000 AS s
                   FROM commands c JOIN providers v ON v.id = c.provider_id AND v.slug = '$p'
                  WHERE c.dispatched_at IS NOT NULL) c"
    done
    echo "small-provider probe requests: $(sort "$RUN/probes.txt" | uniq -c | tr '\n' ' ')"
    echo "running marks: $(curl -fs "http://127.0.0.1:$HTTP_PORT/metrics" | grep '^octoisp_commands_running_marks_total' | tr '\n' ' ')"
} | tee "$RUN/summary.txt"
if [ -n "${PGSS:-}" ]; then
    psql "$ADMIN" -XAF ' | ' -c "
      SELECT round(total_exec_time::numeric) AS total_ms, calls,
             round((total_exec_time * 1000 / $TOTAL)::numeric, 1) AS us_per_command,
             round(wal_bytes / $TOTAL) AS wal_bytes_per_command,
             round(shared_blks_hit::numeric / $TOTAL, 1) AS blocks_hit_per_command,
             left(regexp_replace(query, '\s+', ' ', 'g'), 140) AS statement
        FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = '$DB')
       ORDER BY total_exec_time DESC LIMIT 20" >"$RUN/pg_stat_statements.txt"
    psql "$ADMIN" -XtAc "
      SELECT 'PostgreSQL execution time per command (pg_stat_statements, top-level statements): '
             || round((sum(total_exec_time) * 1000 / $TOTAL)::numeric, 1) || ' us, WAL '
             || round(sum(wal_bytes) / $TOTAL) || ' bytes, buffer hits ' || round(sum(shared_blks_hit)::numeric / $TOTAL, 1)
        FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = '$DB') AND toplevel" \
        | tee -a "$RUN/summary.txt"
fi
# Redis's own account (its private instance served only this run): calls and time per command. A script call's
# time includes the commands it runs, which are also counted under their own names.
redis-cli -p "$REDIS_PORT" INFO commandstats >"$RUN/redis-commandstats.txt" 2>/dev/null || true
awk -F'[:,=]' -v n="$TOTAL" '/^cmdstat_/ {sub("cmdstat_", "", $1); printf "%s %.1f %.2f\n", $1, $5 / n, $3 / n}' \
    "$RUN/redis-commandstats.txt" | sort -k2 -rn | head -8 \
    | awk 'BEGIN {printf "redis, per command (us, calls):"} {printf " %s %s us %s,", $1, $2, $3} END {print ""}' \
    | tee -a "$RUN/summary.txt"
# HOT updates (no index entry written) are counted whatever the cluster preloads.
q "SELECT 'commands: ' || n_tup_upd || ' row updates, ' || n_tup_hot_upd || ' of them HOT; table '
          || pg_size_pretty(pg_table_size('commands')) || ', indexes ' || pg_size_pretty(pg_indexes_size('commands'))
     FROM pg_stat_user_tables WHERE relname = 'commands'" | tee -a "$RUN/summary.txt"
