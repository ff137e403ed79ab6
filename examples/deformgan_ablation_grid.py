"""Side-by-side grid of an ablation run (examples/deformgan_ablation.sh): one row per test
pair, columns source | target pose | baseline | dsc | full | real target.

    python examples/deformgan_ablation_grid.py RUNS_DIR OUT.png [--rows 6]

Reads the images `pydeform test deformgan` wrote into RUNS_DIR/<variant>/test/images and the
test split named in RUNS_DIR/full/test/metrics.json; rows are spread evenly over the split.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pydeform.data import PosePairs
from pydeform.pose import stickman
from pydeform.train.common import save_image_grid

VARIANTS = ("baseline", "dsc", "full")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--rows", type=int, default=6)
    args = parser.parse_args()
    data = json.loads((args.runs / "full" / "test" / "metrics.json").read_text())["data"]
    pairs = PosePairs(data, "synth", "test")
    rows = []
    for index in np.linspace(0, len(pairs) - 1, args.rows).round().astype(int):
        item = pairs[int(index)]
        name = f"{Path(item['source_name']).stem}___{Path(item['target_name']).stem}.png"
        generated = [
            torch.from_numpy(np.array(Image.open(args.runs / v / "test" / "images" / name))).permute(2, 0, 1) / 127.5 - 1
            for v in VARIANTS
        ]
        pose = stickman(item["target_kp"], tuple(item["target"].shape[-2:])) * 2 - 1
        rows.append([item["source"], pose, *generated, item["target"]])
    save_image_grid(rows, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
