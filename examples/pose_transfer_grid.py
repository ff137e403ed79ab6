"""Side-by-side grid of pose-transfer test runs: one row per test pair, columns source |
target pose | each run's generated image | real target.

    python examples/pose_transfer_grid.py OUT.png TEST_DIR [TEST_DIR ...] [--rows 6]

Each TEST_DIR is the --out of a `pydeform test deformgan|patn|vunet` on the same test split
(the images it wrote in TEST_DIR/images, named <source>___<target>.png); the split is the one
named in the first one's metrics.json; rows are spread evenly over it.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("tests", type=Path, nargs="+", metavar="TEST_DIR")
    parser.add_argument("--rows", type=int, default=6)
    args = parser.parse_args()
    for test in args.tests:
        if not (test / "metrics.json").is_file():
            raise SystemExit(f"{test} holds no metrics.json: run `pydeform test ... --out {test}` first")
    data = json.loads((args.tests[0] / "metrics.json").read_text())["data"]
    pairs = PosePairs(data, "synth", "test")
    rows = []
    for index in np.linspace(0, len(pairs) - 1, args.rows).round().astype(int):
        item = pairs[int(index)]
        name = f"{Path(item['source_name']).stem}___{Path(item['target_name']).stem}.png"
        generated = [
            torch.from_numpy(np.array(Image.open(test / "images" / name))).permute(2, 0, 1) / 127.5 - 1
            for test in args.tests
        ]
        pose = stickman(item["target_kp"], tuple(item["target"].shape[-2:])) * 2 - 1
        rows.append([item["source"], pose, *generated, item["target"]])
    save_image_grid(rows, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
