"""Where each attention block of a trained PATN acts, on its test pairs.

Per block t: the channel-mean mask M_t inside / outside the target's body (as `pydeform test
patn`, with the body mask area-averaged to the blocks' grid instead of the mask upsampled),
the mean magnitude of the block's update |img_conv(x1) * M_t| inside / outside, and the share
of channels whose own mask ratio is at least 2.

Usage: python examples/patn_attention_probe.py CHECKPOINT [OUT.json]
"""
import json
import sys

import torch
import torch.nn.functional as F
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
    blocks, channels = config.n_blocks, 4 * config.ngf
    mask_sum = torch.zeros(blocks, 2, dtype=torch.float64)  # [inside, outside]
    update_sum = torch.zeros(blocks, 2, dtype=torch.float64)
    channel_sum = torch.zeros(blocks, 2, channels, dtype=torch.float64)
    pixels = torch.zeros(2, dtype=torch.float64)
    with torch.no_grad():
        for batch in DataLoader(test_set, batch_size=16):
            image, pose = patn._generator_inputs(batch)
            x1, x2 = generator.image_encoder(image), generator.pose_encoder(pose)
            inside = F.adaptive_avg_pool2d(batch["target_mask"].float(), x1.shape[-2:]) > 0.5
            regions = (inside, ~inside)
            pixels += torch.tensor([float(r.sum()) for r in regions], dtype=torch.float64)
            for t, block in enumerate(generator.blocks):
                a = block.pose_conv(x2)
                mask = torch.sigmoid(a)
                update = block.appearance(x1) * mask
                x1 = x1 + update
                x2 = torch.cat([a, x1], dim=1)
                for k, region in enumerate(regions):
                    mask_sum[t, k] += mask.mean(1, keepdim=True)[region].double().sum()
                    update_sum[t, k] += update.abs().mean(1, keepdim=True)[region].double().sum()
                    channel_sum[t, k] += (mask * region).double().sum((0, 2, 3))
    rows = []
    for t in range(blocks):
        m_in, m_out = (mask_sum[t] / pixels).tolist()
        u_in, u_out = (update_sum[t] / pixels).tolist()
        per_channel = (channel_sum[t, 0] / pixels[0]) / (channel_sum[t, 1] / pixels[1])
        rows.append({"block": t + 1, "mask_inside": m_in, "mask_outside": m_out, "mask_ratio": m_in / m_out,
                     "update_ratio": u_in / u_out, "channels_ratio_ge_2": float((per_channel >= 2).double().mean())})
        print(f"block {t + 1}: mask {m_in:.3f} / {m_out:.3f} = {m_in / m_out:.2f}, |update| ratio {u_in / u_out:.2f}, "
              f"channels with ratio >= 2: {rows[-1]['channels_ratio_ge_2']:.2f}")
    if out is not None:
        with open(out, "w") as f:
            json.dump({"checkpoint": checkpoint, "test_pairs": len(test_set), "blocks": rows}, f, indent=2)


if __name__ == "__main__":
    main(*sys.argv[1:3])
