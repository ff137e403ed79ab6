#!/usr/bin/env bash
# The Variational U-Net on the synthetic pose-pair set (the split the other families use),
# in the REDUCED configuration that fitted this project's shared 2-core CPU: 64x64 images
# (the set's 128x64 resized, as the original resized Market to 128x128), 16 filters capped
# at 64 (the paper: 32 capped at 128), batch 8, 300 steps (schedules scaled with --steps),
# random VGG19 features (no ImageNet weights can be downloaded here). Not the paper's model.
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
OUT=${1:-runs}
DATA=$(python -c "from pydeform.train.vunet import synthetic_data; print(synthetic_data())")

# The measuring tool first: a keypoint detector trained on the TRAIN images, scored on the
# real test images (its own PCKh must be high before it measures generated images).
python -m pydeform.metrics.detector train --data "$DATA" --name synth --out "$OUT/detector.pt" --steps 1500
python -m pydeform.metrics.detector score --checkpoint "$OUT/detector.pt" --data "$DATA" --name synth

pydeform train vunet --random-vgg --size 64 --n-filters 16 --max-filters 64 --batch-size 8 --steps 300 \
    --workers 0 --log-every 10 --sample-every 100 --checkpoint-every 100 --out "$OUT/vunet"
for mode in transfer sample reconstruct; do
    pydeform test vunet --checkpoint "$OUT/vunet/checkpoint.pt" --out "$OUT/vunet-$mode" --mode "$mode" \
        --detector "$OUT/detector.pt"
done
