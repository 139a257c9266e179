#!/usr/bin/env bash
# Diagnostics benchmarks, each side by side with the classic tool in the same run (results go to
# docs/BENCHMARKS.md, section "Diagnostics"). Needs root (network namespaces), fping, nmap, mtr-tiny, socat.
# All traffic stays inside network namespaces this script creates and deletes:
#   1. ping sweep of 198.18.0.0/16 (65,534 addresses; RFC 2544 benchmark range): 198.18.7.0/24 answers
#      (assigned to lo), the rest is routed into a veth towards a namespace that drops it. octoisp-agent sweep
#      (adaptive wait after the last probe, -W 0.5 as its longest; then --fixed-wait, fping's behaviour) vs
#      fping -t 500 -i 0 -r 0.
#   2. TCP scan of all 65,535 ports of 127.0.0.1 in a namespace with 5 listeners: octoisp-agent scan (SYN scan,
#      as root; process cap raised to 1,000,000 packets/s) vs nmap -T5 (SYN scan, as root), then both connect
#      scans, and masscan where it runs. 2b: the same SYN scans of a host in another namespace over a veth, and
#      masscan's send rate there.
#   3. MTR of 100 cycles through two routers (the test topology): octoisp-agent mtr vs mtr --report.
# Usage: scripts/bench-diag.sh [path/to/octoisp-agent]   (default: a release build)
set -euo pipefail
cd "$(dirname "$0")/.."
AGENT=${1:-}
if [[ -z $AGENT ]]; then
    cargo build --release -p octoisp-agent >&2
    AGENT=${CARGO_TARGET_DIR:-target}/release/octoisp-agent
fi
AGENT=$(realpath "$AGENT")
P=ob$$
NS=("${P}s" "${P}x" "${P}p" "${P}a" "${P}r1" "${P}r2" "${P}b")
cleanup() {
    for ns in "${NS[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
    [[ -n ${SOCAT_PIDS:-} ]] && kill $SOCAT_PIDS 2>/dev/null || true
}
trap cleanup EXIT
TIMEFORMAT='%R s wall, %U s user, %S s sys'
x() { ip netns exec "$@"; }

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r)"
echo "== commit: $(git rev-parse --short HEAD)"
echo "== load at start: $(uptime)"

echo "== 1. ping sweep of 198.18.0.0/16 (65,534 addresses, 256 live), 1 probe each, 500 ms timeout"
S=${P}s
ip netns add "$S"
x "$S" ip link set lo up
x "$S" ip addr add 198.18.7.0/24 dev lo
# The rest of the /16 leaves through a veth without ARP into a namespace that drops it (no dummy driver needed).
ip netns add "${P}x"
x "${P}x" ip link set lo up
ip link add d0 netns "$S" type veth peer name d1 netns "${P}x"
x "$S" ip link set d0 arp off up
x "${P}x" ip link set d1 up
x "$S" ip route add 198.18.0.0/16 dev d0
echo "-- octoisp-agent sweep -r 1000000 -W 0.5 (adaptive wait, --min-wait 0.1 by default)"
time (x "$S" "$AGENT" sweep 198.18.0.0/16 -n -W 0.5 -r 1000000 --max-pps 1000000 --json > /tmp/$P.sweep.json)
echo "   alive: $(grep -c '"ip"' /tmp/$P.sweep.json)"
echo "-- octoisp-agent sweep -r 1000000 -W 0.5 --fixed-wait (the whole 500 ms after the last probe, like fping)"
time (x "$S" "$AGENT" sweep 198.18.0.0/16 -n -W 0.5 --fixed-wait -r 1000000 --max-pps 1000000 --json > /tmp/$P.sweep2.json)
echo "   alive: $(grep -c '"ip"' /tmp/$P.sweep2.json)"
echo "-- fping -g -c1 -t500 -i0 -r0 (fping's fastest)"
time (x "$S" fping -g 198.18.0.0/16 -a -q -t 500 -i 0 -r 0 > /tmp/$P.fping.txt 2>/dev/null || true)
echo "   alive: $(wc -l < /tmp/$P.fping.txt)"
grep -o '"ip": "[^"]*"' /tmp/$P.sweep.json | cut -d'"' -f4 | sort > /tmp/$P.a
sort /tmp/$P.fping.txt > /tmp/$P.b
if cmp -s /tmp/$P.a /tmp/$P.b; then echo "   same hosts found"; else echo "   DIFFERENT hosts found"; fi

