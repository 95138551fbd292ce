#!/usr/bin/env bash
# AMOS, binary liver, with injected annotation biases (the paper's AMOS experiment):
# check the source, inject the biases of training/plans/amos-liver.yaml (manifest.csv records who
# got what), train on the liver, analyse the latent map against the manifest.
# Usage:  AMOS=/data/amos22 bash training/scripts/amos_liver_biases.sh
# Re-running resumes training; the perturbed copy is made once.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)

AMOS=${AMOS:?set AMOS to the AMOS 2022 folder (dataset.json, imagesTr/, labelsTr/)}
OUT=${OUT:-runs/amos-liver}                         # perturbed data in $OUT/data, run in $OUT/run
PLAN=${PLAN:-$HERE/plans/amos-liver.yaml}
CONFIG=${CONFIG:-$HERE/configs/amos.yaml}
DEVICE=${DEVICE:-cuda}
EPOCHS=${EPOCHS:-100}

hypersort check-data --data "$AMOS" --format amos --classes liver --no-progress
if [ ! -f "$OUT/data/dataset.json" ]; then
    hypersort perturb --data "$AMOS" --out "$OUT/data" --plan "$PLAN"
fi
# the injected empty labels are errors the audit must find, not cases to refuse
hypersort train --data "$OUT/data" --classes liver --config "$CONFIG" --out "$OUT/run" \
    --device "$DEVICE" --epochs "$EPOCHS" --allow-empty-labels --no-progress
hypersort analyze --run "$OUT/run" --device "$DEVICE" --no-progress
