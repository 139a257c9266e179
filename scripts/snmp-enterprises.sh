#!/usr/bin/env bash
# Regenerates agent/fingerprints/enterprise-numbers.tsv, the IANA Private Enterprise Numbers the SNMP fingerprinter
# names unknown devices with, from Wireshark's copy of the registry.
#
# Usage: scripts/snmp-enterprises.sh [ENTERPRISES_TSV]
#   ENTERPRISES_TSV  Wireshark's enterprises.tsv (default /usr/share/wireshark/enterprises.tsv, Debian package
#                    libwireshark-data; `apt-get download libwireshark-data && dpkg-deb -x *.deb x` works without
#                    installing it)
set -euo pipefail
SRC=${1:-/usr/share/wireshark/enterprises.tsv}
OUT=$(dirname "$0")/../agent/fingerprints/enterprise-numbers.tsv
[ -r "$SRC" ] || { echo "no $SRC: install libwireshark-data or pass the file" >&2; exit 1; }
python3 - "$SRC" "$OUT" <<'PY'
import re, sys
src, out = sys.argv[1], sys.argv[2]
text = open(src, encoding="utf-8").read()
updated = re.search(r"last updated (\d{4}-\d{2}-\d{2})", text)
rows, last = [], -1
for line in text.splitlines():
    if line.startswith("#") or not line.strip():
        continue
    num, name = re.split(r"[ \t]+", line, maxsplit=1)
    name = re.sub(r"\s+", " ", name.split("\t#")[0]).strip()
    n = int(num)
    if n <= last:
        sys.exit(f"{src}: {n} is out of order")
    last = n
    rows.append(f"{n}\t{name}\n")
header = f"""# IANA Private Enterprise Numbers: the whole registry (https://www.iana.org/assignments/enterprise-numbers),
# last updated by IANA {updated.group(1) if updated else "(unknown)"}, {len(rows):,} entries.
# Provenance: Wireshark's copy of the registry (tools/make-sminmpec.py), /usr/share/wireshark/enterprises.tsv in
# Debian's libwireshark-data 4.0.17-0+deb12u3; converted by scripts/snmp-enterprises.sh (comments after a name
# dropped, runs of blanks made one space). Licence: see enterprise-numbers.LICENSE beside this file.
# Format: number<TAB>name, one per line, ascending numbers; `#` starts a comment line.
"""
with open(out, "w", encoding="utf-8") as f:
    f.write(header + "".join(rows))
print(f"{out}: {len(rows)} enterprises")
PY
