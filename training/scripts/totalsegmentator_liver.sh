#!/usr/bin/env bash
# TotalSegmentator, liver (real data, unknown biases). Subjects whose scan does not show the liver
# have an empty liver mask: they are left out and listed in $OUT/run/skipped_cases.csv, as are
# broken files.
# Usage:  TS=/data/Totalsegmentator_dataset_v201 bash training/scripts/totalsegmentator_liver.sh
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)

TS=${TS:?set TS to the TotalSegmentator folder (s0000/ct.nii.gz, s0000/segmentations/, meta.csv)}
OUT=${OUT:-runs/totalsegmentator-liver}
CLASSES=${CLASSES:-liver}
SPLIT=${SPLIT:-train}                               # meta.csv split: train, val or test
CONFIG=${CONFIG:-$HERE/configs/totalsegmentator.yaml}
DEVICE=${DEVICE:-cuda}
EPOCHS=${EPOCHS:-100}

hypersort train --data "$TS" --format totalsegmentator --split "$SPLIT" --classes "$CLASSES" \
    --config "$CONFIG" --out "$OUT/run" --device "$DEVICE" --epochs "$EPOCHS" --skip-bad-cases --no-progress
hypersort analyze --run "$OUT/run" --device "$DEVICE" --no-progress
