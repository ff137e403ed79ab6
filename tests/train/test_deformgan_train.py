"""The Deformable GAN trainer and the shared trainer utilities (pydeform.train)."""
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pydeform
from pydeform.data.synth_pose import write_pose_pairs
from pydeform.models import DeformGANConfig
from pydeform.train import common
from pydeform.train.common import JsonlLogger, load_checkpoint, render_pose, save_checkpoint
from pydeform.train.engine import ResumableBatchSampler
from pydeform.train.deformgan import TrainConfig, train

SIZE = (64, 32)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """A tiny synthetic set in the Market-1501 layout: 64x32 images, 3 people with 12
    training pairs, 1 person with 4 test pairs."""
    root = tmp_path_factory.mktemp("synth")
    written = write_pose_pairs(root, SIZE, identities=4, seed=0, name="market", max_pairs_per_identity=4, progress=False)
    assert written.num_pairs == {"train": 12, "test": 4}
    return root


def tiny(data_root: Path, out: Path, **overrides) -> TrainConfig:
    settings = dict(
        model=DeformGANConfig(variant="full", size=SIZE, ngf=8, ndf=8),
        out=str(out), data=str(data_root), batch_size=2, random_vgg=True, workers=0,
        progress=False, log_every=1, sample_every=0, checkpoint_every=0, steps=2,
    )  # fmt: skip
    settings.update(overrides)
    return TrainConfig(**settings)


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ----------------------------------------------------------------------------- training runs


def test_two_step_run_writes_log_samples_and_checkpoint(data_root, tmp_path):
    out = tmp_path / "run"
    result = train(tiny(data_root, out, steps=2, sample_every=1))
    log = read_log(out / "log.jsonl")
    assert [r["step"] for r in log] == [1, 2]
    for record in log:
        assert {"loss_d", "g_total", "g_gan", "g_nn", "it_s", "time"} <= set(record)
        assert all(np.isfinite(record[k]) for k in ("loss_d", "g_total", "g_gan", "g_nn"))
        assert record["g_total"] == pytest.approx(record["g_gan"] + 0.01 * record["g_nn"], rel=1e-5)
    assert result["g_total"] == log[-1]["g_total"]

    # 4 test pairs per grid row: source | target pose | generated | real, 2 px white borders.
    grids = sorted((out / "samples").glob("*.png"))
    assert [g.name for g in grids] == ["step_0000001.png", "step_0000002.png"]
    grid = np.asarray(Image.open(grids[-1]))
    H, W = SIZE
    assert grid.shape == (4 * (H + 2) + 2, 4 * (W + 2) + 2, 3)
    assert (grid[:2] == 255).all() and grid[2:2 + H, 2:2 + W].std() > 0

    state = load_checkpoint(out / "checkpoint.pt")
    assert state["step"] == 2 and state["world_size"] == 1
    assert DeformGANConfig.from_dict(state["config"]) == DeformGANConfig(variant="full", size=SIZE, ngf=8, ndf=8)
    assert {"generator", "discriminator", "opt_g", "opt_d", "scaler"} <= set(state)
    assert json.loads((out / "config.json").read_text())["steps"] == 2


def test_resume_gives_the_uninterrupted_run(data_root, tmp_path):
    # 6 steps straight vs 3 + 3 resumed: the same weights, optimiser state and logged losses,
    # bit for bit (dropout, data order and Adam state carried over). 12 pairs in batches of
    # 5 make 2 steps per epoch: the resumed run starts mid-epoch and crosses an epoch.
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(tiny(data_root, straight, steps=6, batch_size=5))
    train(tiny(data_root, split, steps=3, batch_size=5))
    train(tiny(data_root, split, steps=6, batch_size=5, resume=True))
    a, b = load_checkpoint(straight / "checkpoint.pt"), load_checkpoint(split / "checkpoint.pt")
    for key in ("generator", "discriminator"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name} differs after resuming"
    for key in ("opt_g", "opt_d"):
        assert a[key]["state"].keys() == b[key]["state"].keys()
        for index, state in a[key]["state"].items():
            for name, value in state.items():
                assert torch.equal(value, b[key]["state"][index][name]), f"{key} {index} {name}"
    log_a, log_b = read_log(straight / "log.jsonl"), read_log(split / "log.jsonl")
    assert [r["step"] for r in log_b] == [1, 2, 3, 4, 5, 6]
    for ra, rb in zip(log_a, log_b):
        assert {k: ra[k] for k in ra if k not in ("it_s", "time")} == {k: rb[k] for k in rb if k not in ("it_s", "time")}


def test_resume_refuses_a_different_model(data_root, tmp_path):
    out = tmp_path / "run"
    train(tiny(data_root, out, steps=1))
    with pytest.raises(ValueError, match="ngf"):
        train(tiny(data_root, out, steps=2, resume=True, model=DeformGANConfig(variant="full", size=SIZE, ngf=16, ndf=8)))


