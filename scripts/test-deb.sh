#!/usr/bin/env bash
# The packaging test: installs the .deb packages in a clean Debian root (mmdebstrap, no container), then checks
# what an operator relies on: the user, the files and their modes, the units, the binaries run, the shipped
# config validates and a bad key is named, an upgrade keeps the agent's data and a changed config, and a purge
# removes data, config and user.
#
#   scripts/test-deb.sh                  builds the packages from the debug binaries (PROFILE=dev) and tests them
#   DEBS=dir scripts/test-deb.sh         tests the packages already in dir
#
# The Debian root is built once from the distribution's mirror (apt's sources) and cached as a tarball in
# /var/cache/octoisp-debroot-<suite>.tar.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

[ "$(id -u)" = 0 ] || die "the packaging test needs root (chroot)"
ensure_pkg mmdebstrap mmdebstrap
ensure_pkg dpkg-deb dpkg
ensure_pkg jq jq

suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
cache=/var/cache/octoisp-debroot-$suite.tar
if [ ! -s "$cache" ]; then
    say "building a minimal Debian $suite root (once; cached in $cache)"
    mmdebstrap --quiet --variant=minbase --include=adduser,postgresql-client,ca-certificates \
        "$suite" "${cache%.tar}.partial.tar"
    mv "${cache%.tar}.partial.tar" "$cache"
fi

built=
if [ -z "${DEBS:-}" ]; then
    DEBS=$(mktemp -d /tmp/octoisp-debs.XXXXXX)
    built=$DEBS
    PROFILE=${PROFILE:-dev} OUT_DIR="$DEBS" scripts/build-deb.sh
fi
agent_deb=$(ls "$DEBS"/octoisp-agent_*.deb | head -n 1)
cp_deb=$(ls "$DEBS"/octoisp-controlplane_*.deb | head -n 1)

root=$(mktemp -d /tmp/octoisp-debroot.XXXXXX)
cleanup() {
    umount "$root/proc" 2>/dev/null || true
    rm -rf "$root"
    [ -z "$built" ] || rm -rf "$built"
}
trap cleanup EXIT
tar -C "$root" -xf "$cache"
mount -t proc proc "$root/proc"
mkdir -p "$root/debs"
cp "$agent_deb" "$cp_deb" "$root/debs/"
# No service may start inside the chroot.
printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"

in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; failures=$((failures + 1)); }
pass() { printf 'ok: %s\n' "$*" >&2; passes=$((passes + 1)); }
check() { local what=$1; shift; if "$@" >/dev/null 2>&1; then pass "$what"; else fail "$what"; fi; }
failures=0
passes=0

say "installing both packages"
in_root dpkg -i /debs/"$(basename "$agent_deb")" /debs/"$(basename "$cp_deb")" >/dev/null
check "user octoisp exists" in_root getent passwd octoisp
check "the binaries run" in_root /usr/bin/octoisp-agent --version
check "the control plane binary runs" in_root /usr/bin/octoisp-controlplane --version
check "agent config is a conffile" grep -qx /etc/octoisp/agent.toml "$root/var/lib/dpkg/info/octoisp-agent.conffiles"
check "controlplane config is a conffile" \
    grep -qx /etc/octoisp/controlplane.toml "$root/var/lib/dpkg/info/octoisp-controlplane.conffiles"
mode=$(in_root stat -c "%a %U:%G" /etc/octoisp/agent.toml)
[ "$mode" = "640 root:octoisp" ] && pass "agent config 640 root:octoisp" || fail "agent config mode is $mode"
owner=$(in_root stat -c "%U %a" /var/lib/octoisp/agent)
[ "$owner" = "octoisp 750" ] && pass "state dir owned by octoisp, 750" || fail "state dir is $owner"
unit=$root/lib/systemd/system/octoisp-agent.service
check "agent unit installed" test -f "$unit"
check "agent unit enabled" test -L "$root/etc/systemd/system/multi-user.target.wants/octoisp-agent.service"
check "agent unit: only CAP_NET_RAW and CAP_NET_BIND_SERVICE" \
    grep -qx 'AmbientCapabilities=CAP_NET_RAW CAP_NET_BIND_SERVICE' "$unit"
for key in 'User=octoisp' 'ProtectSystem=strict' 'ProtectHome=yes' 'NoNewPrivileges=yes' \
    'StateDirectory=octoisp/agent'; do
    check "agent unit: $key" grep -qx "$key" "$unit"
