#!/usr/bin/env bash
# End-to-end capacity run: a control plane, N agents (one POP each) and the fleet simulator (CWMP CPEs and SNMP
# devices on loopback) for D minutes, sampling CPU and memory per process, outbox depths, ingest lag and API
# latency, then computing losses (what the simulator produced vs what PostgreSQL stored). Optionally the control
# plane is stopped for K minutes in the middle and the backlog must drain with nothing lost. See docs/SCALING.md.
#
#   scripts/scale-run.sh                                   # 10,000 CPEs, 2,000 SNMP devices, 2 agents, 5 min
#   CUT_MIN=2 scripts/scale-run.sh                         # the same with the control plane cut off 2 min mid-way
#   CPES=100000 SNMP=20000 AGENTS=4 DURATION_MIN=10 PROFILE=release scripts/scale-run.sh   # the full run
#
# Environment (defaults in brackets):
#   CPES [10000] SNMP [2000] AGENTS [2] DURATION_MIN [5] INFORM_INTERVAL [300] SNMP_INTERVAL [60]
#   CUT_MIN [0]          minutes the control plane is down, starting at DURATION_MIN/2 - CUT_MIN/2
#   PROFILE [debug]      cargo profile of the binaries (release: build only these three packages)
#   FLEET_ARGS []        extra flags for octoisp-fleetsim (e.g. "--reboot-pct 2 --dead-pct 1")
#   OCTOISP_SCALE_PG     admin URL of the PostgreSQL cluster [postgres://postgres@127.0.0.1:5432/postgres]; the
#                        run uses a fresh database `octoisp_scale` in it
#   BASE_PORT [21000]    QUIC +443, HTTP +80, Redis (private, started here) +379, ACS +1000.., agent metrics +2000..,
#                        webhook stand-in +90 (below the ephemeral range, where a client socket may hold a port)
#   SNMP_PORT [16161]    UDP port of the simulated SNMP devices (127.20.x.y)
#   RUN_DIR [/var/tmp/octoisp-scale/DATE]  logs, samples.csv, api.csv, polls.csv, summary.txt
#   SIM_PROCS [auto]     simulator processes (the fleet split with --shard/--shards): by default as many as the
#                        open-file hard limit needs (one socket per SNMP device; a container may not raise it)
#   SKIP_BUILD=1         use the binaries already built
#   DRAIN_MAX_SECS [900] how long the agents' outboxes may take to drain at the end
#   DASHBOARD [1]        open the console's dashboard in headless Chromium during the run (needs web/dist and
#                        web/node_modules: `cd web && npm ci && npm run build`; CHROMIUM, default /usr/bin/chromium)
#   PERF [0]             1: at 3/5 of a run without a cut, `top` once and a 20 s `perf record` (flat, 49 Hz)
#                        of the control plane, agent 0, the simulator and PostgreSQL: RUN_DIR/perf-*.txt
#   (a cluster with autovacuum = off gets VACUUM (ANALYZE) of the run's hot tables and ANALYZE once a minute:
#                        vacuum.log)
#   ALERTS [1]           an alert rule (interface down, POP pop-0) and a webhook channel to a local stand-in
#                        (port BASE+90): the flapping devices' alerts give the alert latency
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

CPES=${CPES:-10000}; SNMP=${SNMP:-2000}; AGENTS=${AGENTS:-2}; DURATION_MIN=${DURATION_MIN:-5}
INFORM_INTERVAL=${INFORM_INTERVAL:-300}; SNMP_INTERVAL=${SNMP_INTERVAL:-60}; CUT_MIN=${CUT_MIN:-0}
PROFILE=${PROFILE:-debug}; FLEET_ARGS=${FLEET_ARGS:-}; DRAIN_MAX_SECS=${DRAIN_MAX_SECS:-900}
DASHBOARD=${DASHBOARD:-1}; ALERTS=${ALERTS:-1}; PERF=${PERF:-0}
ADMIN=${OCTOISP_SCALE_PG:-postgres://postgres@127.0.0.1:5432/postgres}
BASE=${BASE_PORT:-21000}; SNMP_PORT=${SNMP_PORT:-16161}
QUIC_PORT=$((BASE + 443)); HTTP_PORT=$((BASE + 80)); REDIS_PORT=$((BASE + 379))
ACS_BASE=$((BASE + 1000)); METRICS_BASE=$((BASE + 2000)); HOOK_PORT=$((BASE + 90))
RUN=${RUN_DIR:-/var/tmp/octoisp-scale/$(date -u +%Y%m%dT%H%M%SZ)}
DB=octoisp_scale
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$(default_target_dir)}"
BIN="$CARGO_TARGET_DIR/$PROFILE"
mkdir -p "$RUN"
say "run directory $RUN"

