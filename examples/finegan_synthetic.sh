#!/usr/bin/env bash
# FineGAN on the synthetic factor set (20 backgrounds = children, 10 parents), narrow widths
# (gf = df = 8; FineGAN's are 64) to fit a CPU, then `pydeform test finegan` with the factor
# classifier: mask coverage, shape consistency per parent code (with its pooled control) and
# the Frechet distance on the classifier's features. Resumable: rerun it after a kill.
# Usage: examples/finegan_synthetic.sh [OUT] [STEPS] [HARD_STEPS]
# On a GPU, at FineGAN's widths: DEVICE=cuda WIDTHS=published examples/finegan_synthetic.sh OUT STEPS HARD
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
DEVICE=${DEVICE:-cpu}
widths=(--gf-dim 8 --df-dim 8)
if [[ ${WIDTHS:-narrow} == published ]]; then widths=(); fi
OUT=${1:-runs}
STEPS=${2:-4000}
HARD=${3:-200}
DATA=$(python -c "from pydeform.train.common import synthetic_factors; print(synthetic_factors())")

# The measuring tool first: its own accuracy on the real test images must be high.
if [[ ! -f "$OUT/factors/checkpoint.pt" ]]; then
    pydeform factors train --device "$DEVICE" --data "$DATA" --out "$OUT/factors" --no-progress
fi
cat "$OUT/factors/metrics.json"

pydeform train finegan --device "$DEVICE" "${widths[@]}" --children 20 --backgrounds 20 --parents 10 \
    --steps "$STEPS" --hard-steps "$HARD" --workers 0 --log-every 10 --sample-every 500 --checkpoint-every 100 \
    --no-progress --resume --out "$OUT/finegan"
for weights in ema live; do
    pydeform test finegan --device "$DEVICE" --checkpoint "$OUT/finegan/checkpoint.pt" --classifier "$OUT/factors/checkpoint.pt" \
        --weights "$weights" --out "$OUT/finegan-test-$weights"
done
