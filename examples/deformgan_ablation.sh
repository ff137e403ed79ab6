#!/usr/bin/env bash
# The Deformable GAN ablation on the synthetic 128x64 pose pairs (README, "Deformable GAN"):
# trains the baseline U-Net, deformable skips + L1 and the full model for the same number of
# steps, evaluates each on the test pairs and prints the table (with the copy-the-source
# baseline). Usage: examples/deformgan_ablation.sh [OUT] [STEPS]
#
# ngf = ndf = 32 (the paper's is 64) so that the default STEPS=1000 at batch 4 takes about 10
# minutes per variant on an idle 2-core CPU (the full variant runs at ~1.8 steps/s there).
# The full variant's NN loss uses random VGG19 features unless VGG19=path/to/vgg19.pth is set
# (nothing is downloaded).
set -euo pipefail
out=${1:-runs/deformgan-ablation}
steps=${2:-1000}
vgg=(--random-vgg)
if [[ -n "${VGG19:-}" ]]; then vgg=(--vgg19 "$VGG19"); fi

for variant in full dsc baseline; do
    pydeform train deformgan --out "$out/$variant" --variant "$variant" --steps "$steps" \
        --ngf 32 --ndf 32 --batch-size 4 --ops pydeform --sample-every 500 "${vgg[@]}"
    pydeform test deformgan --checkpoint "$out/$variant/checkpoint.pt" --out "$out/$variant/test"
done
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
rows = {}
for variant in ("baseline", "dsc", "full"):
    metrics = json.load(open(f"{out}/{variant}/test/metrics.json"))
    rows.setdefault("copy the source", metrics["copy_source"])
    rows[variant] = metrics["generated"]
print(f"| model | SSIM | mask-SSIM | L1 | PSNR |\n|---|---|---|---|---|")
for name, m in rows.items():
    print(f"| {name} | {m['ssim']:.4f} | {m['mask_ssim']:.4f} | {m['l1']:.4f} | {m['psnr']:.2f} |")
PY