if [ -z "${SKIP_BUILD:-}" ]; then
    flag=(); [ "$PROFILE" = release ] && flag=(--release)
    say "building octoisp-controlplane, octoisp-agent, octoisp-fleetsim ($PROFILE)"
    cargo build "${flag[@]}" -p octoisp-controlplane -p octoisp-agent -p octoisp-fleetsim --bins
fi
CP="$BIN/octoisp-controlplane"; AGENT="$BIN/octoisp-agent"; FLEET="$BIN/octoisp-fleetsim"
for b in "$CP" "$AGENT" "$FLEET"; do [ -x "$b" ] || die "$b is missing: build it or unset SKIP_BUILD"; done

# One socket per SNMP device and two per CWMP session: raise the open-file limit (root may raise the hard one).
ulimit -Hn 1048576 2>/dev/null || true
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -f "$RUN/redis/redis.pid" ] && kill "$(cat "$RUN/redis/redis.pid")" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM  # so that a stopped run still stops what it started

# PostgreSQL: a fresh database in the given cluster. Redis: a private one (never the shared instance's keys).
start_private_redis "$RUN/redis" "$REDIS_PORT"
# The webhook stand-in is on loopback: notifications may reach private targets in this installation. The
# channel's signing secret is sealed with a key of the run's own.
( umask 077; head -c 32 /dev/urandom | base64 >"$RUN/secrets.key" )
fresh_run_config "$RUN" "$ADMIN" "$DB" "$QUIC_PORT" "$HTTP_PORT" "$REDIS_PORT" "[notify]
allow_private_targets = true

[secrets]
key_file = \"$RUN/secrets.key\""
# The console, served by the control plane for the dashboard in Chromium.
sed -i "/^\[http\]/a web_dir = \"$PWD/web/dist\"" "$RUN/controlplane.toml"
if [ "$DASHBOARD" = 1 ]; then
    [ -f web/dist/index.html ] && [ -d web/node_modules/playwright-core ] ||
        die "DASHBOARD=1 needs web/dist and web/node_modules (cd web && npm ci && npm run build), or DASHBOARD=0"
    [ -x "${CHROMIUM:-/usr/bin/chromium}" ] || die "DASHBOARD=1 needs Chromium (apt-get install chromium), or DASHBOARD=0"
fi
export OCTOISP_CP_CONFIG="$RUN/controlplane.toml"
"$CP" migrate >"$RUN/migrate.log" 2>&1 || die "migrations failed; see $RUN/migrate.log"
"$CP" provider create --slug scale --name "Scale run" --tier large >/dev/null
PASSWORD=scale-run-$(head -c 6 /dev/urandom | base64 | tr -dc a-zA-Z0-9)
OCTOISP_USER_PASSWORD="$PASSWORD" "$CP" user create --provider scale --email admin@scale.example \
    --name "Scale Admin" --role "Provider Admin" >/dev/null

start_cp() {
    "$CP" serve >>"$RUN/controlplane.log" 2>&1 &
    CP_PID=$!
    PIDS+=("$CP_PID")
    for _ in $(seq 300); do curl -fs "http://127.0.0.1:$HTTP_PORT/readyz" >/dev/null 2>&1 && return 0; sleep 0.2; done
    die "the control plane is not ready; see $RUN/controlplane.log"
}
say "starting the control plane"
start_cp

say "writing the fleet's agent configurations"
# shellcheck disable=SC2086
"$FLEET" config --out "$RUN/fleet" --agents "$AGENTS" --cpes "$CPES" --snmp "$SNMP" \
    --inform-interval-secs "$INFORM_INTERVAL" --snmp-interval-secs "$SNMP_INTERVAL" \
    --acs-port-base "$ACS_BASE" --snmp-port "$SNMP_PORT" --server "127.0.0.1:$QUIC_PORT" \
    --metrics-port-base "$METRICS_BASE" $FLEET_ARGS >/dev/null
