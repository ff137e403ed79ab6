"""FID feature extraction and LPIPS throughput: pydeform against the plain way, same run.

    python benchmarks/metrics.py [--batch 50] [--batches 2] [--repeats 3] [--no-compile] [--json PATH]

FID statistics pass (256 x 176 images, batch 50, features -> mu, sigma):
- "plain pytorch-fid": the same network and weights run as pytorch-fid's `fid_score.py` runs
  its InceptionV3 (mseitzer/pytorch-fid): eval mode under `torch.no_grad()`, NCHW tensors,
  each conv followed by its BatchNorm and ReLU, `F.interpolate` to 299 then 2x - 1, features
  to numpy per batch, then np.mean / np.cov;
- "pydeform": `InceptionV3FID(resize="pytorch-fid")` under `torch.inference_mode()`
  (BatchNorm folded into the convolutions, channels_last), same statistics code;
- "pydeform + compile": the same module through `torch.compile`.
The largest differences of the features, mu and sigma against the plain run are printed
("same numbers"); FID itself is not, as a few hundred samples in 2048 dimensions give singular
covariances. Target: pydeform >= 1.5x the plain images/s on CPU.

LPIPS (AlexNet, 256 x 176 pairs, batch 50): eager NCHW, eager channels_last, torch.compile.

Weights are random with the real files' layouts (no weights are downloaded); the timing does
not depend on their values. Timings alternate between implementations, median of --repeats.
The machine's load average is printed: on a shared machine, read the figures with it.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import device_name  # noqa: E402

from pydeform.metrics import LPIPS, feature_stats  # noqa: E402
from pydeform.nets import InceptionV3FID  # noqa: E402
from pydeform.nets.inception import BasicConv2d  # noqa: E402


def _conv(m: BasicConv2d, x: torch.Tensor) -> torch.Tensor:
    """torchvision's BasicConv2d, which pytorch-fid uses: conv, then BatchNorm, then ReLU."""
    return F.relu(m.bn(m.conv(x)), inplace=True)


