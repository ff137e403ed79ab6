#!/usr/bin/env bash
# PATN past the table's budget: the run of examples/patn_table.sh (1000 steps at batch 4,
# ngf = ndf = 32, seed 0, constant learning rate) continued with --resume to 1500 and 2000
# steps; `pydeform test patn` at each, for the attention of every block inside the target's
# body, on the source's body and on the background (metrics.json "attention").
# Usage: [BLOCK=patb] [NGF=32] [DATA=pose-pair folder] examples/patn_attention_longer.sh [OUT] [STEPS...]
# NGF sets ngf = ndf (16: ~4x cheaper, for longer runs); DATA (e.g. one written by
# `pydeform synth pose-pairs --shared-background --name synth`) replaces the synthetic set.
# One thread, ~3.7 s per step (NGF=32) or ~1.4 s (NGF=16) on a 2-core Xeon beside one other training.
set -euo pipefail
out=${1:-runs/patn-longer}
steps=(1000 1500 2000)
if [[ $# -gt 1 ]]; then steps=("${@:2}"); fi
vgg=(--random-vgg)
if [[ -n "${VGG19:-}" ]]; then vgg=(--vgg19 "$VGG19"); fi
data=()
if [[ -n "${DATA:-}" ]]; then data=(--data "$DATA" --name synth); fi
width=${NGF:-32}
run="$out/${BLOCK:-patb}"
for n in "${steps[@]}"; do
    pydeform train patn --block "${BLOCK:-patb}" --out "$run" --steps "$n" --ngf "$width" --ndf "$width" --batch-size 4 \
        --sample-every 500 --checkpoint-every 100 --resume "${data[@]}" "${vgg[@]}"
    cp "$run/checkpoint.pt" "$out/checkpoint_$n.pt"
    pydeform test patn --checkpoint "$out/checkpoint_$n.pt" --out "$out/test_$n"
done
python3 - "$out" "${steps[@]}" <<'PY'
import json, sys
out, steps = sys.argv[1], sys.argv[2:]
print("| steps | SSIM | mask-SSIM | " + " | ".join(f"block {i}" for i in range(1, 10)) + " | last: body / source body / background |")
print("|---:|---:|---:|" + "---:|" * 10)
for n in steps:
    m = json.load(open(f"{out}/test_{n}/metrics.json"))
    a, g = m["attention"], m["generated"]
    ratios = " | ".join(f"{b['ratio']:.2f}" for b in a["blocks"])
    print(f"| {n} | {g['ssim']:.3f} | {g['mask_ssim']:.3f} | {ratios} | "
          f"{a['inside']:.3f} / {a['source_only']:.3f} / {a['background']:.3f} |")
PY
