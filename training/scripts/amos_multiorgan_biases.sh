#!/usr/bin/env bash
# AMOS, all 15 organs, with the AMOS-style injected biases (dilated liver, omitted spleen, swapped
# kidneys, gross errors; HyperSORTLib/perturbation/plans/amos-style.yaml).
# Usage:  AMOS=/data/amos22 bash training/scripts/amos_multiorgan_biases.sh
# Re-running resumes training; the perturbed copy is made once.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)

AMOS=${AMOS:?set AMOS to the AMOS 2022 folder (dataset.json, imagesTr/, labelsTr/)}
OUT=${OUT:-runs/amos-multiorgan}
PLAN=${PLAN:-amos-style}                            # a built-in plan name or a YAML file
CONFIG=${CONFIG:-$HERE/configs/amos.yaml}
DEVICE=${DEVICE:-cuda}
EPOCHS=${EPOCHS:-100}

hypersort check-data --data "$AMOS" --format amos --no-progress
if [ ! -f "$OUT/data/dataset.json" ]; then
    hypersort perturb --data "$AMOS" --out "$OUT/data" --plan "$PLAN"
fi
hypersort train --data "$OUT/data" --config "$CONFIG" --out "$OUT/run" \
    --device "$DEVICE" --epochs "$EPOCHS" --allow-empty-labels --no-progress
hypersort analyze --run "$OUT/run" --device "$DEVICE" --no-progress
