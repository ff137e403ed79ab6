"""patch_nn_distance (the Deformable GAN's nearest-neighbour loss) against the pure-torch
reference on the paper's shapes: VGG19 conv1_2 features of Market-1501 and DeepFashion.

    python benchmarks/nn_loss.py [--device cpu|cuda|all] [--repeats 5] [--json out.json] [--check]

Targets (issue 2): on a 2-core CPU, DeepFashion forward+backward >= 30x faster than the
reference with <= 1/10 of its peak memory; on a GPU, the forward within 3x of the time to
read both inputs once at the device's (copy-measured) memory bandwidth.
"""
from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import Cost, Impl, Session, devices, measure, parse_args, print_table, report_targets  # noqa: E402

from pydeform.ops import patch_nn_distance, reference  # noqa: E402

# (name, B, C, H, W, kernel_size): conv1_2 features have the image's resolution and 64 channels.
CASES = [("market 4x64x128x64 n=3", 4, 64, 128, 64, 3), ("fashion 2x64x256x256 n=5", 2, 64, 256, 256, 5)]


def cost(B: int, C: int, H: int, W: int, n: int) -> Cost:
    """The contract's work (float32 features, p = 1, gradient to x only, as in training).
    Forward: read x and y once, write dist (float32) and index (int64). Every candidate
    inside the image costs C x (sub, abs, add) plus one compare for the minimum.
    Backward: read the gradient of dist, x, y and index, write grad_x; per element of x one
    sub, sign and multiply."""
    r = (n - 1) // 2
    candidates = B * sum(H - abs(d) for d in range(-r, r + 1)) * sum(W - abs(d) for d in range(-r, r + 1))
    elements, pixels = B * C * H * W, B * H * W
    return Cost(
        fwd_bytes=4 * 2 * elements + (4 + 8) * pixels, fwd_flops=candidates * (3 * C + 1),
        bwd_bytes=4 * pixels + 4 * 2 * elements + 8 * pixels + 4 * elements, bwd_flops=3 * elements,
    )  # fmt: skip


def impls_for(x: torch.Tensor, y: torch.Tensor, n: int) -> list[Impl]:
    x_grad = x.detach().requires_grad_()  # the generated image's features; the real ones need none

    def make(op):
        def forward():
            with torch.no_grad():
                return op(x, y, n, 1)[0]

        def forward_backward():
            dist = op(x_grad, y, n, 1)[0]
            return torch.autograd.grad(dist.mean(), x_grad)

        return forward, forward_backward

    return [Impl("pydeform", *make(patch_nn_distance)), Impl("reference", *make(reference.patch_nn_distance))]


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    session, records, checks = Session(), [], []
    for device in devices(args.device):
        machine = session.machine(device)
        print(f"\n{device.type}:")
        for name, B, C, H, W, n in CASES:
            x = torch.randn(B, C, H, W, device=device)
            y = torch.randn(B, C, H, W, device=device)
            mine, ref = measure(name, device, impls_for(x, y, n), args.repeats, cost(B, C, H, W, n), machine)
            records += [mine, ref]
            if device.type == "cpu" and name.startswith("fashion"):
                checks.append((f"cpu {name}: fwd+bwd speedup {ref.fwd_bwd_ms / mine.fwd_bwd_ms:.1f}x >= 30x", ref.fwd_bwd_ms >= 30 * mine.fwd_bwd_ms))
                checks.append((f"cpu {name}: peak memory ratio {mine.peak_mb / ref.peak_mb:.3f} <= 0.1", mine.peak_mb <= 0.1 * ref.peak_mb))
            if device.type == "cuda":
                bandwidth = machine.bandwidth_gbs
                read_ms = 2 * x.numel() * x.element_size() / (bandwidth * 1e9) * 1e3
                checks.append((f"cuda {name}: fwd {mine.fwd_ms:.3f} ms <= 3 x {read_ms:.3f} ms (inputs read once at {bandwidth:.0f} GB/s)", mine.fwd_ms <= 3 * read_ms))
    print_table(records)
    session.finish(records, args.json)
    report_targets(checks, args.check)


if __name__ == "__main__":
    main()