def test_refuses_full_variant_without_vgg(data_root, tmp_path):
    with pytest.raises(ValueError, match="random_vgg"):
        tiny(data_root, tmp_path, random_vgg=False)
    tiny(data_root, tmp_path, random_vgg=False, model=DeformGANConfig(variant="dsc", size=SIZE))  # L1: no VGG needed


def test_refuses_a_dataset_of_another_size(data_root, tmp_path):
    with pytest.raises(ValueError, match="64x32 images but the model expects 128x64"):
        train(tiny(data_root, tmp_path, model=DeformGANConfig(variant="dsc", ngf=4, ndf=4)))


def test_amp_needs_cuda(data_root, tmp_path):
    with pytest.raises(ValueError, match="cuda"):
        tiny(data_root, tmp_path, amp=True)


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not installed")
def test_ddp_two_cpu_processes(data_root, tmp_path):
    out = tmp_path / "ddp"
    command = [
        "torchrun", "--standalone", "--nproc_per_node=2", "-m", "pydeform.cli", "train", "deformgan",
        "--data", str(data_root), "--name", "market", "--size", "64x32", "--ngf", "4", "--ndf", "4",
        "--steps", "2", "--batch-size", "2", "--random-vgg", "--workers", "0", "--log-every", "1",
        "--out", str(out), "--no-progress",
    ]  # fmt: skip
    # The workers import the pydeform this test imported (the installed package in CI, the
    # source tree with its compiled module here), not whatever the working folder holds.
    package_parent = str(Path(pydeform.__file__).resolve().parents[1])
    pythonpath = package_parent + os.pathsep + os.environ.get("PYTHONPATH", "")
    env = {**os.environ, "PYTHONPATH": pythonpath, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    # Rank 0 alone writes: one log line per step, one note, one checkpoint.
    assert [r["step"] for r in read_log(out / "log.jsonl")] == [1, 2]
    assert run.stdout.count("--random-vgg: the NN loss") == 1
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["step"] == 2 and state["world_size"] == 2
    assert not any(k.startswith("module.") for k in state["generator"])  # saved unwrapped
    assert len(list((out / "samples").glob("*.png"))) == 1


# ----------------------------------------------------------------------------- utilities


def test_checkpoint_crash_mid_write_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"step": 1, "w": torch.ones(3)}, path)

    def crash(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(common.torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    state = load_checkpoint(path)
    assert state["step"] == 1 and torch.equal(state["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]  # no temporary file left
    save_checkpoint({"step": 3}, path)
    assert load_checkpoint(path)["step"] == 3


def test_batch_sampler_resumes_and_splits_ranks():
    def take(sampler, n):
        batches = iter(sampler)
        return [next(batches) for _ in range(n)]

    whole = take(ResumableBatchSampler(10, 3, seed=5), 9)  # 3 batches per epoch
    assert take(ResumableBatchSampler(10, 3, seed=5, start_step=4), 5) == whole[4:]
    for epoch in range(3):
        seen = sum(whole[3 * epoch : 3 * epoch + 3], [])
        assert len(set(seen)) == 9 and set(seen) <= set(range(10))
    assert whole[:3] != whole[3:6]  # a new order each epoch
    ranks = [take(ResumableBatchSampler(10, 2, seed=5, rank=r, world_size=2), 2) for r in (0, 1)]
    assert not set(sum(ranks[0], [])) & set(sum(ranks[1], []))
    with pytest.raises(ValueError, match="batch"):
        ResumableBatchSampler(3, 4, seed=0)


def test_jsonl_logger_keeps_lines_up_to_the_resumed_step(tmp_path):
    path = tmp_path / "log.jsonl"
    with JsonlLogger(path) as log:
        for step in (1, 2, 3, 4):
            log.log(step, loss=torch.tensor(step / 2))
    with open(path, "a") as f:
        f.write('{"step": 5, "lo')  # a line torn by a crash
    with JsonlLogger(path, keep_until=2) as log:
        log.log(3, loss=9.0)
    assert read_log(path) == [{"step": 1, "loss": 0.5}, {"step": 2, "loss": 1.0}, {"step": 3, "loss": 9.0}]
    JsonlLogger(path).close()  # a fresh run starts empty
    assert path.read_text() == ""


def test_render_pose_colours_each_joint():
    heat = torch.zeros(1, 18, 4, 4)
    heat[0, 0, 1, 1] = 1.0  # joint 0: hue 0, red
    heat[0, 6, 2, 2] = 1.0  # joint 6: hue 1/3, green
    picture = render_pose(heat)
    assert picture.shape == (1, 3, 4, 4)
    torch.testing.assert_close(picture[0, :, 1, 1], torch.tensor([1.0, -1.0, -1.0]))
    torch.testing.assert_close(picture[0, :, 2, 2], torch.tensor([-1.0, 1.0, -1.0]))
    assert (picture[0, :, 0, 0] == -1).all()


def test_step_seeds_differ_by_rank_and_step():
    seeds = {common.step_seed(0, rank, step) for rank in range(3) for step in range(100)}
    assert len(seeds) == 300 and all(0 <= s < 2**63 for s in seeds)
    assert common.step_seed(7, 1, 2) == common.step_seed(7, 1, 2)
