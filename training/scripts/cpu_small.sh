#!/usr/bin/env bash
# A CPU-sized run on any dataset (6 mm, 64^3 patches, small UNet): a first look, or a check that
# a dataset loads end to end before a GPU run.
# Usage:  DATA=/data/amos22 CLASSES=liver bash training/scripts/cpu_small.sh
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)

DATA=${DATA:?set DATA to a dataset folder or CSV case list}
CLASSES=${CLASSES:-}                                # empty: all classes of the dataset
OUT=${OUT:-runs/cpu-small}
EPOCHS=${EPOCHS:-60}

hypersort train --data "$DATA" ${CLASSES:+--classes "$CLASSES"} --config "$HERE/configs/cpu_small.yaml" \
    --out "$OUT" --device cpu --epochs "$EPOCHS" --skip-bad-cases
hypersort analyze --run "$OUT" --device cpu
