#!/usr/bin/env bash
# Runs the whole test suite: formatting, clippy, and every test against real PostgreSQL and QUIC on loopback.
# Reuses a PostgreSQL that already runs on 127.0.0.1:5432 with a trusted superuser; otherwise installs
# PostgreSQL from the distribution's packages (if missing) and starts a private cluster on port 55433.
# Redis likewise (127.0.0.1:6379, or a private one on 56380).
# Environment: OCTOISP_TEST_PG (admin URL to use), OCTOISP_TEST_REDIS, CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_pg_packages
ensure_pkg ip iproute2
# Real protocol peers the agent's tests talk to (SNMP agent and tools, ping/scan/trace peers, DNS server).
ensure_pkg snmpd snmpd
ensure_pkg snmpget snmp
ensure_pkg fping fping
ensure_pkg nmap nmap
ensure_pkg mtr mtr-tiny
ensure_pkg traceroute traceroute
ensure_pkg dig dnsutils
ensure_pkg dnsmasq dnsmasq-base
ensure_pkg iptables iptables
ensure_pkg nft nftables
# The report tests open the PDFs with poppler (pdftoppm renders a page, pdftotext reads the table).
ensure_pkg pdftoppm poppler-utils
if [ -z "${OCTOISP_TEST_PG:-}" ]; then
    if pg_superuser_ok "postgres://postgres@127.0.0.1:5432/postgres"; then
        export OCTOISP_TEST_PG="postgres://postgres@127.0.0.1:5432/postgres"
        say "reusing the PostgreSQL running on 127.0.0.1:5432"
    else
        start_private_pg "${OCTOISP_TEST_PG_DIR:-/var/tmp/octoisp-test-pg}" 55433 -c fsync=off
        export OCTOISP_TEST_PG="postgres://postgres@127.0.0.1:55433/postgres"
    fi
fi
if [ -z "${OCTOISP_TEST_REDIS:-}" ]; then
    if command -v redis-cli >/dev/null && redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then
        export OCTOISP_TEST_REDIS="redis://127.0.0.1:6379"
        say "reusing the Redis running on 127.0.0.1:6379"
    else
        start_private_redis "${OCTOISP_TEST_REDIS_DIR:-/var/tmp/octoisp-test-redis}" 56380
        export OCTOISP_TEST_REDIS="redis://127.0.0.1:56380"
    fi
fi
pg_superuser_ok "$OCTOISP_TEST_PG" || die "cannot reach PostgreSQL as a superuser at $OCTOISP_TEST_PG"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$(default_target_dir)}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
say "cargo fmt --check"
cargo fmt --all -- --check
say "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
# Licences, bans and sources of the crates; RustSec and npm advisories when their sources can be reached
# (scripts/supply-chain.sh says loudly when they cannot). OCTOISP_SKIP_SUPPLY_CHAIN=1 skips it.
if [ -z "${OCTOISP_SKIP_SUPPLY_CHAIN:-}" ]; then
    say "supply chain (scripts/supply-chain.sh)"
    scripts/supply-chain.sh
fi
say "building (the end-to-end tests run the real binaries)"
cargo build --workspace --all-targets --locked
if [ "$(id -u)" = 0 ] && [ -z "${OCTOISP_SKIP_PACKAGING:-}" ]; then
    say "packaging test (scripts/test-deb.sh: install, upgrade, purge in a clean Debian root)"
    scripts/test-deb.sh
else
    say "skipping the packaging test (needs root; OCTOISP_SKIP_PACKAGING unset)"
fi
say "running the tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast "$@"
else
    cargo test --workspace --locked --no-fail-fast "$@"
fi

# The web console (web/): unit tests (Vitest), the production build, and the end-to-end test in headless
# Chromium against the control plane built above and the same PostgreSQL and Redis. OCTOISP_SKIP_WEB=1 skips it.
if [ -z "${OCTOISP_SKIP_WEB:-}" ]; then
    ensure_pkg node nodejs
    ensure_pkg npm npm
    ensure_pkg chromium chromium
    node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' \
        || die "the web console needs Node.js 20 or newer (found $(node --version))"
    say "web console: npm ci, unit tests, build"
    (cd web && npm ci --no-audit --no-fund --loglevel=error && npm test && npm run build)
    say "web console: end-to-end test in headless Chromium"
    (cd web && OCTOISP_CP_BIN="$CARGO_TARGET_DIR/debug/octoisp-controlplane" node e2e/run.mjs)
fi
