#!/usr/bin/env python3
"""Writes the CycloneDX 1.5 SBOM (JSON) of one binary crate of the workspace: every crate compiled into it.

    scripts/sbom.py octoisp-agent > octoisp-agent.cdx.json

The component list is what `cargo tree -p CRATE -e normal` resolves for the Linux target (build- and dev-only
crates are not in the binary and are left out); licences, descriptions and sources come from `cargo metadata`,
SHA-256 checksums of crates.io packages from Cargo.lock. The output is reproducible: the timestamp is the last
commit's (or $SOURCE_DATE_EPOCH) and the serial number is derived from the content.

Only the Python standard library is used (python3 >= 3.11 for tomllib, as in Debian 12).
"""

import datetime
import json
import os
import re
import subprocess
import sys
import tomllib
import uuid

TARGET = os.environ.get("SBOM_TARGET", "x86_64-unknown-linux-gnu")
TREE_LINE = re.compile(r"^(\S+) v(\S+)")


def cargo(*args):
    return subprocess.run(["cargo", *args], check=True, capture_output=True, text=True).stdout


def purl(name, version):
    return f"pkg:cargo/{name}@{version}"


def timestamp():
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if not epoch:
        try:
            epoch = subprocess.run(["git", "log", "-1", "--format=%ct"], check=True,
                                   capture_output=True, text=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            epoch = "0"
    when = datetime.datetime.fromtimestamp(int(epoch or 0), tz=datetime.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: scripts/sbom.py CRATE")
    root_name = sys.argv[1]
    tree = cargo("tree", "--locked", "-p", root_name, "-e", "normal", "--prefix", "none",
                 "-f", "{p}", "--target", TARGET)
    wanted = set()
    for line in tree.splitlines():
        m = TREE_LINE.match(line.strip())
        if m:
            wanted.add((m.group(1), m.group(2)))
    if not wanted:
        sys.exit(f"sbom.py: cargo tree listed nothing for {root_name}")

    meta = json.loads(cargo("metadata", "--locked", "--format-version", "1",
                            "--filter-platform", TARGET))
    with open(os.path.join(meta["workspace_root"], "Cargo.lock"), "rb") as f:
        lock = tomllib.load(f)
    checksums = {(p["name"], p["version"]): p.get("checksum") for p in lock.get("package", [])}
    packages = {p["id"]: p for p in meta["packages"]}
    by_key = {(p["name"], p["version"]): p for p in meta["packages"]}
    missing = wanted - by_key.keys()
    if missing:
        sys.exit(f"sbom.py: not in cargo metadata: {sorted(missing)}")

    root = by_key[next(k for k in wanted if k[0] == root_name)]
    components = []
    for key in sorted(wanted):
        p = by_key[key]
        if p["id"] == root["id"]:
            continue
        c = {
            "type": "library",
            "bom-ref": purl(p["name"], p["version"]),
            "name": p["name"],
            "version": p["version"],
            "purl": purl(p["name"], p["version"]),
        }
        if p.get("description"):
            c["description"] = " ".join(p["description"].split())
        if p.get("license"):
            c["licenses"] = [{"expression": p["license"]}]
        checksum = checksums.get(key)
        if checksum:
            c["hashes"] = [{"alg": "SHA-256", "content": checksum}]
        refs = []
        if p.get("repository"):
            refs.append({"type": "vcs", "url": p["repository"]})
        if p.get("source") and p["source"].startswith("registry+"):
            refs.append({"type": "distribution",
                         "url": f"https://crates.io/crates/{p['name']}/{p['version']}"})
        if refs:
            c["externalReferences"] = refs
        if not p.get("source"):
            c["description"] = c.get("description", "") or "part of OctoISP"
        components.append(c)

    # The dependency graph between the listed components (normal edges only).
    dependencies = []
    for node in meta["resolve"]["nodes"]:
        p = packages[node["id"]]
        if (p["name"], p["version"]) not in wanted:
            continue
        deps = []
        for d in node["deps"]:
            if not any(k["kind"] is None for k in d["dep_kinds"]):
                continue
            q = packages[d["pkg"]]
            if (q["name"], q["version"]) in wanted:
                deps.append(purl(q["name"], q["version"]))
        dependencies.append({"ref": purl(p["name"], p["version"]), "dependsOn": sorted(set(deps))})
    dependencies.sort(key=lambda d: d["ref"])

    body = {
        "metadata": {
            "timestamp": timestamp(),
            "tools": {"components": [{"type": "application", "name": "octoisp scripts/sbom.py"}]},
            "component": {
                "type": "application",
                "bom-ref": purl(root["name"], root["version"]),
                "name": root["name"],
                "version": root["version"],
                "purl": purl(root["name"], root["version"]),
                "licenses": [{"expression": root["license"]}] if root.get("license") else [],
            },
            "properties": [{"name": "cargo:target", "value": TARGET}],
        },
        "components": components,
        "dependencies": dependencies,
    }
    serial = uuid.uuid5(uuid.NAMESPACE_URL, json.dumps(body, sort_keys=True))
    bom = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{serial}",
        "version": 1,
        **body,
    }
    json.dump(bom, sys.stdout, indent=1, sort_keys=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
