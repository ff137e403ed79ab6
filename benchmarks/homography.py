"""homography_sample (the warps of ST-GAN) against the pure-torch reference and kornia's
warp_perspective, on ST-GAN's glasses shape and a large one.

    python benchmarks/homography.py [--device cpu|cuda|all] [--repeats 5] [--json out.json] [--check]

Homographies are ST-GAN's: the matrix exponential of 0.1 * N(0, 1) sl(3) parameters in
normalised coordinates (near identity: small rotation, scale, shear, translation and
perspective). pydeform and the reference take them as they are (coords="normalized",
output -> input); kornia takes the equivalent input -> output pixel matrix as its leaf, which
is how a kornia user would hold it. Forward+backward computes gradients to the image and the
homography of out.sum(), whose output gradient is an expanded view: the peak memory is then
what each implementation allocates itself.

Targets (issue 3): on a 2-core CPU, forward+backward >= 5x faster than kornia and >= 2x faster
than the reference, with peak memory <= 1/2 of kornia's.
"""
from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import Cost, Impl, Session, devices, measure, parse_args, print_table, report_targets  # noqa: E402

from pydeform.ops import homography_sample, reference  # noqa: E402

# (name, B, C, H, W): ST-GAN's glasses are RGBA 144x144, batch 20.
CASES = [("st-gan glasses 20x4x144x144", 20, 4, 144, 144), ("large 8x3x512x512", 8, 3, 512, 512)]


def stgan_homographies(batch: int, scale: float = 0.1, generator: torch.Generator | None = None) -> torch.Tensor:
    """(batch, 3, 3) output -> input homographies in normalised coordinates: exp of a random
    element of sl(3) (8 parameters ~ scale * N(0, 1); the trace-free generator keeps det = 1)."""
    p = scale * torch.randn(batch, 8, dtype=torch.float64, generator=generator)
    generator_matrix = torch.zeros(batch, 3, 3, dtype=torch.float64)
    generator_matrix.view(batch, 9)[:, :8] = p
    generator_matrix[:, 2, 2] = -(p[:, 0] + p[:, 4])
    return torch.linalg.matrix_exp(generator_matrix)


def kornia_matrix(h_normalized: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """kornia's input -> output pixel matrix for an output -> input normalised homography."""
    to_normalized = reference.pixel_to_normalized_matrix(height, width, torch.float64)
    h_pixel = torch.linalg.inv(to_normalized) @ h_normalized @ to_normalized
    return torch.linalg.inv(h_pixel)


def cost(B: int, C: int, H: int, W: int) -> Cost:
    """The contract's work (float32, one homography per sample, output size = input size).
    Forward: read x once, write out. Per output pixel the projection (u, v, w: 12 FLOPs),
    two divisions and the tap weights (~8); per output element the bilinear combination
    (4 multiplies, 3 adds).
    Backward (gradients to x and h): read the upstream gradient and x, write grad_x; per
    output element the 4-tap scatter (8) and the coordinate gradients (14); per output
    pixel the chain through u/w, v/w to the 9 entries of h (~30)."""
    elements, pixels = B * C * H * W, B * H * W
    return Cost(
        fwd_bytes=4 * 2 * elements, fwd_flops=7 * elements + 20 * pixels,
        bwd_bytes=4 * 3 * elements, bwd_flops=22 * elements + 30 * pixels,
    )  # fmt: skip


def impls_for(x: torch.Tensor, h: torch.Tensor, m: torch.Tensor) -> list[Impl]:
    from kornia.geometry.transform import warp_perspective

    size = tuple(x.shape[-2:])
    x_grad, h_grad, m_grad = (t.detach().requires_grad_() for t in (x, h, m))

    def pydeform_op(image, hom):
        return homography_sample(image, hom, coords="normalized")

    def reference_op(image, hom):
        return reference.homography_sample(image, hom, coords="normalized")

    def kornia_op(image, matrix):
        return warp_perspective(image, matrix, size, mode="bilinear", padding_mode="zeros", align_corners=True)

    def make(op, matrix, matrix_grad):
        def forward():
            with torch.no_grad():
                return op(x, matrix)

        def forward_backward():
            out = op(x_grad, matrix_grad)
            return torch.autograd.grad(out.sum(), (x_grad, matrix_grad))

        return forward, forward_backward

    return [
        Impl("pydeform", *make(pydeform_op, h, h_grad)),
        Impl("reference", *make(reference_op, h, h_grad)),
        Impl("kornia", *make(kornia_op, m, m_grad)),
    ]


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    session, records, checks = Session(), [], []
    generator = torch.Generator().manual_seed(0)
    for device in devices(args.device):
        machine = session.machine(device)
        print(f"\n{device.type}:")
        for name, B, C, H, W in CASES:
            x = torch.rand(B, C, H, W, generator=generator).to(device)
            h64 = stgan_homographies(B, generator=generator)
            h, m = h64.float().to(device), kornia_matrix(h64, H, W).float().to(device)
            mine, ref, kornia = measure(name, device, impls_for(x, h, m), args.repeats, cost(B, C, H, W), machine)
            records += [mine, ref, kornia]
            if device.type == "cpu":
                vs_kornia, vs_reference = kornia.fwd_bwd_ms / mine.fwd_bwd_ms, ref.fwd_bwd_ms / mine.fwd_bwd_ms
                memory = mine.peak_mb / kornia.peak_mb
                checks += [
                    (f"cpu {name}: fwd+bwd {vs_kornia:.1f}x faster than kornia >= 5x", vs_kornia >= 5),
                    (f"cpu {name}: fwd+bwd {vs_reference:.1f}x faster than the reference >= 2x", vs_reference >= 2),
                    (f"cpu {name}: peak memory {memory:.3f} of kornia's <= 0.5", memory <= 0.5),
                ]
    print("\nAgainst the reference:")
    print_table(records)
    print("\nAgainst kornia:")
    print_table(records, baseline="kornia")
    session.finish(records, args.json)
    report_targets(checks, args.check)


if __name__ == "__main__":
    main()
