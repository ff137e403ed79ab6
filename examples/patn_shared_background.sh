#!/usr/bin/env bash
# Where does PATN's last-block attention go when the target's background can be copied? The
# table's runs (examples/patn_table.sh: 1000 steps at batch 4, ngf = ndf = 32, seed 0,
# constant learning rate) on a pose-pair set written with --shared-background (every image of
# a person on one backdrop; otherwise the same generator, seed and split sizes), then
# `pydeform test patn` (metrics.json "attention": each block inside the target's body, on the
# source's body and on the background).
# Usage: [BLOCKS="patb nested"] examples/patn_shared_background.sh [OUT] [STEPS]
# One thread each: ~3.2 s (PATN) and ~4.1 s (nested) per step on a 2-core Xeon, the two side by side.
set -euo pipefail
out=${1:-runs/patn-shared}
steps=${2:-1000}
vgg=(--random-vgg)
if [[ -n "${VGG19:-}" ]]; then vgg=(--vgg19 "$VGG19"); fi
if [[ ! -d "$out/data" ]]; then
    pydeform synth pose-pairs --out "$out/data" --shared-background --name synth
fi
for block in ${BLOCKS:-patb nested}; do
    pydeform train patn --block "$block" --data "$out/data" --name synth --out "$out/$block" --steps "$steps" \
        --ngf 32 --ndf 32 --batch-size 4 --sample-every 500 --checkpoint-every 100 --resume "${vgg[@]}"
    pydeform test patn --checkpoint "$out/$block/checkpoint.pt" --out "$out/$block/test"
done
