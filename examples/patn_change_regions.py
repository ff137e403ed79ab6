"""How much of each test pair must change, inside the target's body and outside it.

A pose-transfer generator starts from the source image, so an attention mask that gates its
updates has to open wherever the target differs from the source. This script measures that on
the test split of a pose-pair set, over the regions in which `pydeform test patn` measures
attention (`attention_regions`: inside the target's body; outside it, split into the source's
body and the background of both): the mean |target - source| (images in [-1, 1], mean over
RGB) and the fraction of pixels where that exceeds 0.1 (5% of the range). The ratio inside
over outside is the one a mask that opens exactly where the image must change would reach.

Usage: python examples/patn_change_regions.py [LABEL=FOLDER ...] [--out OUT.json]
Without a set: the table's synthetic set (128x64, written into the cache if needed). Every
folder is read with the file prefix "synth" (`pydeform synth pose-pairs`).
"""
import argparse
import json

import torch
from torch.utils.data import DataLoader

from pydeform.train.patn import PATNPairs, attention_regions
from pydeform.train.pose_transfer import pose_pair_folder

CHANGED = 0.1  # |target - source| above this counts as a changed pixel


def change_by_region(root: str, name: str = "synth") -> dict:
    test_set = PATNPairs(root, name, "test")
    sums: dict[str, torch.Tensor] = {}
    for batch in DataLoader(test_set, batch_size=50):
        change = (batch["target"] - batch["source"]).abs().mean(dim=1, keepdim=True).double()
        for region, where in attention_regions(batch).items():
            values = change[where]
            total = torch.stack([values.sum(), (values > CHANGED).sum().double(), torch.tensor(float(values.numel()))])
            sums[region] = sums.get(region, 0) + total
    result = {region: {"mean_abs_change": float(s[0] / s[2]), "changed_fraction": float(s[1] / s[2]),
                       "pixels": int(s[2])} for region, s in sums.items()}  # fmt: skip
    inside, outside = result["inside"], result["outside"]
    result["ratio_mean_abs_change"] = inside["mean_abs_change"] / outside["mean_abs_change"]
    result["ratio_changed_fraction"] = inside["changed_fraction"] / outside["changed_fraction"]
    result["test_pairs"] = len(test_set)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sets", nargs="*", metavar="LABEL=FOLDER")
    parser.add_argument("--out", help="write the figures as JSON")
    args = parser.parse_args()
    sets = dict(s.split("=", 1) for s in args.sets)
    if not sets:
        sets = {"table": str(pose_pair_folder(None, None, "market", (128, 64), 100, True)[0])}
    results = {}
    for label, root in sets.items():
        results[label] = {"data": root, **change_by_region(root)}
        r = results[label]
        print(f"{label}: changed pixels inside {r['inside']['changed_fraction']:.2f}, outside "
              f"{r['outside']['changed_fraction']:.2f} (source body {r['source_only']['changed_fraction']:.2f}, "
              f"background {r['background']['changed_fraction']:.2f}); inside/outside: mean |change| "
              f"{r['ratio_mean_abs_change']:.2f}, changed fraction {r['ratio_changed_fraction']:.2f}")  # fmt: skip
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"command": "python examples/patn_change_regions.py " + " ".join(args.sets),
                       "changed_threshold": CHANGED, "sets": results}, f, indent=2)  # fmt: skip


if __name__ == "__main__":
    main()