def _avg(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def _block(b, x: torch.Tensor) -> torch.Tensor:
    """pytorch-fid's FIDInceptionA/C/E_1/E_2 and torchvision's InceptionB/D, branch by branch."""
    kind = type(b).__name__
    if kind == "InceptionA":
        return torch.cat([_conv(b.branch1x1, x), _conv(b.branch5x5_2, _conv(b.branch5x5_1, x)),
                          _conv(b.branch3x3dbl_3, _conv(b.branch3x3dbl_2, _conv(b.branch3x3dbl_1, x))),
                          _conv(b.branch_pool, _avg(x))], 1)
    if kind == "InceptionB":
        return torch.cat([_conv(b.branch3x3, x),
                          _conv(b.branch3x3dbl_3, _conv(b.branch3x3dbl_2, _conv(b.branch3x3dbl_1, x))),
                          F.max_pool2d(x, kernel_size=3, stride=2)], 1)
    if kind == "InceptionC":
        b7 = _conv(b.branch7x7_3, _conv(b.branch7x7_2, _conv(b.branch7x7_1, x)))
        d = x
        for m in (b.branch7x7dbl_1, b.branch7x7dbl_2, b.branch7x7dbl_3, b.branch7x7dbl_4, b.branch7x7dbl_5):
            d = _conv(m, d)
        return torch.cat([_conv(b.branch1x1, x), b7, d, _conv(b.branch_pool, _avg(x))], 1)
    if kind == "InceptionD":
        b7 = x
        for m in (b.branch7x7x3_1, b.branch7x7x3_2, b.branch7x7x3_3, b.branch7x7x3_4):
            b7 = _conv(m, b7)
        return torch.cat([_conv(b.branch3x3_2, _conv(b.branch3x3_1, x)), b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)
    b3 = _conv(b.branch3x3_1, x)
    d = _conv(b.branch3x3dbl_2, _conv(b.branch3x3dbl_1, x))
    pool = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if b.max_pool else _avg(x)
    return torch.cat([_conv(b.branch1x1, x), _conv(b.branch3x3_2a, b3), _conv(b.branch3x3_2b, b3),
                      _conv(b.branch3x3dbl_3a, d), _conv(b.branch3x3dbl_3b, d), _conv(b.branch_pool, pool)], 1)


def plain_forward(net: InceptionV3FID, images: torch.Tensor) -> torch.Tensor:
    """pytorch-fid's InceptionV3.forward (resize_input, normalize_input, the blocks, the pool),
    NCHW, on `net`'s weights."""
    x = F.interpolate(images.float() / 255, size=(299, 299), mode="bilinear", align_corners=False)
    x = 2 * x - 1
    x = _conv(net.Conv2d_2b_3x3, _conv(net.Conv2d_2a_3x3, _conv(net.Conv2d_1a_3x3, x)))
    x = F.max_pool2d(x, kernel_size=3, stride=2)
    x = _conv(net.Conv2d_4a_3x3, _conv(net.Conv2d_3b_1x1, x))
    x = F.max_pool2d(x, kernel_size=3, stride=2)
    for block in (net.Mixed_5b, net.Mixed_5c, net.Mixed_5d, net.Mixed_6a, net.Mixed_6b, net.Mixed_6c,
                  net.Mixed_6d, net.Mixed_6e, net.Mixed_7a, net.Mixed_7b, net.Mixed_7c):
        x = _block(block, x)
    return F.adaptive_avg_pool2d(x, output_size=(1, 1))


def stats_plain(net: InceptionV3FID, batches: list[torch.Tensor]):
    """fid_score.py's get_activations + calculate_activation_statistics."""
    rows = []
    with torch.no_grad():
        for batch in batches:
            pred = plain_forward(net, batch)
            rows.append(pred.squeeze(3).squeeze(2).cpu().numpy())
    return feature_stats(np.concatenate(rows)), np.concatenate(rows)


def stats_pydeform(net, batches: list[torch.Tensor]):
    rows = []
    with torch.inference_mode():
        for batch in batches:
            rows.append(net(batch)[0].cpu().numpy())
    return feature_stats(np.concatenate(rows)), np.concatenate(rows)


def _alternate(impls: dict, repeats: int) -> dict[str, tuple[float, float]]:
    """(median, best) seconds per call of each implementation, alternating between them. On a
    shared machine the best run is the one least disturbed by other processes."""
    times: dict[str, list[float]] = {name: [] for name in impls}
    for _ in range(repeats):
        for name, fn in impls.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(values), min(values)) for name, values in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--batches", type=int, default=2, help="batches per statistics pass")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    torch.manual_seed(0)
    load_before = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    device = torch.device("cpu")
    print(f"device: {device_name(device)}; torch {torch.__version__}; load average before: {' '.join(load_before)}")
    records: dict = {"device": device_name(device), "torch": torch.__version__, "load_before": load_before,
                     "batch": args.batch, "image": [256, 176]}

    # --- FID statistics pass -------------------------------------------------------------------
    net = InceptionV3FID(random_weights=True, resize="pytorch-fid")
    with torch.no_grad():  # He-normal convolutions (input-sensitive outputs), BatchNorm that is not the identity
        for module in net.modules():
            if isinstance(module, BasicConv2d):
                module.conv.weight.normal_(0, (2 / module.conv.weight[0].numel()) ** 0.5)
                module.bn.running_mean.normal_(0, 0.1)
                module.bn.running_var.uniform_(0.5, 1.5)
    batches = [torch.randint(0, 256, (args.batch, 3, 256, 176), dtype=torch.uint8) for _ in range(args.batches)]
    impls = {"plain pytorch-fid": lambda: stats_plain(net, batches), "pydeform": lambda: stats_pydeform(net, batches)}
    if not args.no_compile:
        compiled = torch.compile(net)
        impls["pydeform + compile"] = lambda: stats_pydeform(compiled, batches)
    warm = {name: fn() for name, fn in impls.items()}  # warm-up (and compilation)
    seconds = _alternate(impls, args.repeats)
    images = args.batch * args.batches
    base_stats, base_rows = warm["plain pytorch-fid"]
    print(f"\nFID statistics pass, {images} images of 256x176 in batches of {args.batch}:")
    print(f"{'implementation':24s} {'images/s':>9s} {'speed-up':>9s} {'best img/s':>10s} {'best x':>7s} "
          f"{'max |dfeature|':>15s} {'max |dmu|':>10s} {'max |dsigma|':>12s}")
    records["fid_pass"] = []
    for name, (value, best) in seconds.items():
        stats, rows = warm[name]
        difference = float(np.abs(rows - base_rows).max())
        dmu = float(np.abs(stats.mu - base_stats.mu).max())
        dsigma = float(np.abs(stats.sigma - base_stats.sigma).max())
        rate, best_rate = images / value, images / best
        speedup, best_speedup = seconds["plain pytorch-fid"][0] / value, seconds["plain pytorch-fid"][1] / best
        print(f"{name:24s} {rate:9.2f} {speedup:8.2f}x {best_rate:10.2f} {best_speedup:6.2f}x "
              f"{difference:15.2e} {dmu:10.2e} {dsigma:12.2e}")
        records["fid_pass"].append({"impl": name, "images_per_s": rate, "speedup": speedup,
                                    "best_images_per_s": best_rate, "best_speedup": best_speedup,
                                    "max_feature_difference": difference, "max_mu_difference": dmu,
                                    "max_sigma_difference": dsigma})

    # --- LPIPS ----------------------------------------------------------------------------------
    lpips = LPIPS("alex", random_weights=True)
    x = torch.rand(args.batch, 3, 256, 176) * 2 - 1
    y = torch.rand(args.batch, 3, 256, 176) * 2 - 1
    xc, yc = x.contiguous(memory_format=torch.channels_last), y.contiguous(memory_format=torch.channels_last)

    def run(model, a, b):
        with torch.inference_mode():
            return model(a, b)

    impls = {"eager NCHW": lambda: run(lpips, x, y), "eager channels_last": lambda: run(lpips, xc, yc)}
    if not args.no_compile:
        compiled_lpips = torch.compile(lpips)
        impls["compile channels_last"] = lambda: run(compiled_lpips, xc, yc)
    warm = {name: fn() for name, fn in impls.items()}
    seconds = _alternate(impls, args.repeats)
    print(f"\nLPIPS (AlexNet), pairs of 256x176 in batches of {args.batch}:")
    print(f"{'implementation':24s} {'pairs/s':>9s} {'speed-up':>9s} {'best p/s':>9s} {'best x':>7s} {'max |d|':>10s}")
    records["lpips"] = []
    for name, (value, best) in seconds.items():
        difference = float((warm[name] - warm["eager NCHW"]).abs().max())
        rate, speedup = args.batch / value, seconds["eager NCHW"][0] / value
        best_rate, best_speedup = args.batch / best, seconds["eager NCHW"][1] / best
        print(f"{name:24s} {rate:9.1f} {speedup:8.2f}x {best_rate:9.1f} {best_speedup:6.2f}x {difference:10.2e}")
        records["lpips"].append({"impl": name, "pairs_per_s": rate, "speedup": speedup, "best_pairs_per_s": best_rate,
                                 "best_speedup": best_speedup, "max_difference": difference})

    load_after = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    records["load_after"] = load_after
    print(f"\nload average after: {' '.join(load_after)} ({os.cpu_count()} CPUs)")
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=2) + "\n")
    ours = next(r for r in records["fid_pass"] if r["impl"] == "pydeform")
    print(f"target pydeform >= 1.5x plain: median {ours['speedup']:.2f}x, best {ours['best_speedup']:.2f}x "
          f"({'met' if ours['speedup'] >= 1.5 else 'MISSED'} on the median)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