AGENT_PIDS=()
for k in $(seq 0 $((AGENTS - 1))); do
    "$CP" pop create --provider scale --slug "pop-$k" --name "POP $k" >/dev/null
    token=$("$CP" pop enroll-token --provider scale --pop "pop-$k" --ttl-secs 600)
    OCTOISP_AGENT_CONFIG="$RUN/fleet/agent-$k/agent.toml" "$AGENT" enroll --server "127.0.0.1:$QUIC_PORT" \
        --token "$token" >/dev/null
    OCTOISP_AGENT_CONFIG="$RUN/fleet/agent-$k/agent.toml" "$AGENT" run >"$RUN/agent-$k.log" 2>&1 &
    AGENT_PIDS+=($!); PIDS+=($!)
done
for k in $(seq 0 $((AGENTS - 1))); do
    for _ in $(seq 300); do
        curl -fs "http://127.0.0.1:$((METRICS_BASE + k))/metrics" >/dev/null 2>&1 && break; sleep 0.2
    done
done

TOKEN=$(curl -fs "http://127.0.0.1:$HTTP_PORT/api/v1/auth/login" -H 'content-type: application/json' \
    -d "{\"email\":\"admin@scale.example\",\"password\":\"$PASSWORD\"}" | sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p')
[ -n "$TOKEN" ] || die "cannot sign in to the API"
api() {  # api METHOD PATH [JSON]: prints the answer; fails on an HTTP error
    curl -fsS -X "$1" "http://127.0.0.1:$HTTP_PORT/api/v1$2" -H "authorization: Bearer $TOKEN" \
        -H 'content-type: application/json' ${3:+-d "$3"}
}

if [ "$ALERTS" = 1 ]; then
    # Alert latency: the flapping devices' first interface goes down and up every --flap-secs; a rule on
    # if.oper_status (2 = down) for POP pop-0, without flap detection so that every change notifies, and a
    # webhook channel to a local stand-in that records when each notification arrives.
    say "alerts: rule 'interface down' on pop-0, webhook to the stand-in on 127.0.0.1:$HOOK_PORT"
    python3 tools/fleetsim/scripts/webhook_standin.py "$HOOK_PORT" "$RUN/webhooks.jsonl" 2>"$RUN/webhook.log" &
    PIDS+=($!)
    pop0=$(psql "$DB_ADMIN" -XtAc "select id from pops where slug = 'pop-0'")
    api POST /alert-rules "{\"name\":\"Interface down\",\"rule_key\":\"if-down\",\"kind\":\"threshold\",
        \"metric\":\"if.oper_status\",\"op\":\">\",\"threshold\":1.5,\"recover_threshold\":1.5,\"for_secs\":0,
        \"flap_enabled\":false,\"scope\":\"pop\",\"scope_id\":\"$pop0\",\"severity\":\"warning\"}" >/dev/null
    channel=$(api POST /notifications/channels "{\"name\":\"Stand-in\",\"kind\":\"webhook\",
        \"config\":{\"url\":\"http://127.0.0.1:$HOOK_PORT/hook\"},\"rate_limit_per_minute\":10000}" |
        sed -n 's/.*"id":"\([^"]*\)".*/\1/p' | head -n 1)
    [ -n "$channel" ] || die "cannot create the webhook channel"
    api POST /notifications/policies "{\"name\":\"All to the stand-in\",\"channel_id\":\"$channel\"}" >/dev/null
fi

say "starting the fleet: $CPES CPEs, $SNMP SNMP devices, $AGENTS agents, $DURATION_MIN min"
DUR=$((DURATION_MIN * 60))
# shellcheck disable=SC2086
# One socket per SNMP device: a process holds at most (hard limit - 2,000) of them.
SIM_PROCS=${SIM_PROCS:-$(( (SNMP + $(ulimit -Hn) - 2001) / ($(ulimit -Hn) - 2000) ))}
[ "$SIM_PROCS" -ge 1 ] || SIM_PROCS=1
FLEET_PIDS=()
for s in $(seq 0 $((SIM_PROCS - 1))); do
    # shellcheck disable=SC2086
    "$FLEET" run --duration-secs "$DUR" --stats-file "$RUN/fleet-stats-$s.json" --agents "$AGENTS" --cpes "$CPES" \
        --snmp "$SNMP" --inform-interval-secs "$INFORM_INTERVAL" --snmp-interval-secs "$SNMP_INTERVAL" \
        --acs-port-base "$ACS_BASE" --snmp-port "$SNMP_PORT" --shard "$s" --shards "$SIM_PROCS" $FLEET_ARGS \
        >"$RUN/fleetsim-$s.log" 2>&1 &
    FLEET_PIDS+=($!); PIDS+=($!)
done
FLEET_PID=${FLEET_PIDS[0]}
FLEET_END=$(( $(date +%s) + DUR ))
fleet_running() { local p; for p in "${FLEET_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && return 0; done; return 1; }

DASH_PID=
if [ "$DASHBOARD" = 1 ]; then
    say "opening the dashboard in headless Chromium"
    node tools/fleetsim/scripts/dashboard.mjs "http://127.0.0.1:$HTTP_PORT" admin@scale.example "$PASSWORD" \
        $((DUR + DRAIN_MAX_SECS + 120)) "$RUN/dashboard.json" >"$RUN/dashboard.log" 2>&1 &
    DASH_PID=$!; PIDS+=("$DASH_PID")
fi

# API latency: GET /api/v1/summary (the dashboard's numbers) once a second, in the background.
(
    while fleet_running; do
        curl -s -o /dev/null -w "%{time_total} %{http_code}\n" -H "authorization: Bearer $TOKEN" \
            "http://127.0.0.1:$HTTP_PORT/api/v1/summary" 2>/dev/null || echo "- down"
        sleep 1
    done
) >"$RUN/api.csv" &
PIDS+=($!)

# A cluster running with autovacuum = off (some shared development servers) keeps no statistics and reclaims no
# dead rows: what production's autovacuum does is done here once a minute, said aloud, and logged.
if [ "$(psql "$DB_ADMIN" -XAtc "SHOW autovacuum" 2>/dev/null)" = off ]; then
    say "this PostgreSQL runs with autovacuum = off: VACUUM (ANALYZE) of $DB once a minute stands in for it"
    (
        while fleet_running; do
            sleep 60
            start=$SECONDS
            psql "$DB_ADMIN" -qXAt -c "VACUUM (ANALYZE) devices, series, agents, ingested_batches, rollup_pending" \
                -c "ANALYZE" >/dev/null 2>&1 || echo "VACUUM failed"
            echo "$(date -u +%H:%M:%S) VACUUM (ANALYZE) took $((SECONDS - start)) s"
        done
    ) >"$RUN/vacuum.log" 2>&1 &
    PIDS+=($!)
fi

# Samplers: CPU (% of one core) and RSS per process from /proc, outbox depths, ingest lag.
declare -A PREV PREV_T
HZ=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
now_cs() { awk '{printf "%d", $1 * 100}' /proc/uptime; }  # centiseconds since boot
# pct NAME TICKS: sets PCT to the CPU % of one core since NAME's previous sample, over the time that really
# passed (a sampling round takes longer than SAMPLE_SECS on a loaded machine); empty on NAME's first sample.
# Not in a $(...): it keeps its state in PREV and PREV_T.
pct() {
    local now t d dt
    now=$2; t=$(now_cs)
    d=$(( now - ${PREV[$1]:-$now} )); dt=$(( t - ${PREV_T[$1]:-$t} ))
    PREV[$1]=$now; PREV_T[$1]=$t
    [ "$d" -ge 0 ] || d=0
    PCT=
    if [ "$dt" -gt 0 ]; then PCT=$(awk -v d="$d" -v hz="$HZ" -v dt="$dt" 'BEGIN{printf "%.1f", 100*d/hz/(dt/100)}'); fi
}
rss_mb() { awk '/^VmRSS:/ {printf "%.0f", $2 / 1024}' "/proc/$1/status" 2>/dev/null || echo 0; }
pg_pids() { pgrep -f "postgres: .* $DB " || true; }
echo "t,process,cpu_pct,rss_mb" >"$RUN/samples.csv"
echo "t,agent,outbox_samples,outbox_records,batches_pending" >"$RUN/outbox.csv"
echo "t,ingest_lag_s" >"$RUN/lag.csv"
echo "t,load1,load5,load15" >"$RUN/load.csv"
# Polls by result (summed over the agents, cumulative), polls that started late, and the kernel's UDP receive
# buffer drops (host-wide, cumulative): when polls time out, whether the answers were dropped or came late.
echo "t,polls_ok,polls_timeout,polls_error,polls_late,udp_rcvbuf_errors" >"$RUN/polls.csv"
T0=$(date +%s)
sample_all() {
    local t=$(( $(date +%s) - T0 )) name pid now d
    local -A procs=([controlplane]="${CP_PID:-}")
    for k in "${!FLEET_PIDS[@]}"; do procs[fleetsim-$k]=${FLEET_PIDS[$k]}; done
    for k in "${!AGENT_PIDS[@]}"; do procs[agent-$k]=${AGENT_PIDS[$k]}; done
    for name in "${!procs[@]}"; do
        pid=${procs[$name]}; [ -n "$pid" ] && [ -d "/proc/$pid" ] || continue
        pct "$name" "$(cpu_ticks "$pid")"
        echo "$t,$name,$PCT,$(rss_mb "$pid")" >>"$RUN/samples.csv"
    done
    # PostgreSQL: the backends of this database, summed.
    local tot=0 rss=0
    for pid in $(pg_pids); do tot=$(( tot + $(cpu_ticks "$pid") )); rss=$(( rss + $(rss_mb "$pid") )); done
    pct pg "$tot"
    echo "$t,postgres-backends,$PCT,$rss" >>"$RUN/samples.csv"
    for k in "${!AGENT_PIDS[@]}"; do
        { OCTOISP_AGENT_CONFIG="$RUN/fleet/agent-$k/agent.toml" timeout 20 "$AGENT" status 2>/dev/null || true; } |
            awk -v t="$t" -v k="$k" '/^outbox:/ {s=$4; r=$6} /^batches in flight/ {b=$NF} END {print t "," k "," s "," r "," b}' \
            >>"$RUN/outbox.csv"
    done
    # Newest sample of one series in 500 (an index lookup each: max(ts) over the whole table would scan it and
    # load PostgreSQL more as the run goes on).
    echo "$t,$(timeout 20 psql "$DB_ADMIN" -XtAc "select coalesce(round(extract(epoch from now() - max(m))::numeric, 1)::text, '-')
        from (select (select max(ts) from samples x where x.series_id = s.id) m from series s where s.id % 500 = 0) y" \
        2>/dev/null || echo -)" >>"$RUN/lag.csv"
    echo "$t,$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' ,)" >>"$RUN/load.csv"
    local ok=0 to=0 err=0 late=0
    for k in "${!AGENT_PIDS[@]}"; do
        read -r a b c e < <(curl -fs --max-time 5 "http://127.0.0.1:$((METRICS_BASE + k))/metrics" | awk '
            /^octoisp_agent_snmp_polls_total\{result="ok"\}/ {a=$2} /^octoisp_agent_snmp_polls_total\{result="timeout"\}/ {b=$2}
            /^octoisp_agent_snmp_polls_total\{result="error"\}/ {c=$2} /^octoisp_agent_snmp_polls_late_total/ {e=$2}
            END {printf "%d %d %d %d\n", a, b, c, e}') || continue
        ok=$(( ok + a )); to=$(( to + b )); err=$(( err + c )); late=$(( late + e ))
    done
    echo "$t,$ok,$to,$err,$late,$(awk '/^Udp:/ {n++; if (n == 2) print $6}' /proc/net/snmp)" >>"$RUN/polls.csv"
    # The polls counted while the fleet ran: the last count taken before its planned end (once the simulator has
    # stopped, every poll times out).
    if [ "$(date +%s)" -lt "$FLEET_END" ]; then POLLS_BY=([ok]=$ok [timeout]=$to [error]=$err); fi
}
SAMPLE_SECS=5
CUT_START=-1; CUT_END=-1
if [ "$CUT_MIN" -gt 0 ]; then
    CUT_START=$(( DUR / 2 - CUT_MIN * 30 )); CUT_END=$(( CUT_START + CUT_MIN * 60 ))
    say "the control plane will be down from t=${CUT_START}s to t=${CUT_END}s"
fi
CUT_DONE=0
PROFILED=0
profile_mid_run() {  # top once, and perf (PERF=1) of the busiest processes, in the background
    top -b -n 1 -w 200 >"$RUN/top-mid.txt" 2>&1 || true
    [ "$PERF" = 1 ] && command -v perf >/dev/null || return 0
    local -A who=([controlplane]="${CP_PID:-}" [agent-0]="${AGENT_PIDS[0]}" [fleetsim-0]="$FLEET_PID"
        [postgres]="$(pg_pids | tr '\n' , | sed 's/,$//')")
    local name
    for name in "${!who[@]}"; do
        [ -n "${who[$name]}" ] || continue
        ( perf record -q -F 49 -p "${who[$name]}" -o "$RUN/perf-$name.data" -- sleep 20 >/dev/null 2>&1 &&
          perf report -q --stdio --no-children -i "$RUN/perf-$name.data" --sort comm,dso,symbol 2>/dev/null |
          head -n 60 >"$RUN/perf-$name.txt"; rm -f "$RUN/perf-$name.data" ) &
    done
}
# polls_by NAME: the agents' own account of their polls (octoisp_agent_snmp_polls_total by result, summed) into
# the associative array NAME.
polls_by() {
    local -n into=$1
    local k res n
    into=([ok]=0 [timeout]=0 [error]=0)
    for k in "${!AGENT_PIDS[@]}"; do
        while read -r res n; do
            into[$res]=$(( ${into[$res]:-0} + ${n%.*} ))
        done < <(curl -fs --max-time 5 "http://127.0.0.1:$((METRICS_BASE + k))/metrics" |
            sed -n 's/^octoisp_agent_snmp_polls_total{result="\([a-z]*\)"} \([0-9.e+]*\)$/\1 \2/p')
    done
}
# POLLS_BY: filled by sample_all while the fleet runs.
declare -A POLLS_BY=([ok]=0 [timeout]=0 [error]=0) POLLS_END
while fleet_running; do
    sleep "$SAMPLE_SECS"
    sample_all
    t=$(( $(date +%s) - T0 ))
    if [ "$PROFILED" = 0 ] && [ "$t" -ge $(( DUR * 3 / 5 )) ] && [ "$CUT_MIN" = 0 ]; then
        PROFILED=1; profile_mid_run
    fi
    if [ "$CUT_START" -ge 0 ] && [ "$t" -ge "$CUT_START" ] && [ "$CUT_DONE" = 0 ]; then
        say "t=${t}s: stopping the control plane for $CUT_MIN min"
        kill "$CP_PID"; wait "$CP_PID" 2>/dev/null || true; CP_PID=""; CUT_DONE=1
        # The cut lasts CUT_MIN from the moment it really began (a sampling round may start it late).
        CUT_END=$(( $(date +%s) - T0 + CUT_MIN * 60 ))
    fi
    if [ "$CUT_DONE" = 1 ] && [ "$t" -ge "$CUT_END" ]; then
        say "t=${t}s: starting the control plane again"
        start_cp; CUT_DONE=2
    fi
done
for p in "${FLEET_PIDS[@]}"; do wait "$p" || die "the simulator failed; see $RUN/fleetsim-*.log"; done
[ -z "${CP_PID:-}" ] && start_cp

say "the fleet stopped; waiting for the agents' outboxes to drain (at most $DRAIN_MAX_SECS s)"
drain_start=$(date +%s)
while :; do
    sample_all
    waiting=$(tail -n "$AGENTS" "$RUN/outbox.csv" | awk -F, '{w += $3 + $4 + $5} END {print w + 0}')
    [ "$waiting" = 0 ] && break
    [ $(( $(date +%s) - drain_start )) -ge "$DRAIN_MAX_SECS" ] && { say "outboxes not drained: $waiting waiting"; break; }
    sleep "$SAMPLE_SECS"
done
DRAIN_SECS=$(( $(date +%s) - drain_start ))

# Losses. Samples: what the agents had acknowledged (each agent stops only after its acks) vs the rows stored.
acked=0
for k in "${!AGENT_PIDS[@]}"; do
    n=$(curl -fs "http://127.0.0.1:$((METRICS_BASE + k))/metrics" | awk '/^octoisp_agent_uplink_samples_acked_total/ {print $2}')
    acked=$(( acked + ${n%.*} ))
done
dropped=0
for k in "${!AGENT_PIDS[@]}"; do
    n=$(curl -fs "http://127.0.0.1:$((METRICS_BASE + k))/metrics" | awk '/^octoisp_agent_outbox_samples_dropped_total/ {print $2}')
    dropped=$(( dropped + ${n%.*} ))
done
# The polls at the end: the ok ones that finished after the stop, and the drain's timeouts (its devices are gone).
polls_by POLLS_END
for p in "${AGENT_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
if [ -n "$DASH_PID" ]; then
    kill -TERM "$DASH_PID" 2>/dev/null || true
    for _ in $(seq 60); do kill -0 "$DASH_PID" 2>/dev/null || break; sleep 0.5; done
fi
q() { psql "$DB_ADMIN" -XtAc "$1"; }
st() {  # st "['counters']['x']": the sum over the simulator processes' stats files
    python3 -c "import json,glob; print(sum(json.load(open(f))$1 for f in glob.glob('$RUN/fleet-stats-*.json')))"
}
stored_samples=$(q "select count(*) from samples")
stored_polls=$(q "select count(*) from (select distinct s.device_id, x.ts from samples x join series s on s.id = x.series_id) p")
cpe_devices=$(q "select count(*) from devices where device_key not like 'snmp:%'")
ev_bootstrap=$(q "select count(*) from events where kind = 'cwmp.bootstrap'")
ev_boot=$(q "select count(*) from events where kind = 'cwmp.boot'")
registered=$(st "['cpes_registered']")
reg_ok=$(st "['counters']['registrations_ok']"); reboots_ok=$(st "['counters']['reboots_ok']")
polls=$(st "['counters']['snmp_polls_answered']")
informs_sent=$(st "['counters']['informs_sent']"); informs_ok=$(st "['counters']['informs_ok']")
informs_failed=$(st "['counters']['informs_failed']")
retrans=$(st "['counters'].get('snmp_poll_retransmissions', 0)")

# Alert latency: each notification the stand-in received, against its events' sample time (event_ts: the poll
# that showed the change) and commit time (created_at: the engine wrote it).
alert_latency=-; alert_engine=-; alert_notify=-; alert_n=0; alert_events=0
if [ "$ALERTS" = 1 ] && [ -s "$RUN/webhooks.jsonl" ]; then
    q "select id, extract(epoch from event_ts), extract(epoch from created_at), kind from alert_events" >"$RUN/alert_events.txt"
    read -r alert_n alert_events alert_latency alert_engine alert_notify < <(python3 - "$RUN/webhooks.jsonl" "$RUN/alert_events.txt" <<'PY'
import json, sys
ev = {}
for line in open(sys.argv[2]):
    f = line.strip().split("|")
    if len(f) == 4:
        ev[f[0]] = (float(f[1]), float(f[2]))
tot, eng, noti = [], [], []
for line in open(sys.argv[1]):
    d = json.loads(line)
    for i in d["event_ids"][:1]:
        e = ev.get(str(i))
        if e:
            tot.append(d["arrived"] - e[0]); eng.append(e[1] - e[0]); noti.append(d["arrived"] - e[1])
def q(v):
    v = sorted(v)
    if not v:
        return "-"
    p = lambda x: v[min(len(v) - 1, int(len(v) * x))]
    return f"{p(0.5):.1f}/{p(0.95):.1f}/{v[-1]:.1f}"
print(len(tot), len(ev), q(tot), q(eng), q(noti))
PY
)
fi
dash_summary=-
if [ -s "$RUN/dashboard.json" ]; then
    dash_summary=$(python3 -c "import json; d=json.load(open('$RUN/dashboard.json')); print(f\"signed in {d['signed_in']}, live socket opened {d['ws_opened']}x, {d['ws_messages']} live messages {d['ws_by_kind']}, {d['summary_responses']} dashboard refetches (failed {d['summary_failed']}; p50/p95/max {d.get('summary_ms_p50')}/{d.get('summary_ms_p95')}/{d.get('summary_ms_max')} ms), page errors {len(d['page_errors'])}\")")
fi

stats() {  # stats FILE COLUMN FILTER-COLUMN FILTER-VALUE: mean and max of numeric values
    awk -F, -v c="$2" -v fc="$3" -v fv="$4" 'NR > 1 && (fc == 0 || $fc == fv) && $c ~ /^[0-9.]+$/ {s += $c; n++; if ($c > m) m = $c}
        END {if (n) printf "%.1f / %.1f", s / n, m; else printf "-"}' "$1"
}
{
    echo "# Scale run $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD)"
    echo "fleet: $CPES CPEs (informs every $INFORM_INTERVAL s), $SNMP SNMP devices (polled every $SNMP_INTERVAL s), $AGENTS agents, $DURATION_MIN min, profile $PROFILE, control plane cut ${CUT_MIN} min"
    echo "machine: $(nproc) cores, load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    echo "| process | CPU % of one core (mean / max) | RSS MB (mean / max) |"
    echo "| --- | --- | --- |"
    for p in controlplane $(for k in "${!AGENT_PIDS[@]}"; do echo "agent-$k"; done) \
        $(for k in "${!FLEET_PIDS[@]}"; do echo "fleetsim-$k"; done) postgres-backends; do
        echo "| $p | $(stats "$RUN/samples.csv" 3 2 "$p") | $(stats "$RUN/samples.csv" 4 2 "$p") |"
    done
    echo
    echo "| measure | value |"
    echo "| --- | --- |"
    echo "| ingest lag s (newest sample vs now; mean / max) | $(stats "$RUN/lag.csv" 2 0 0) |"
    echo "| API GET /api/v1/summary s (mean / max) | $(awk '$2 == 200' "$RUN/api.csv" | awk '{s += $1; n++; if ($1 > m) m = $1} END {if (n) printf "%.3f / %.3f (%d requests)", s/n, m, n}') |"
    echo "| API p50 / p95 s | $(awk '$2 == 200 {print $1}' "$RUN/api.csv" | sort -n | awk '{a[NR] = $1} END {if (NR) {i = int(NR * 0.5) + 1; j = int(NR * 0.95) + 1; if (i > NR) i = NR; if (j > NR) j = NR; printf "%.3f / %.3f", a[i], a[j]}}') |"
    echo "| API requests failed (control plane down included) | $(awk '$2 != 200' "$RUN/api.csv" | wc -l) |"
    echo "| outbox samples waiting, per agent (mean / max) | $(stats "$RUN/outbox.csv" 3 0 0) |"
    echo "| outbox records waiting, per agent (mean / max) | $(stats "$RUN/outbox.csv" 4 0 0) |"
    echo "| drain after the fleet stopped s | $DRAIN_SECS |"
    echo "| informs sent / ok / failed | $informs_sent / $informs_ok / $informs_failed |"
    echo "| SNMP polls at the agents while the fleet ran: ok / timeout / error | ${POLLS_BY[ok]} / ${POLLS_BY[timeout]} / ${POLLS_BY[error]} |"
    echo "| polls timed out after the last count before the fleet's planned end (its devices gone; not counted above) | $(( POLLS_END[timeout] - POLLS_BY[timeout] )) |"
    echo "| retransmitted poll starts answered again (not counted as polls) | $retrans |"
    echo "| alert notifications received / alert events | $alert_n / $alert_events |"
    echo "| alert latency s, sample time → webhook received (p50/p95/max) | $alert_latency |"
    echo "| of which: sample time → event committed; event → webhook (p50/p95/max) | $alert_engine; $alert_notify |"
    echo "| load average (mean / max of load1) | $(stats "$RUN/load.csv" 2 0 0) |"
    echo "| dashboard in Chromium | $dash_summary |"
    echo
    echo "| loss check | simulator | PostgreSQL | lost |"
    echo "| --- | --- | --- | --- |"
    echo "| CPEs registered → devices | $registered | $cpe_devices | $((registered - cpe_devices)) |"
    echo "| BOOTSTRAP informs → cwmp.bootstrap events | $reg_ok | $ev_bootstrap | $((reg_ok - ev_bootstrap)) |"
    echo "| BOOT informs (registrations + reboots) → cwmp.boot events | $((reg_ok + reboots_ok)) | $ev_boot | $((reg_ok + reboots_ok - ev_boot)) |"
    echo "| polls answered → (device, ts) with samples | $polls | $stored_polls | $((polls - stored_polls)) |"
    echo "| polls answered → polls ok at the agents (the rest failed after their first GET) | $polls | ${POLLS_END[ok]} (agents, at the end) | $((polls - POLLS_END[ok])) |"
    echo "| samples acknowledged by the control plane → rows | $acked | $stored_samples | $((acked - stored_samples)) |"
    echo "| samples dropped by the agents (disk cap) | | | $dropped |"
} | tee "$RUN/summary.txt"
say "summary written to $RUN/summary.txt"
