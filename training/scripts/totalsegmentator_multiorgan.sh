#!/usr/bin/env bash
# TotalSegmentator, the abdominal organs that AMOS annotates (real data, unknown biases).
# Subjects showing none of them, and broken files, are left out ($OUT/run/skipped_cases.csv).
# Usage:  TS=/data/Totalsegmentator_dataset_v201 bash training/scripts/totalsegmentator_multiorgan.sh
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)

TS=${TS:?set TS to the TotalSegmentator folder (s0000/ct.nii.gz, s0000/segmentations/, meta.csv)}
OUT=${OUT:-runs/totalsegmentator-multiorgan}
CLASSES=${CLASSES:-spleen,kidney_right,kidney_left,gallbladder,esophagus,liver,stomach,aorta,inferior_vena_cava,pancreas,adrenal_gland_right,adrenal_gland_left,duodenum,urinary_bladder}
SPLIT=${SPLIT:-train}
CONFIG=${CONFIG:-$HERE/configs/totalsegmentator.yaml}
DEVICE=${DEVICE:-cuda}
EPOCHS=${EPOCHS:-100}

hypersort train --data "$TS" --format totalsegmentator --split "$SPLIT" --classes "$CLASSES" \
    --config "$CONFIG" --out "$OUT/run" --device "$DEVICE" --epochs "$EPOCHS" --skip-bad-cases --no-progress
hypersort analyze --run "$OUT/run" --device "$DEVICE" --no-progress
