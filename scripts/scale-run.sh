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
#   BASE_PORT [56000]    QUIC +443, HTTP +80, Redis (private, started here) +379, ACS +1000.., agent metrics +2000..
#   SNMP_PORT [16161]    UDP port of the simulated SNMP devices (127.20.x.y)
#   RUN_DIR [/var/tmp/octoisp-scale/DATE]  logs, samples.csv, api.csv, summary.txt
#   SKIP_BUILD=1         use the binaries already built
#   DRAIN_MAX_SECS [900] how long the agents' outboxes may take to drain at the end
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

CPES=${CPES:-10000}; SNMP=${SNMP:-2000}; AGENTS=${AGENTS:-2}; DURATION_MIN=${DURATION_MIN:-5}
INFORM_INTERVAL=${INFORM_INTERVAL:-300}; SNMP_INTERVAL=${SNMP_INTERVAL:-60}; CUT_MIN=${CUT_MIN:-0}
PROFILE=${PROFILE:-debug}; FLEET_ARGS=${FLEET_ARGS:-}; DRAIN_MAX_SECS=${DRAIN_MAX_SECS:-900}
ADMIN=${OCTOISP_SCALE_PG:-postgres://postgres@127.0.0.1:5432/postgres}
BASE=${BASE_PORT:-56000}; SNMP_PORT=${SNMP_PORT:-16161}
QUIC_PORT=$((BASE + 443)); HTTP_PORT=$((BASE + 80)); REDIS_PORT=$((BASE + 379))
ACS_BASE=$((BASE + 1000)); METRICS_BASE=$((BASE + 2000))
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

# PostgreSQL: a fresh database in the given cluster. Redis: a private one (never the shared instance's keys).
start_private_redis "$RUN/redis" "$REDIS_PORT"
fresh_run_config "$RUN" "$ADMIN" "$DB" "$QUIC_PORT" "$HTTP_PORT" "$REDIS_PORT"
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

say "starting the fleet: $CPES CPEs, $SNMP SNMP devices, $AGENTS agents, $DURATION_MIN min"
DUR=$((DURATION_MIN * 60))
# shellcheck disable=SC2086
"$FLEET" run --duration-secs "$DUR" --stats-file "$RUN/fleet-stats.json" --agents "$AGENTS" --cpes "$CPES" \
    --snmp "$SNMP" --inform-interval-secs "$INFORM_INTERVAL" --snmp-interval-secs "$SNMP_INTERVAL" \
    --acs-port-base "$ACS_BASE" --snmp-port "$SNMP_PORT" $FLEET_ARGS >"$RUN/fleetsim.log" 2>&1 &
FLEET_PID=$!; PIDS+=("$FLEET_PID")

# API latency: GET /api/v1/summary (the dashboard's numbers) once a second, in the background.
(
    while kill -0 "$FLEET_PID" 2>/dev/null; do
        curl -s -o /dev/null -w "%{time_total} %{http_code}\n" -H "authorization: Bearer $TOKEN" \
            "http://127.0.0.1:$HTTP_PORT/api/v1/summary" 2>/dev/null || echo "- down"
        sleep 1
    done
) >"$RUN/api.csv" &
PIDS+=($!)

# Samplers: CPU (% of one core) and RSS per process from /proc, outbox depths, ingest lag.
declare -A PREV
HZ=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
rss_mb() { awk '/^VmRSS:/ {printf "%.0f", $2 / 1024}' "/proc/$1/status" 2>/dev/null || echo 0; }
pg_pids() { pgrep -f "postgres: .* $DB " || true; }
echo "t,process,cpu_pct,rss_mb" >"$RUN/samples.csv"
echo "t,agent,outbox_samples,outbox_records,batches_pending" >"$RUN/outbox.csv"
echo "t,ingest_lag_s" >"$RUN/lag.csv"
T0=$(date +%s)
sample_all() {
    local t=$(( $(date +%s) - T0 )) name pid now d
    local -A procs=([controlplane]="${CP_PID:-}" [fleetsim]="$FLEET_PID")
    for k in "${!AGENT_PIDS[@]}"; do procs[agent-$k]=${AGENT_PIDS[$k]}; done
    for name in "${!procs[@]}"; do
        pid=${procs[$name]}; [ -n "$pid" ] && [ -d "/proc/$pid" ] || continue
        now=$(cpu_ticks "$pid"); d=$(( now - ${PREV[$name]:-$now} )); PREV[$name]=$now
        echo "$t,$name,$(awk -v d="$d" -v hz="$HZ" -v s="$SAMPLE_SECS" 'BEGIN{printf "%.1f", 100*d/hz/s}'),$(rss_mb "$pid")"
    done >>"$RUN/samples.csv"
    # PostgreSQL: the backends of this database, summed.
    local tot=0 rss=0
    for pid in $(pg_pids); do tot=$(( tot + $(cpu_ticks "$pid") )); rss=$(( rss + $(rss_mb "$pid") )); done
    d=$(( tot - ${PREV[pg]:-$tot} )); PREV[pg]=$tot
    [ "$d" -ge 0 ] || d=0
    echo "$t,postgres-backends,$(awk -v d="$d" -v hz="$HZ" -v s="$SAMPLE_SECS" 'BEGIN{printf "%.1f", 100*d/hz/s}'),$rss" >>"$RUN/samples.csv"
    for k in "${!AGENT_PIDS[@]}"; do
        { OCTOISP_AGENT_CONFIG="$RUN/fleet/agent-$k/agent.toml" timeout 20 "$AGENT" status 2>/dev/null || true; } |
            awk -v t="$t" -v k="$k" '/^outbox:/ {s=$4; r=$6} /^batches in flight/ {b=$NF} END {print t "," k "," s "," r "," b}' \
            >>"$RUN/outbox.csv"
    done
    echo "$t,$(timeout 20 psql "$DB_ADMIN" -XtAc "select coalesce(round(extract(epoch from now() - max(ts))::numeric, 1)::text, '-') from samples" 2>/dev/null || echo -)" >>"$RUN/lag.csv"
}
SAMPLE_SECS=5
CUT_START=-1; CUT_END=-1
if [ "$CUT_MIN" -gt 0 ]; then
    CUT_START=$(( DUR / 2 - CUT_MIN * 30 )); CUT_END=$(( CUT_START + CUT_MIN * 60 ))
    say "the control plane will be down from t=${CUT_START}s to t=${CUT_END}s"
fi
CUT_DONE=0
while kill -0 "$FLEET_PID" 2>/dev/null; do
    sleep "$SAMPLE_SECS"
    sample_all
    t=$(( $(date +%s) - T0 ))
    if [ "$CUT_START" -ge 0 ] && [ "$t" -ge "$CUT_START" ] && [ "$CUT_DONE" = 0 ]; then
        say "t=${t}s: stopping the control plane for $CUT_MIN min"
        kill "$CP_PID"; wait "$CP_PID" 2>/dev/null || true; CP_PID=""; CUT_DONE=1
    fi
    if [ "$CUT_DONE" = 1 ] && [ "$t" -ge "$CUT_END" ]; then
        say "t=${t}s: starting the control plane again"
        start_cp; CUT_DONE=2
    fi
done
wait "$FLEET_PID" || die "the simulator failed; see $RUN/fleetsim.log"
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
for p in "${AGENT_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
q() { psql "$DB_ADMIN" -XtAc "$1"; }
st() { python3 -c "import json,sys; d=json.load(open('$RUN/fleet-stats.json')); print(d$1)"; }
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
    for p in controlplane $(for k in "${!AGENT_PIDS[@]}"; do echo "agent-$k"; done) fleetsim postgres-backends; do
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
    echo
    echo "| loss check | simulator | PostgreSQL | lost |"
    echo "| --- | --- | --- | --- |"
    echo "| CPEs registered → devices | $registered | $cpe_devices | $((registered - cpe_devices)) |"
    echo "| BOOTSTRAP informs → cwmp.bootstrap events | $reg_ok | $ev_bootstrap | $((reg_ok - ev_bootstrap)) |"
    echo "| BOOT informs (registrations + reboots) → cwmp.boot events | $((reg_ok + reboots_ok)) | $ev_boot | $((reg_ok + reboots_ok - ev_boot)) |"
    echo "| polls answered → (device, ts) with samples | $polls | $stored_polls | $((polls - stored_polls)) |"
    echo "| samples acknowledged by the control plane → rows | $acked | $stored_samples | $((acked - stored_samples)) |"
    echo "| samples dropped by the agents (disk cap) | | | $dropped |"
} | tee "$RUN/summary.txt"
say "summary written to $RUN/summary.txt"
