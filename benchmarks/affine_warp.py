"""multi_affine_warp (the Deformable GAN's deformable skip connections) against the pure-torch
reference on the generator's four deformable-skip levels, K = 10 parts.

    python benchmarks/affine_warp.py [--device cpu|cuda|all] [--repeats 5] [--json out.json] [--check]
                                     [--mask-grad]

Levels: Market-1501 (128x64 images), B = 4, C = 64/128/256/512 at 128x64/64x32/32x16/16x8;
DeepFashion (256x256), B = 2, C = 64/128/256/512 at 256/128/64/32 squares.
Inputs: theta near-identity affines (random rotation, scale and shift about the centre, so
samples mostly land inside); masks binary, part 0 (the torso) all ones, part 1 a head box,
parts 2-9 limb-like rotated rectangles. Forward+backward takes gradients to x and theta (as in
the generator, where both are computed); masks come from the pose data and need none, unless
--mask-grad. The upstream gradient is a fixed random tensor, as a following layer would give.

Targets (issue 3): on a 2-core CPU, summed over the four levels of each dataset,
forward+backward >= 10x faster than the reference with <= 1/5 of its peak memory.
"""
from __future__ import annotations

import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import Cost, Impl, Session, devices, measure, parse_args, print_table, report_targets  # noqa: E402

from pydeform.ops import multi_affine_warp, reference  # noqa: E402

PARTS = 10
# dataset -> (B, [(C, H, W) per level])
DATASETS = {
    "market": (4, [(64, 128, 64), (128, 64, 32), (256, 32, 16), (512, 16, 8)]),
    "fashion": (2, [(64, 256, 256), (128, 128, 128), (256, 64, 64), (512, 32, 32)]),
}


def near_identity_theta(B: int, H: int, W: int, g: torch.Generator) -> torch.Tensor:
    """(B, PARTS, 2, 3) output pixel -> input pixel: rotation within +-20 degrees, scale 0.85-1.15
    per axis, shift ~ 5% of the size, all about the image centre."""
    angle = (torch.rand(B, PARTS, generator=g) * 2 - 1) * math.radians(20)
    scale = 0.85 + 0.3 * torch.rand(B, PARTS, 2, generator=g)
    cos, sin = torch.cos(angle), torch.sin(angle)
    linear = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2) * scale.unsqueeze(-1)
    centre = torch.tensor([(W - 1) / 2, (H - 1) / 2])
    shift = torch.randn(B, PARTS, 2, generator=g) * torch.tensor([W, H]) * 0.05
    offset = centre + shift - (linear @ centre.view(2, 1)).squeeze(-1)
    return torch.cat([linear, offset.unsqueeze(-1)], dim=-1)


def part_masks(B: int, H: int, W: int, g: torch.Generator) -> torch.Tensor:
    """(B, PARTS, H, W) binary: torso all ones, a head box, and eight limb-like rectangles."""
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    masks = torch.zeros(B, PARTS, H, W)
    masks[:, 0] = 1
    for b in range(B):
        cx, cy = W * (0.4 + 0.2 * torch.rand(1, generator=g)), H * (0.1 + 0.1 * torch.rand(1, generator=g))
        masks[b, 1] = (((xs - cx).abs() <= 0.15 * W) & ((ys - cy).abs() <= 0.08 * H)).float()
        for k in range(2, PARTS):
            cx, cy = W * (0.2 + 0.6 * torch.rand(1, generator=g)), H * (0.2 + 0.7 * torch.rand(1, generator=g))
            angle = math.pi * torch.rand(1, generator=g)
            along = (xs - cx) * torch.sin(angle) + (ys - cy) * torch.cos(angle)
            across = (xs - cx) * torch.cos(angle) - (ys - cy) * torch.sin(angle)
            length, half_width = H * (0.12 + 0.08 * torch.rand(1, generator=g)), W * 0.08
            masks[b, k] = ((along.abs() <= length) & (across.abs() <= half_width)).float()
    return masks


