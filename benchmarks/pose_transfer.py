"""Pose-transfer models side by side: PATN (Zhu et al. 2019), the nested residual attention
variant (Zhong & Tan 2021) and the Deformable GAN (full), at each preset's size.

    python benchmarks/pose_transfer.py [--device cpu|cuda] [--presets market,fashion]
        [--models patn,nested,deformgan] [--modes eager,compile] [--train-batch 4] [--repeats 5] [--json out.json]

Per model and preset:
- parameters of the generator and of the discriminators;
- inference throughput (images per second; generator only, eval mode, no_grad) at batch 1
  and batch 16: the frames-per-second measure of the nested-attention paper, whose only
  speed claim is FPS;
- the time of one training step (`Recipe.train_step`: every network's forward, backward and
  Adam update, the losses with random VGG19 features: same cost as trained ones) at
  `--train-batch` pairs.
Each in eager mode and with `torch.compile` on the networks (the default inductor backend;
compilation happens in the warm-up and is not timed). Median of `--repeats` timed runs,
modes alternating per round.

The load average (`os.getloadavg()`) is recorded before and after; a run whose load exceeds
the core count is marked "loaded" and is not a result.

Sizes: market 128x64 for all; fashion 256x176 for PATN (its published crop) and 256x256 for
the Deformable GAN (its published size). Inputs are synthetic pose pairs of those sizes.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

import torch
from torch.utils.data import default_collate

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import device_name  # noqa: E402

from pydeform.data import PosePairs  # noqa: E402
from pydeform.data.synth_pose import write_pose_pairs  # noqa: E402
from pydeform.models.deformgan import DeformGANConfig  # noqa: E402
from pydeform.models.patn import PATNConfig  # noqa: E402
from pydeform.train import deformgan, patn  # noqa: E402
from pydeform.train.common import DistInfo, seed_everything  # noqa: E402
from pydeform.train.engine import Run  # noqa: E402

MODELS = ("patn", "nested", "deformgan")
MODES = ("eager", "compile")


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def pose_batch(size: tuple[int, int], batch_size: int, device: torch.device) -> dict[str, torch.Tensor]:
    """`batch_size` pairs of a tiny synthetic set at `size` (repeated when it has fewer)."""
    with tempfile.TemporaryDirectory() as root:
        write_pose_pairs(root, size, identities=3, seed=0, name="synth", images_per_identity=3, progress=False)
        pairs = PosePairs(root, "synth", "train")
        items = [pairs[i % len(pairs)] for i in range(batch_size)]
    batch = default_collate(items)
    return {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}


def build(model: str, preset: str, device: torch.device, compiled: bool):
    """(recipe with built networks, generator call on a batch, sizes)."""
    with tempfile.TemporaryDirectory() as out:
        if model == "deformgan":
            # norm/init of the recorded figures (the defaults before the authors' keras norm and init)
            dgan = DeformGANConfig(preset=preset, variant="full", norm="instance", init="normal")
            config = deformgan.TrainConfig(out=out, model=dgan, random_vgg=True, device=device.type)
            recipe = deformgan.DeformGANRecipe(config)
        else:
            block = "patb" if model == "patn" else "nested"
            config = patn.TrainConfig(out=out, model=PATNConfig(preset=preset, block=block), random_vgg=True,
                                      device=device.type)  # fmt: skip
            recipe = patn.PATNRecipe(config)
    seed_everything(0)
    recipe.build(Run(config, DistInfo(0, 1, 0, device)), None)
    if model == "deformgan":
        discriminators = [recipe.discriminator]
        if compiled:
            recipe.generator = torch.compile(recipe.generator)
            recipe.discriminator = torch.compile(recipe.discriminator)

        def generate(batch):
            masks = [batch[f"masks{level}"] for level in range(4)]
            return recipe.generator(batch["source"], batch["source_pose"], batch["target_pose"], batch["theta"], masks)
    else:
        discriminators = [recipe.d_shape, recipe.d_appearance]
        if compiled:
            recipe.generator = torch.compile(recipe.generator)
            recipe.d_shape = torch.compile(recipe.d_shape)
            recipe.d_appearance = torch.compile(recipe.d_appearance)

        def generate(batch):
            return recipe.generator(batch["source"], torch.cat([batch["source_pose"], batch["target_pose"]], 1))

    params = {"generator": count(recipe.generator), "discriminators": sum(count(d) for d in discriminators)}
    return recipe, generate, params, config.model.image_size


def timed(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--presets", default="market,fashion")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--train-batch", type=int, default=4, help="pairs per training step (default 4)")
    parser.add_argument("--infer-batches", default="1,16")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs (median reported)")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device is available")
    infer_batches = [int(b) for b in args.infer_batches.split(",")]
    load_before = os.getloadavg()
    print(f"{device_name(device)}; load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}")
    results = []
    for preset in args.presets.split(","):
        for model in args.models.split(","):
            modes = args.modes.split(",")
            built = {mode: build(model, preset, device, mode == "compile") for mode in modes}
            _, _, params, size = built[modes[0]]
            batches = {b: pose_batch(size, b, device) for b in {*infer_batches, args.train_batch}}
            runs: dict[str, dict[str, list[float]]] = {mode: {} for mode in modes}
            jobs = {}
            for mode, (recipe, generate, _, _) in built.items():
                for b in infer_batches:
                    jobs[(mode, f"infer_b{b}")] = (lambda g=generate, r=recipe, x=batches[b]: _infer(r, g, x))
                step_batch = batches[args.train_batch]
                jobs[(mode, "train_step")] = (lambda r=recipe, x=step_batch: _train(r, x))
            warm = {}
            for key, job in jobs.items():  # warm-up; for compile this is the compilation
                warm[key] = timed(job, device)
            for _ in range(args.repeats):
                for (mode, name), job in jobs.items():
                    runs[mode].setdefault(name, []).append(timed(job, device))
            for mode in modes:
                record = {"model": model, "preset": preset, "size": list(size), "mode": mode, **params,
                          "train_batch": args.train_batch, "first_call_s": {n: warm[(mode, n)] for (m, n) in warm
                                                                             if m == mode}}  # fmt: skip
                for b in infer_batches:
                    seconds = statistics.median(runs[mode][f"infer_b{b}"])
                    record[f"infer_b{b}_ms"] = seconds * 1e3
                    record[f"infer_b{b}_images_per_s"] = b / seconds
                record["train_step_ms"] = statistics.median(runs[mode]["train_step"]) * 1e3
                record["loadavg_after"] = list(os.getloadavg())
                results.append(record)
                print(f"{preset:8s} {model:9s} {mode:8s} G {params['generator'] / 1e6:6.2f} M  D {params['discriminators'] / 1e6:5.2f} M  "
                      + "  ".join(f"b{b}: {record[f'infer_b{b}_images_per_s']:7.2f} img/s" for b in infer_batches)
                      + f"  train step (B={args.train_batch}): {record['train_step_ms']:8.1f} ms", flush=True)  # fmt: skip
    load_after = os.getloadavg()
    cores = os.cpu_count() or 1
    loaded = max(load_before[0], load_after[0]) > cores  # as benchmarks/_common.py marks runs
    print(f"load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}"
          + (f"; LOADED (above {cores} cores): not a result" if loaded else ""))  # fmt: skip
    if args.json:
        meta = {"device": device_name(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
                "python": platform.python_version(), "loadavg_before": list(load_before),
                "loadavg_after": list(load_after), "cores": cores, "loaded": loaded, "repeats": args.repeats}  # fmt: skip
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=2)


def _infer(recipe, generate, batch) -> None:
    recipe.generator.eval()
    with torch.no_grad():
        generate(batch)
    recipe.generator.train()


def _train(recipe, batch) -> None:
    recipe.train_step(0, {"train": batch})


if __name__ == "__main__":
    main()
