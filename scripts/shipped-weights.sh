#!/usr/bin/env bash
# Reproduces vismae's shipped MAE weights (weights/vismae-tiny-mae.safetensors; weights/README.md is
# their model card): the sample data of scripts/fetch-sample-data.sh, the demo's pre-training set at
# 64 px (every image of a stated modality except the Colin27 subject and label maps; Br35H's 3,000
# slices included, without their labels), and `vismae pretrain` with the settings below (per-image
# min-max input: the fine-tuning runs that start from these weights take it from their card). Two
# replicas are fixed so that the run gives the same weights on machines with more cores.
# Usage: scripts/shipped-weights.sh SAMPLE_DIR OUT_DIR [STEPS]
set -euo pipefail
sd=${1:?usage: shipped-weights.sh SAMPLE_DIR OUT_DIR [STEPS]}
out=${2:?usage: shipped-weights.sh SAMPLE_DIR OUT_DIR [STEPS]}
steps=${3:-12000}
cd "$(dirname "$0")/.."
scripts/fetch-sample-data.sh "$sd"
cargo build --release -p vismae-cli
vismae=target/release/vismae
[ -d "$out/sets" ] || "$vismae" sample-sets --sample-data "$sd" --size 64 --out "$out/sets"
if [ -f "$out/run/config.json" ]; then
  "$vismae" pretrain --resume "$out/run"
else
  "$vismae" pretrain --data "$out/sets/pretrain-set" --variant tiny --steps "$steps" --batch-size 32 \
    --devices 2 --seed 0 --set lr=1e-3 --set 'norm="minmax"' --set reconstruct_every=1000 --out "$out/run"
fi
echo "weights: $out/run/weights.safetensors (compare: vismae weights inspect FILE)"
