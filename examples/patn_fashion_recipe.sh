#!/usr/bin/env bash
# Is the Market recipe the cause of PATN's flat last-block attention? PATN (patb) at the table's
# budget (1000 steps, batch 4, ngf = ndf = 32, seed 0, random VGG19) with DeepFashion's recipe
# (instance norm, LSGAN, no image pool, weights 1/1/5) on the table's set and on the
# shared-background set (`pydeform synth pose-pairs --shared-background`), then `pydeform test
# patn` and examples/patn_attention_probe.py (the update's magnitude inside / outside the body).
# Usage: examples/patn_fashion_recipe.sh table|shared [OUT]. One thread; resumable.
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
which=$1
out=${2:-runs/patn-fashion-recipe}
args=(--block patb --steps 1000 --ngf 32 --ndf 32 --batch-size 4 --sample-every 500 --checkpoint-every 100
      --resume --random-vgg --norm instance --gan-loss lsgan --pool-size 0 --lambda-l1 1 --lambda-perceptual 1
      --lambda-gan 5 --workers 0 --no-progress)
if [[ $which == shared ]]; then
    if [[ ! -d "$out/shared-data" ]]; then
        pydeform synth pose-pairs --out "$out/shared-data.tmp" --shared-background --name synth
        mv "$out/shared-data.tmp" "$out/shared-data"
    fi
    args+=(--data "$out/shared-data" --name synth)
fi
pydeform train patn "${args[@]}" --out "$out/$which"
pydeform test patn --checkpoint "$out/$which/checkpoint.pt" --out "$out/$which/test" --no-progress
python3 "$(dirname "$0")/patn_attention_probe.py" "$out/$which/checkpoint.pt" "$out/$which/test/probe.json"
