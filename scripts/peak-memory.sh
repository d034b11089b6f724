#!/usr/bin/env bash
# Peak memory and time of vismae on hostile files. Crafts them (scripts/craft-hostile.py, python3
# standard library), then runs the release binary on each under /usr/bin/time -v: `convert` for
# images, `weights inspect` for .pth/.safetensors. It prints one row per crafted file (size, exit
# status, maximum resident set size, wall time, message), then one summary row per folder of
# extra inputs (e.g. a fuzz corpus: fuzz/corpus/dicom), then one `ingest` of a folder holding all
# crafted image files beside a good one. The first row is a valid DICOM file: the normal working
# set. The last lines give the largest RSS and time over everything, and whether each stayed under
# the bounds (256 MiB over the valid file's RSS; 1 s per file).
#
#     scripts/peak-memory.sh [WORKDIR] [FOLDER...]    (default WORKDIR: a fresh temporary folder)
#     VISMAE=path/to/vismae scripts/peak-memory.sh
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
work="${1:-$(mktemp -d)}"
[ $# -gt 0 ] && shift
bin="${VISMAE:-$here/target/release/vismae}"
if [ ! -x "$bin" ]; then
    (cd "$here" && cargo build --release -p vismae-cli)
fi
rm -rf "$work/in" "$work/out" "$work/ds"
mkdir -p "$work/in" "$work/out"
python3 "$here/scripts/craft-hostile.py" "$work/in" > /dev/null
worst_kib=0
worst_s=0
base_kib=0
# measure FILE: sets rss_kib, seconds, status and msg
measure() {
    local f="$1" name out
    name="$(basename "$f")"
    out="$work/out/$name.png"
    rm -f "$out"
    status=0
    # weight files by name or by content (a fuzz corpus names its files by hash): zip or safetensors
    local magic
    magic="$(head -c 4 "$f" | od -An -tx1 | tr -d ' \n')"
    case "$name:$magic:$(basename "$(dirname "$f")")" in
        *.pth:* | *.safetensors:* | *:504b0304:* | *:*:pth) set -- "$bin" weights inspect "$f" ;;
        *) set -- "$bin" convert "$f" --out "$out" ;;
    esac
    /usr/bin/time -v -o "$work/time.txt" "$@" > "$work/stdout.txt" 2> "$work/stderr.txt" || status=$?
    rss_kib="$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/time.txt")"
    local wall
    wall="$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$work/time.txt")"
    seconds="$(echo "$wall" | awk -F: '{ s = 0; for (i = 1; i <= NF; i++) s = s * 60 + $i; printf "%.2f", s }')"
    # awk reads all its input (head would close the pipe early, and pipefail would end the script)
    msg="$( (grep -av "^Command exited" "$work/stderr.txt" || true; cat "$work/stdout.txt") | tr -d "\000" | awk 'NR == 1' | sed "s|$work/in/||; s|$here/||")"
    [ "$rss_kib" -gt "$worst_kib" ] && worst_kib="$rss_kib"
    if awk -v a="$seconds" -v b="$worst_s" 'BEGIN { exit !(a > b) }'; then worst_s="$seconds"; fi
    return 0
}
printf '%-36s %10s %4s %9s %7s  %s\n' file bytes exit "max RSS" seconds message
measure "$here/testdata/dicom/CT_small.dcm"
base_kib="$rss_kib"
worst_kib=0
printf '%-36s %10s %4s %5d MiB %7s  %.100s\n' "CT_small.dcm (valid)" "$(stat -c %s "$here/testdata/dicom/CT_small.dcm")" \
    "$status" "$((rss_kib / 1024))" "$seconds" "$msg"
for f in "$work"/in/*; do
    measure "$f"
    printf '%-36s %10s %4s %5d MiB %7s  %.100s\n' "$(basename "$f")" "$(stat -c %s "$f")" "$status" \
        "$((rss_kib / 1024))" "$seconds" "$msg"
done
for dir in "$@"; do
    n=0
    dir_kib=0
    dir_s=0.00
    dir_worst=""
    while IFS= read -r -d '' f; do
        measure "$f"
        n=$((n + 1))
        if [ "$rss_kib" -gt "$dir_kib" ]; then dir_kib="$rss_kib"; dir_worst="$(basename "$f")"; fi
        if awk -v a="$seconds" -v b="$dir_s" 'BEGIN { exit !(a > b) }'; then dir_s="$seconds"; fi
    done < <(find "$dir" -type f -print0)
    printf '%-36s %10s %4s %5d MiB %7s  largest RSS: %s\n' "$(basename "$dir")/ ($n files)" - - \
        "$((dir_kib / 1024))" "$dir_s" "$dir_worst"
done
# one ingest of every crafted image file beside a good one
mkdir -p "$work/in-images"
find "$work/in" -type f ! -name '*.pth' -exec cp {} "$work/in-images/" \;
cp "$here/testdata/dicom/CT_small.dcm" "$work/in-images/"
status=0
/usr/bin/time -v -o "$work/time.txt" "$bin" ingest "$work/in-images" --out "$work/ds" > "$work/stdout.txt" 2>&1 || status=$?
rss_kib="$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/time.txt")"
wall="$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$work/time.txt")"
printf '%-36s %10s %4s %5d MiB %7s  %s\n' "ingest of all image files" - "$status" "$((rss_kib / 1024))" "$wall" \
    "$(grep -iE 'ingested|skipped' "$work/stdout.txt" | awk 'NR == 1' | cut -c1-100)"
echo
echo "valid file: $((base_kib / 1024)) MiB; largest RSS on a hostile file: $((worst_kib / 1024)) MiB ($(((worst_kib - base_kib) / 1024)) MiB over; bound 256 MiB: $([ $((worst_kib - base_kib)) -lt 262144 ] && echo met || echo NOT met)); slowest: ${worst_s} s (bound 1 s: $(awk -v s="$worst_s" 'BEGIN { print (s < 1) ? "met" : "NOT met" }'))"