def cost(B: int, C: int, H: int, W: int, mask_grad: bool) -> Cost:
    """The contract's work (float32, K parts, output size = input size).
    Forward: read x and the masks once, write out, and one byte per output element for the
    winning candidate (0..K), which the backward needs. Per candidate (element, part):
    bilinear (4 multiplies, 3 adds), the mask multiply and the max compare; per (pixel,
    part) the affine map and the tap weights, ~16 FLOPs.
    Backward (gradients to x and theta, and to the masks with mask_grad): read the upstream
    gradient, x, the masks and the winners, write grad_x (and grad_mask); per output element
    the 4-tap scatter (8), the coordinate gradients (14) and theta's 6 accumulations (12)."""
    elements, part_pixels = B * C * H * W, B * PARTS * H * W
    return Cost(
        fwd_bytes=4 * (2 * elements + part_pixels) + elements, fwd_flops=9 * elements * PARTS + 16 * part_pixels,
        bwd_bytes=4 * (3 * elements + part_pixels) + elements + (4 * part_pixels if mask_grad else 0),
        bwd_flops=(34 + (2 if mask_grad else 0)) * elements,
    )  # fmt: skip


def impls_for(x: torch.Tensor, theta: torch.Tensor, masks: torch.Tensor, mask_grad: bool) -> list[Impl]:
    x_grad, theta_grad = x.detach().requires_grad_(), theta.detach().requires_grad_()
    masks_grad = masks.detach().requires_grad_(mask_grad)
    wanted = (x_grad, theta_grad) + ((masks_grad,) if mask_grad else ())
    grad_out = torch.randn(x.shape, generator=torch.Generator().manual_seed(1)).to(x.device)

    def make(op):
        def forward():
            with torch.no_grad():
                return op(x, theta, masks)

        def forward_backward():
            return torch.autograd.grad(op(x_grad, theta_grad, masks_grad), wanted, grad_out)

        return forward, forward_backward

    return [Impl("pydeform", *make(multi_affine_warp)), Impl("reference", *make(reference.multi_affine_warp))]


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], {"--mask-grad": "also the gradient to the masks"})
    mask_grad = args.mask_grad
    session, records, checks = Session(), [], []
    print(f"K = {PARTS}; gradients to x and theta" + (" and masks" if mask_grad else " (masks from the data: none)"))
    for device in devices(args.device):
        machine = session.machine(device)
        print(f"\n{device.type}:")
        for dataset, (B, levels) in DATASETS.items():
            per_level = []
            for level, (C, H, W) in enumerate(levels, start=1):
                g = torch.Generator().manual_seed(level)
                x = torch.randn(B, C, H, W, generator=g).to(device)
                theta = near_identity_theta(B, H, W, g).to(device)
                masks = part_masks(B, H, W, g).to(device)
                name = f"{dataset} L{level} {B}x{C}x{H}x{W}" + (" +mask grad" if mask_grad else "")
                mine, ref = measure(name, device, impls_for(x, theta, masks, mask_grad), args.repeats,
                                    cost(B, C, H, W, mask_grad), machine)  # fmt: skip
                records += [mine, ref]
                per_level.append((mine, ref))
            if device.type == "cpu":
                speedup = sum(r.fwd_bwd_ms for _, r in per_level) / sum(m.fwd_bwd_ms for m, _ in per_level)
                memory = sum(m.peak_mb for m, _ in per_level) / sum(r.peak_mb for _, r in per_level)
                threads = torch.get_num_threads()
                checks += [
                    (f"cpu {dataset} (4 levels, {threads} threads): fwd+bwd speedup {speedup:.1f}x >= 10x", speedup >= 10),
                    (f"cpu {dataset} (4 levels): peak memory ratio {memory:.3f} <= 0.2", memory <= 0.2),
                ]
    print_table(records)
    session.finish(records, args.json)
    report_targets(checks, args.check)


if __name__ == "__main__":
    main()
