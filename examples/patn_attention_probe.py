"""Where each attention block of a trained PATN acts, on its test pairs.

Per block t, with the protocol of `pydeform test patn` (`attention_sums` over
`attention_regions`): the channel-mean mask M_t inside / outside the target's body, and the
same for the magnitude of the block's update |x1' - x1| = |img_conv(x1) * M_t|, read from the
generator's own forward by a hook on each block.

Usage: python examples/patn_attention_probe.py CHECKPOINT [OUT.json]
"""
import json
import sys

import torch
from torch.utils.data import DataLoader

from pydeform.models.patn import PRESETS, PATNConfig, build_generator
from pydeform.train import patn
from pydeform.train.engine import open_trained
from pydeform.train.pose_transfer import pose_pair_folder


def main(checkpoint: str, out: str | None = None) -> None:
    state, config, trained = open_trained(checkpoint, patn.CHECKPOINT_KIND, "PATN", PATNConfig)
    root, name = pose_pair_folder(trained.get("data"), trained.get("name"), PRESETS[config.preset].data_name,
                                  config.image_size, trained.get("synth_identities", 100), False)  # fmt: skip
    crop = trained.get("crop_columns")
    test_set = patn._open_pairs(root, name, "test", trained.get("heatmaps", "gaussian"),
                                tuple(crop) if crop is not None else None, config)  # fmt: skip
    generator = build_generator(config)
    generator.load_state_dict(state["generator"])
    generator.eval()
    updates: list[torch.Tensor] = []
    for block in generator.blocks:  # a block returns (x1', x2', M) for inputs (x1, x2)
        block.register_forward_hook(lambda module, inputs, outputs: updates.append((outputs[0] - inputs[0]).abs()))
    regions = ("inside", "outside")
    totals = {key: torch.zeros(len(generator.blocks), 2, dtype=torch.float64) for key in ("mask", "update")}
    pixels = torch.zeros(2, dtype=torch.float64)
    with torch.no_grad():
        for batch in DataLoader(test_set, batch_size=16):
            updates.clear()
            _, masks = generator(*patn._generator_inputs(batch), return_attention=True)
            where = patn.attention_regions(batch)
            for key, maps in (("mask", masks), ("update", updates)):
                for t, block_sums in enumerate(patn.attention_sums(maps, where)):
                    totals[key][t] += torch.tensor([block_sums[r][0] for r in regions], dtype=torch.float64)
            pixels += torch.tensor([float(where[r].sum()) for r in regions], dtype=torch.float64)
    rows = []
    for t in range(len(generator.blocks)):
        row = {"block": t + 1}
        for key, total in totals.items():
            inside, outside = (total[t] / pixels).tolist()
            row.update({f"{key}_inside": inside, f"{key}_outside": outside, f"{key}_ratio": inside / outside})
        rows.append(row)
        print(f"block {t + 1}: mask {row['mask_inside']:.3f} / {row['mask_outside']:.3f} = {row['mask_ratio']:.2f}, "
              f"|update| {row['update_inside']:.4f} / {row['update_outside']:.4f} = {row['update_ratio']:.2f}")
    if out is not None:
        with open(out, "w") as f:
            json.dump({"checkpoint": checkpoint, "test_pairs": len(test_set), "blocks": rows}, f, indent=2)


if __name__ == "__main__":
    main(*sys.argv[1:3])
