#!/usr/bin/env bash
# The Deformable GAN ablation on the synthetic 128x64 pose pairs (README, "Deformable GAN"):
# trains the baseline U-Net, deformable skips + L1 and the full model (at the NN weight chosen
# on the validation split, and at the paper's) for the same number of steps, evaluates each on
# the test pairs and prints the table (with the copy-the-source baseline).
# Usage: [VARIANTS="dsc full"] examples/deformgan_ablation.sh [OUT] [STEPS]
#
# ngf = ndf = 32 (the paper's is 64) so that the default STEPS=1000 at batch 4 takes about 10
# minutes per variant on an idle 2-core CPU. The full variant's NN loss uses random VGG19
# features unless VGG19=path/to/vgg19.pth is set (nothing is downloaded); on random features
# its weight is 10, chosen on the validation split (examples/deformgan_nn_probe.py split),
# and `full-nn0.01` keeps the paper's weight, which belongs with ImageNet-trained features.
# --norm instance --init normal: the recorded table was trained with per-channel instance norm
# and N(0, 0.02) weights, the defaults before the authors' (keras) became the default.
set -euo pipefail
out=${1:-runs/deformgan-ablation}
steps=${2:-1000}
vgg=(--random-vgg)
if [[ -n "${VGG19:-}" ]]; then vgg=(--vgg19 "$VGG19"); fi
detector=()  # DETECTOR=det.pt (python -m pydeform.metrics.detector train): adds the PCKh column
if [[ -n "${DETECTOR:-}" ]]; then detector=(--detector "$DETECTOR"); fi
declare -A flags=(
    [baseline]="--variant baseline"
    [dsc]="--variant dsc"
    [full]="--variant full --nn-weight 10"
    [full-nn0.01]="--variant full --nn-weight 0.01"
)
for name in ${VARIANTS:-baseline dsc full full-nn0.01}; do
    # shellcheck disable=SC2086
    pydeform train deformgan --out "$out/$name" ${flags[$name]} --steps "$steps" \
        --ngf 32 --ndf 32 --batch-size 4 --ops pydeform --sample-every 500 --checkpoint-every 100 \
        --norm instance --init normal --resume "${vgg[@]}"
    pydeform test deformgan --checkpoint "$out/$name/checkpoint.pt" --out "$out/$name/test" "${detector[@]}"
done
python3 - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = {}
for name in ("baseline", "dsc", "full", "full-nn0.01"):
    path = out / name / "test" / "metrics.json"
    if path.is_file():
        metrics = json.loads(path.read_text())
        rows.setdefault("copy the source", (metrics["copy_source"], metrics.get("copy_source_pose")))
        rows[name] = (metrics["generated"], metrics.get("pose"))
print("| model | SSIM | mask-SSIM | L1 | PSNR | PCKh@0.5 |\n|---|---:|---:|---:|---:|---:|")
for name, (m, pose) in rows.items():
    pckh = f"{pose['pckh']:.3f}" if pose else ""
    print(f"| {name} | {m['ssim']:.3f} | {m['mask_ssim']:.3f} | {m['l1']:.3f} | {m['psnr']:.2f} | {pckh} |")
PY