echo "== 2. TCP scan of 65,535 ports of 127.0.0.1 (5 listeners)"
N=${P}p
ip netns add "$N"
x "$N" ip link set lo up
SOCAT_PIDS=""
for port in 22 80 443 8080 50000; do
    x "$N" socat TCP-LISTEN:$port,fork,reuseaddr SYSTEM:true >/dev/null 2>&1 &
    SOCAT_PIDS="$SOCAT_PIDS $!"
done
sleep 0.5
echo "-- octoisp-agent scan -p - --no-banner (SYN scan)"
time (x "$N" "$AGENT" scan 127.0.0.1 -p - --no-banner --method syn --max-pps 1000000 --json > /tmp/$P.scan.json)
echo "   method: $(grep -o '"method": "[a-z]*"' /tmp/$P.scan.json)"
echo "   open: $(grep -B4 '"state": "open"' /tmp/$P.scan.json | grep -o '"port": [0-9]*' | cut -d' ' -f2 | xargs)"
echo "   half-open connections left: $(x "$N" ss -Htn state syn-recv | wc -l)"
echo "-- octoisp-agent scan -p - --no-banner --method connect"
time (x "$N" bash -c "ulimit -n 4096; '$AGENT' scan 127.0.0.1 -p - --no-banner --method connect --max-parallel 1024 --json" > /tmp/$P.scanc.json)
echo "   open: $(grep -B4 '"state": "open"' /tmp/$P.scanc.json | grep -o '"port": [0-9]*' | cut -d' ' -f2 | xargs)"
echo "-- nmap -T5 -p- (SYN scan as root)"
time (x "$N" nmap -T5 -p- -n -Pn 127.0.0.1 -oG - > /tmp/$P.nmap.txt)
echo "   open: $(grep -o '[0-9]*/open' /tmp/$P.nmap.txt | cut -d/ -f1 | xargs)"
echo "-- nmap -T5 -sT -p- (connect scan, like ours)"
time (x "$N" nmap -T5 -sT -p- -n -Pn 127.0.0.1 -oG - > /tmp/$P.nmapt.txt)
echo "   open: $(grep -o '[0-9]*/open' /tmp/$P.nmapt.txt | cut -d/ -f1 | xargs)"
if command -v masscan >/dev/null; then
    echo "-- masscan -p0-65535 --rate 1000000 (loopback: usually cannot run)"
    time (x "$N" masscan 127.0.0.1 -p0-65535 --rate 1000000 -e lo 2>&1 | tail -2 || true)
fi

echo "== 2b. SYN scan of 65,535 ports of a host in another namespace over a veth (5 listeners)"
V=${P}v T=${P}t
NS+=("$V" "$T")
ip netns add "$V"; ip netns add "$T"
x "$V" ip link set lo up; x "$T" ip link set lo up
ip link add v0 netns "$V" type veth peer name t0 netns "$T"
ip -n "$V" addr add 198.51.100.1/24 dev v0; ip -n "$V" link set v0 up
ip -n "$T" addr add 198.51.100.2/24 dev t0; ip -n "$T" link set t0 up
for port in 22 80 443 8080 50000; do
    x "$T" socat TCP-LISTEN:$port,fork,reuseaddr SYSTEM:true >/dev/null 2>&1 &
    SOCAT_PIDS="$SOCAT_PIDS $!"
