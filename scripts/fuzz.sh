#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ (cargo-fuzz, libFuzzer, AddressSanitizer) for SECONDS each and
# prints, per target, the executions, the corpus size and the findings. Installs cargo-fuzz from
# crates.io when it is missing; RUSTC_BOOTSTRAP=1 lets a stable toolchain take the sanitizer flags.
#
#     scripts/fuzz.sh SECONDS [TARGET...]        targets: dicom nifti mha_nrrd raster labelled pth
#
# Seeds are real files: testdata/ (pydicom, pydicom-data, nibabel test files; README files there
# say where each came from), fuzz/seeds/ (small files made by fuzz/seeds/make_seeds.py) and, with
# SAMPLE_DATA=DIR (scripts/fetch-sample-data.sh), a few of its MHA/NRRD/JPEG files. The working
# corpus grows in fuzz/corpus/TARGET (git-ignored). An input that crashes, exhausts memory (one
# allocation over 512 MiB, or 2 GiB resident) or runs 10 s is saved in fuzz/artifacts/TARGET/;
# copy it to testdata/fuzz-regressions/ (named TARGET-what.ext) and the test
# `bad_input::fuzz_regressions_do_not_panic` replays it from then on.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
seconds="${1:?usage: scripts/fuzz.sh SECONDS [TARGET...]}"
shift
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "SECONDS must be a whole number of seconds, not $seconds" >&2
    exit 2
fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(dicom nifti mha_nrrd raster labelled pth)
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version > /dev/null 2>&1; then
    echo "installing cargo-fuzz from crates.io" >&2
    cargo install cargo-fuzz --locked
fi
cd "$here/fuzz"

seed() { # seed TARGET FILE...: copies existing files into the target's corpus
    local t="$1"
    shift
    mkdir -p "corpus/$t"
    for f in "$@"; do
        [ -f "$f" ] && cp -n "$f" "corpus/$t/" || true
    done
}
sd="${SAMPLE_DATA:-}"
seed dicom "$here"/testdata/dicom/*.dcm "$here"/testdata/dicom-objects/*.dcm "$here"/testdata/fuzz-regressions/dicom-*
seed nifti "$here"/testdata/nifti/*.nii* "$here"/testdata/fuzz-regressions/nifti-*
seed mha_nrrd seeds/mha_nrrd/* "$here"/testdata/fuzz-regressions/mha_nrrd-*
seed raster "$here"/testdata/dicom/expected/{CT_small,MR_small,US1_J2KI}.png seeds/raster/* \
    "$here"/testdata/fuzz-regressions/raster-*
seed labelled seeds/labelled/* "$here"/testdata/fuzz-regressions/labelled-*
seed pth seeds/pth/* "$here"/testdata/fuzz-regressions/pth-*
if [ -n "$sd" ] && [ -d "$sd" ]; then
    mapfile -t extra < <(find "$sd" -type f \( -name '*.mha' -o -name '*.nrrd' -o -name '*.mhd' \) -size -2M | head -20)
    seed mha_nrrd ${extra[@]+"${extra[@]}"}
    mapfile -t extra < <(find "$sd" -type f \( -name '*.jpg' -o -name '*.tif' \) -size -200k | head -20)
    seed raster ${extra[@]+"${extra[@]}"}
fi

cargo fuzz build -O
printf '%-10s %12s %10s %8s %9s\n' target executions exec/s corpus findings
for t in "${targets[@]}"; do
    mkdir -p "artifacts/$t"
    before=$(find "artifacts/$t" -type f | wc -l)
    log="artifacts/$t.log"
    # -fork lets the run go on past a finding, so one run reports them all
    cargo fuzz run -O "$t" "corpus/$t" -- -max_total_time="$seconds" -timeout=10 -malloc_limit_mb=512 \
        -rss_limit_mb=2048 -max_len=1048576 -print_final_stats=1 -fork=1 -ignore_crashes=1 \
        -ignore_ooms=1 -ignore_timeouts=1 > "$log" 2>&1 || true
    # fork mode's status lines: "#RUNS: cov: ... oom/timeout/crash: O/T/C time: ..."
    last="$( (grep -E '^#[0-9]+: cov' "$log" || true) | tail -1)"
    runs="$(echo "$last" | sed -nE 's/^#([0-9]+):.*/\1/p')"
    runs="${runs:-0}"
    otc="$(echo "$last" | sed -nE 's|.*oom/timeout/crash: ([0-9]+/[0-9]+/[0-9]+).*|\1|p')"
    after=$(find "artifacts/$t" -type f | wc -l)
    printf '%-10s %12s %10s %8s %9s  %s\n' "$t" "$runs" "$((runs / seconds))" \
        "$(find "corpus/$t" -type f | wc -l)" "$((after - before))" "oom/timeout/crash ${otc:-?}"
done
echo "logs and findings: fuzz/artifacts/TARGET(.log)"
