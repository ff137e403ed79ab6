#!/usr/bin/env bash
# MixNMatch on the synthetic factor set (20 backgrounds = children, 10 parents), narrow widths
# (generator, discriminators and encoders 8, bi-discriminator code branch 128, feature
# extractor 8; the published ones are 64/64/64/512/32) to fit a CPU: stage 1, then stage 2
# (feature mode), then `pydeform test mixnmatch` with the factor classifier: each factor's
# accuracy in the mixes against chance, in code and feature mode, and feature mode's shape IoU.
# Usage: examples/mixnmatch_synthetic.sh [OUT] [STEPS] [FEATURE_STEPS]. Resumable.
# On a GPU, at MixNMatch's widths: DEVICE=cuda WIDTHS=published examples/mixnmatch_synthetic.sh OUT STEPS FEATURE
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
DEVICE=${DEVICE:-cpu}
widths=(--gf-dim 8 --df-dim 8 --encoder-dim 8 --bd-hidden 128 --fx-dim 8)
if [[ ${WIDTHS:-narrow} == published ]]; then widths=(); fi
OUT=${1:-runs}
STEPS=${2:-1200}
FEATURE=${3:-200}
DATA=$(python -c "from pydeform.train.common import synthetic_factors; print(synthetic_factors())")

if [[ ! -f "$OUT/factors/checkpoint.pt" ]]; then
    pydeform factors train --device "$DEVICE" --data "$DATA" --out "$OUT/factors" --no-progress
fi
pydeform train mixnmatch --device "$DEVICE" "${widths[@]}" \
    --children 20 --backgrounds 20 --parents 10 --batch-size 16 --steps "$STEPS" --feature-steps "$FEATURE" --workers 0 \
    --log-every 10 --sample-every 200 --checkpoint-every 100 --no-progress --resume --out "$OUT/mixnmatch"
pydeform test mixnmatch --device "$DEVICE" --checkpoint "$OUT/mixnmatch/checkpoint.pt" --classifier "$OUT/factors/checkpoint.pt" \
    --out "$OUT/mixnmatch-test"
