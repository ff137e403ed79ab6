#!/usr/bin/env bash
# The Variational U-Net on the synthetic pose-pair set, with the split and budget of the
# Deformable GAN ablation and the PATN table (1000 steps at batch 4), at the market preset's
# size and widths (128x128: the set's 128x64 resized, as the original resized Market; 32
# filters capped at 128; box and bottleneck factor 1), schedules scaled with --steps, random
# VGG19 features unless VGG19=path/to/vgg19.pth (nothing is downloaded).
# Usage: examples/vunet_synthetic.sh [OUT] [STEPS]. Resumable: rerun it after a kill.
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
OUT=${1:-runs}
STEPS=${2:-1000}
DATA=$(python -c "from pydeform.train.vunet import synthetic_data; print(synthetic_data())")
vgg=(--random-vgg)
if [[ -n "${VGG19:-}" ]]; then vgg=(--vgg19 "$VGG19"); fi

# The measuring tool first: a keypoint detector trained on the TRAIN images, scored on the
# real test images (its own PCKh must be high before it measures generated images).
if [[ ! -f "$OUT/detector.pt" ]]; then
    python -m pydeform.metrics.detector train --data "$DATA" --name synth --out "$OUT/detector.pt" --steps 1500
fi
python -m pydeform.metrics.detector score --checkpoint "$OUT/detector.pt" --data "$DATA" --name synth

pydeform train vunet "${vgg[@]}" --batch-size 4 --steps "$STEPS" --workers 0 --log-every 10 \
    --sample-every 250 --checkpoint-every 100 --resume --out "$OUT/vunet"
for mode in transfer sample reconstruct; do
    pydeform test vunet --checkpoint "$OUT/vunet/checkpoint.pt" --out "$OUT/vunet-$mode" --mode "$mode" \
        --detector "$OUT/detector.pt"
done
