#!/usr/bin/env bash
# Peak memory and time of `vismae convert` on hostile files: crafts them (scripts/craft-hostile.py,
# python3 standard library), runs the release binary on each under /usr/bin/time -v, and prints
# a table of file size, exit status, maximum resident set size and wall time, with the message.
# The first row is a valid DICOM file, for the normal working set.
#
#     scripts/peak-memory.sh [WORKDIR]       (default: a fresh temporary folder)
#     VISMAE=path/to/vismae scripts/peak-memory.sh
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
work="${1:-$(mktemp -d)}"
bin="${VISMAE:-$here/target/release/vismae}"
if [ ! -x "$bin" ]; then
    (cd "$here" && cargo build --release -p vismae-cli)
fi
mkdir -p "$work/in" "$work/out"
python3 "$here/scripts/craft-hostile.py" "$work/in" > /dev/null
printf '%-36s %10s %4s %9s %7s  %s\n' file bytes exit "max RSS" seconds message
for f in "$here/testdata/dicom/CT_small.dcm" "$work"/in/*; do
    name="$(basename "$f")"
    out="$work/out/$name.png"
    rm -f "$out"
    status=0
    /usr/bin/time -v -o "$work/time.txt" "$bin" convert "$f" --out "$out" > "$work/stdout.txt" 2> "$work/stderr.txt" || status=$?
    rss_kib="$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/time.txt")"
    wall="$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$work/time.txt")"
    seconds="$(echo "$wall" | awk -F: '{ s = 0; for (i = 1; i <= NF; i++) s = s * 60 + $i; printf "%.2f", s }')"
    msg="$( (grep -v '^Command exited' "$work/stderr.txt" || true; cat "$work/stdout.txt") | head -1 | sed "s|$work/in/||; s|$here/||")"
    printf '%-36s %10s %4s %5d MiB %7s  %.110s\n' "$name" "$(stat -c %s "$f")" "$status" "$((rss_kib / 1024))" "$seconds" "$msg"
done
