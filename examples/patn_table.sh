#!/usr/bin/env bash
# PATN and the nested residual attention variant on the synthetic 128x64 pose pairs, with the
# split and budget of the Deformable GAN ablation (examples/deformgan_ablation.sh: 1000 steps
# at batch 4, ngf = ndf = 32, constant learning rate), then `pydeform test patn` on the 600
# test pairs and the table beside copy-the-source and the Deformable GAN's dsc variant.
# Usage: [BLOCKS="patb nested"] examples/patn_table.sh [OUT] [STEPS] [DEFORMGAN_ABLATION_OUT]
#
# The default --niter 500 epochs of 4,000 pairs keep the learning rate constant over the 1000
# steps, as in the Deformable GAN runs. The perceptual (and, for nested, style) losses use
# random VGG19 features unless VGG19=path/to/vgg19.pth is set (nothing is downloaded).
# Measured step time on this project's shared 2-core CPU (1 thread, load average ~10):
# ~10 s (PATN) and ~12.5 s (nested) per step, so budget hours per model on a loaded machine.
set -euo pipefail
out=${1:-runs/patn-table}
steps=${2:-1000}
ablation=${3:-runs/deformgan-ablation}
vgg=(--random-vgg)
if [[ -n "${VGG19:-}" ]]; then vgg=(--vgg19 "$VGG19"); fi
detector=()  # DETECTOR=det.pt (python -m pydeform.metrics.detector train): adds the PCKh column
if [[ -n "${DETECTOR:-}" ]]; then detector=(--detector "$DETECTOR"); fi

for block in ${BLOCKS:-patb nested}; do
    pydeform train patn --block "$block" --out "$out/$block" --steps "$steps" --ngf 32 --ndf 32 --batch-size 4 \
        --sample-every 500 --checkpoint-every 100 --resume "${vgg[@]}"
    pydeform test patn --checkpoint "$out/$block/checkpoint.pt" --out "$out/$block/test" "${detector[@]}"
done
if [[ ! -f "$ablation/dsc/test/metrics.json" ]]; then
    VARIANTS=dsc "$(dirname "$0")/deformgan_ablation.sh" "$ablation" "$steps"
fi
python3 - "$out" "$ablation" <<'PY'
import json, sys
from pathlib import Path
out, ablation = sys.argv[1:]
dsc = json.load(open(f"{ablation}/dsc/test/metrics.json"))
rows = {"copy the source": (dsc["copy_source"], dsc.get("copy_source_pose")),
        "Deformable GAN dsc": (dsc["generated"], dsc.get("pose"))}
attention = {}
for block in ("patb", "nested"):
    if not (Path(out) / block / "test" / "metrics.json").is_file():
        continue
    metrics = json.load(open(f"{out}/{block}/test/metrics.json"))
    rows[f"PATN {block}"] = (metrics["generated"], metrics.get("pose"))
    attention[block] = metrics["attention"]
print("| model | SSIM | mask-SSIM | L1 | PSNR | PCKh@0.5 |\n|---|---:|---:|---:|---:|---:|")
for name, (m, pose) in rows.items():
    pckh = f"{pose['pckh']:.3f}" if pose else ""
    print(f"| {name} | {m['ssim']:.3f} | {m['mask_ssim']:.3f} | {m['l1']:.3f} | {m['psnr']:.2f} | {pckh} |")
for block, a in attention.items():
    ok = a["ratio"] is not None and a["ratio"] >= 2
    print(f"{block}: last block attention {a['inside']:.3f} inside the body, {a['outside']:.3f} outside, "
          f"ratio {a['ratio']:.2f} ({'>= 2: met' if ok else '< 2: not met'})")
PY