done
check "backup timer installed" test -f "$root/lib/systemd/system/octoisp-backup.timer"
check "console shipped" test -f "$root/usr/share/octoisp/web/index.html"
check "console assets shipped" bash -c "ls '$root'/usr/share/octoisp/web/assets/*.js"
# The SBOM of each package: CycloneDX JSON beside the package docs, naming the package and the crates in it.
for pkg in octoisp-agent octoisp-controlplane; do
    sbom=$root/usr/share/doc/$pkg/sbom.cdx.json
    check "$pkg: SBOM shipped" test -f "$sbom"
    check "$pkg: SBOM is CycloneDX for $pkg" \
        jq -e --arg p "$pkg" '.bomFormat == "CycloneDX" and .metadata.component.name == $p' "$sbom"
    tokio=$(jq -r '.components[] | select(.name == "tokio") | .version' "$sbom" 2>/dev/null)
    locked=$(awk '/^name = "tokio"$/ { getline; gsub(/"/, "", $3); print $3; exit }' Cargo.lock)
    [ -n "$tokio" ] && [ "$tokio" = "$locked" ] && pass "$pkg: SBOM lists tokio $tokio (as Cargo.lock)" \
        || fail "$pkg: SBOM lists tokio '${tokio}', Cargo.lock has '${locked}'"
    check "$pkg: SBOM has licences and checksums" \
        jq -e '[.components[] | select(.licenses == null)] | length == 0' "$sbom"
    check "$pkg: SBOM beside the .deb" bash -c "ls '$DEBS'/${pkg}_*.cdx.json"
done

say "configuration"
check "the shipped agent config validates" \
    in_root runuser -u octoisp -- env OCTOISP_AGENT_CONFIG=/etc/octoisp/agent.toml octoisp-agent check-config
check "the shipped controlplane config validates" \
    in_root runuser -u octoisp -- env OCTOISP_CP_CONFIG=/etc/octoisp/controlplane.toml octoisp-controlplane check-config
printf '\n[outbox]\nmax_mbz = 5\n' > "$root/tmp/bad.toml"
chmod 644 "$root/tmp/bad.toml"
set +e
out=$(in_root runuser -u octoisp -- octoisp-agent --config /tmp/bad.toml check-config 2>&1)
code=$?
set -e
if [ "$code" = 64 ] && printf '%s' "$out" | grep -q 'max_mbz'; then
    pass "a bad key fails with exit 64 naming it"
else
    fail "bad key: exit $code, said: $out"
fi

say "upgrade keeps data and a changed config"
# The agent's state as a running agent leaves it: its outbox (created by `status`) and its identity.
in_root runuser -u octoisp -- env OCTOISP_AGENT_CONFIG=/etc/octoisp/agent.toml octoisp-agent status >/dev/null 2>&1 || true
echo "identity-$RANDOM" > "$root/var/lib/octoisp/agent/identity.marker"
chown 0:0 "$root/var/lib/octoisp/agent/identity.marker"
before=$(cd "$root/var/lib/octoisp/agent" && find . -type f -exec sha256sum {} + | sort)
sed -i 's/^max_mb = .*/max_mb = 777/' "$root/etc/octoisp/agent.toml"
# The next version: the same package with a higher version number.
work=$(mktemp -d)
dpkg-deb -R "$agent_deb" "$work/pkg"
old_version=$(sed -n 's/^Version: //p' "$work/pkg/DEBIAN/control")
sed -i "s/^Version: .*/Version: ${old_version}+upgrade1/" "$work/pkg/DEBIAN/control"
dpkg-deb --root-owner-group -b "$work/pkg" "$root/debs/octoisp-agent-next.deb" >/dev/null
rm -rf "$work"
in_root dpkg -i --force-confold /debs/octoisp-agent-next.deb >/dev/null
version=$(in_root dpkg-query -W -f='${Version}' octoisp-agent)
[ "$version" = "${old_version}+upgrade1" ] && pass "upgraded to $version" || fail "version after upgrade: $version"
after=$(cd "$root/var/lib/octoisp/agent" && find . -type f -exec sha256sum {} + | sort)
[ -n "$before" ] && [ "$before" = "$after" ] && pass "state kept byte for byte ($(echo "$after" | wc -l) files)" \
    || fail "state changed by the upgrade"
check "changed config kept" grep -qx 'max_mb = 777' "$root/etc/octoisp/agent.toml"

say "purge"
in_root dpkg --purge octoisp-agent >/dev/null
check "agent data removed" test ! -e "$root/var/lib/octoisp/agent"
check "agent config removed" test ! -e "$root/etc/octoisp/agent.toml"
check "user kept while the control plane is installed" in_root getent passwd octoisp
in_root dpkg --purge octoisp-controlplane >/dev/null
check "all data removed" test ! -e "$root/var/lib/octoisp"
check "user removed" bash -c "! chroot '$root' getent passwd octoisp"
check "binary removed" test ! -e "$root/usr/bin/octoisp-agent"

echo "packaging: $passes passed, $failures failed"
[ "$failures" = 0 ]