done
x "$V" "$AGENT" ping -q -c 2 -i 0.2 198.51.100.2 >/dev/null
echo "-- octoisp-agent scan -p - --no-banner (SYN scan)"
time (x "$V" "$AGENT" scan 198.51.100.2 -p - --no-banner --method syn --max-pps 1000000 --json > /tmp/$P.vscan.json)
echo "   open: $(grep -B4 '"state": "open"' /tmp/$P.vscan.json | grep -o '"port": [0-9]*' | cut -d' ' -f2 | xargs)"
echo "   half-open connections left: $(x "$T" ss -Htn state syn-recv | wc -l)"
echo "-- nmap -T5 -p- (SYN scan as root)"
time (x "$V" nmap -T5 -p- -n -Pn 198.51.100.2 -oG - > /tmp/$P.vnmap.txt)
echo "   open: $(grep -o '[0-9]*/open' /tmp/$P.vnmap.txt | cut -d/ -f1 | xargs)"
if command -v masscan >/dev/null; then
    # masscan sends through its own raw socket and needs the next hop's MAC (here the target's: same link).
    # Its wall time is not comparable: after the last packet it counts its --wait down past zero for seconds
    # on a veth (masscan 1.3.2), so it is cut at 20 s and the send rate it printed is reported instead.
    mac=$(ip -n "$T" link show t0 | awk '/ether/ {print $2}')
    echo "-- masscan -p0-65535 --rate 10000000 --wait 0 --router-mac (target) -e v0 over the veth"
    out=$(timeout 20 ip netns exec "$V" masscan 198.51.100.2 -p0-65535 --rate 10000000 --wait 0 \
        --router-mac "$mac" -e v0 2>&1 | tr '\r' '\n' || true)
    rate=$(echo "$out" | grep -o 'rate: *[0-9.]*-kpps' | grep -o '[0-9.]*' | awk '$1 > 0' | sort -n | tail -1)
    if [[ -n $rate ]]; then
        echo "   highest send rate printed: $rate kpps, i.e. $(awk "BEGIN {printf \"%.3f\", 65536 / ($rate * 1000)}") s for 65,536 ports"
    else
        echo "   no send rate printed: $(echo "$out" | grep -m1 -i fail || echo '?')"
    fi
    echo "   open: $(echo "$out" | grep -o 'open port [0-9]*' | cut -d' ' -f3 | sort -n | xargs)"
fi

echo "== 3. MTR, 100 cycles, 0.1 s apart, A -> R1 -> R2 -> B"
A=${P}a R1=${P}r1 R2=${P}r2 B=${P}b
for ns in "$A" "$R1" "$R2" "$B"; do ip netns add "$ns"; x "$ns" ip link set lo up; done
for ns in "$R1" "$R2"; do x "$ns" sysctl -qw net.ipv4.ip_forward=1; done
for ns in "$A" "$R1" "$R2" "$B"; do x "$ns" sysctl -qw net.ipv4.icmp_ratelimit=0; done
ip link add a0 netns "$A" type veth peer name r1a netns "$R1"
ip link add r1b netns "$R1" type veth peer name r2a netns "$R2"
ip link add r2b netns "$R2" type veth peer name b0 netns "$B"
for spec in "$A a0 192.0.2.2/24" "$R1 r1a 192.0.2.1/24" "$R1 r1b 198.51.100.1/24" \
            "$R2 r2a 198.51.100.2/24" "$R2 r2b 203.0.113.1/24" "$B b0 203.0.113.2/24"; do
    set -- $spec
    ip -n "$1" addr add "$3" dev "$2"; ip -n "$1" link set "$2" up
done
ip -n "$A" route add default via 192.0.2.1
ip -n "$R1" route add 203.0.113.0/24 via 198.51.100.2
ip -n "$R2" route add 192.0.2.0/24 via 198.51.100.1
ip -n "$B" route add default via 203.0.113.1
echo "-- octoisp-agent mtr -c 100 -i 0.1"
time (x "$A" "$AGENT" mtr 203.0.113.2 -n -c 100 -i 0.1)
echo "-- mtr --report -c 100 -i 0.1"
time (x "$A" mtr --report --report-wide -n -c 100 -i 0.1 203.0.113.2)
echo "== load at end: $(uptime)"
rm -f /tmp/$P.*
