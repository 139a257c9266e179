#!/usr/bin/env bash
# Builds the Debian packages of octoisp-agent and octoisp-controlplane with cargo-deb (installed from crates.io
# when missing) into dist/ (or $OUT_DIR).
#
#   scripts/build-deb.sh                 release build, stripped (what ships)
#   PROFILE=dev scripts/build-deb.sh     package the debug binaries already built (the packaging test in CI)
#   DEB_VERSION=1.2.3 scripts/...        override the package version (default: the crates' version)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

CARGO_DEB_VERSION=3.8.0
PROFILE=${PROFILE:-release}
OUT_DIR=${OUT_DIR:-dist}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$(default_target_dir)}"

ensure_pkg dpkg-deb dpkg
if ! cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
    say "installing cargo-deb $CARGO_DEB_VERSION from crates.io"
    cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked --quiet
fi

if [ "$PROFILE" = release ]; then
    say "building release binaries"
    cargo build --release --locked -p octoisp-agent -p octoisp-controlplane
    profile_dir=release
else
    # The same invocation as scripts/test.sh, so that the binaries it built are reused as they are (building only
    # the two packages would resolve other features and rebuild).
    say "building $PROFILE binaries"
    cargo build --profile "$PROFILE" --locked --workspace --all-targets
    profile_dir=debug
    [ "$PROFILE" = dev ] || profile_dir=$PROFILE
fi

# The console ships in the control plane package (/usr/share/octoisp/web, http.web_dir's default).
if [ ! -f web/dist/index.html ] || [ -n "$(find web/src web/index.html web/package-lock.json -newer web/dist/index.html 2>/dev/null | head -n 1)" ]; then
    ensure_pkg node nodejs
    ensure_pkg npm npm
    say "building the web console"
    (cd web && npm ci --no-audit --no-fund --loglevel=error && npm run build) >&2
fi

# The SBOM of each package (CycloneDX JSON of every crate compiled into its binary), shipped in the package as
# /usr/share/doc/PKG/sbom.cdx.json and left beside the .deb as PKG_VERSION.cdx.json.
ensure_pkg python3 python3
ensure_pkg jq jq
mkdir -p "$OUT_DIR" packaging/deb/sbom
for pkg in octoisp-agent octoisp-controlplane; do
    say "SBOM of $pkg"
    python3 scripts/sbom.py "$pkg" > "packaging/deb/sbom/$pkg.cdx.json"
done
for pkg in octoisp-agent octoisp-controlplane; do
    args=(deb --no-build --locked -p "$pkg" --profile "$PROFILE" --output "$OUT_DIR" --strip)
    [ "$PROFILE" = release ] || args+=(--fast)
    [ -n "${DEB_VERSION:-}" ] && args+=(--deb-version "$DEB_VERSION")
    say "packaging $pkg"
    cargo "${args[@]}" >/dev/null
done
for pkg in octoisp-agent octoisp-controlplane; do
    version=$(jq -r .metadata.component.version "packaging/deb/sbom/$pkg.cdx.json")
    cp "packaging/deb/sbom/$pkg.cdx.json" "$OUT_DIR/${pkg}_${DEB_VERSION:-$version}.cdx.json"
done
ls -l "$OUT_DIR"/*.deb "$OUT_DIR"/*.cdx.json >&2
[ -n "$profile_dir" ]
