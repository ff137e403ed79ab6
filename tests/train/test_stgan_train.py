"""The ST-GAN trainer (pydeform.train.stgan): stages, freezing, history, resume, evaluation."""
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

from pydeform.data import Placement
from pydeform.data.synth_placement import CORNERS, write_placement
from pydeform.models.stgan import STGANConfig
from pydeform.train import stgan
from pydeform.train.common import load_checkpoint
from pydeform.train.stgan import FakeHistory, TrainConfig, _build_networks, _train_step, evaluate, train

SIZE = (16, 16)
SMALL = dict(g_widths=(4, 8, 8, 8, 8), d_widths=(4, 8, 8, 8, 8), fc=16)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """The synthetic placement task at 16x16: 12 training and 6 test samples."""
    root = tmp_path_factory.mktemp("placement")
    write_placement(root, size=SIZE, train=12, test=6, seed=0, progress=False, foregrounds=3)
    return root


def tiny(data_root: Path, out: Path, **overrides) -> TrainConfig:
    settings = dict(
        model=STGANConfig(size=SIZE, warps=2, **SMALL), out=str(out), data=str(data_root), steps_per_stage=2,
        d_steps=2, batch_size=4, lr_g=1e-3, lr_d=1e-3, workers=0, progress=False, log_every=1, sample_every=0,
        checkpoint_every=0, history=10,
    )  # fmt: skip
    settings.update(overrides)
    return TrainConfig(**settings)


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def random_batch(batch: int = 4, offset: float = 0.0) -> dict[str, torch.Tensor]:
    p_true = 0.1 * torch.randn(batch, 8)
    return {
        "background": torch.rand(batch, 3, *SIZE), "foreground": torch.rand(batch, 4, *SIZE),
        "real": torch.rand(batch, 3, *SIZE), "p_true": p_true, "p_init": p_true + offset,
    }  # fmt: skip


# ----------------------------------------------------------------------------- runs


def test_staged_run_writes_log_samples_and_checkpoint(data_root, tmp_path):
    out = tmp_path / "run"
    result = train(tiny(data_root, out))
    log = read_log(out / "log.jsonl")
    # Stage 0: the critic alone for d_steps = 2; then 2 steps for each of the 2 warps.
    assert [(r["step"], r["stage"]) for r in log] == [(1, 0), (2, 0), (3, 1), (4, 1), (5, 2), (6, 2)]
    assert {"loss_d", "wasserstein", "gp"} <= set(log[0]) and "loss_g" not in log[0]
    for record in log[2:]:
        assert {"loss_d", "wasserstein", "gp", "loss_g", "g_adv", "g_dp"} <= set(record)
        assert record["loss_g"] == pytest.approx(record["g_adv"] + record["g_dp"], rel=1e-4, abs=1e-7)
    assert result["step"] == 6 and result["loss_d"] == log[-1]["loss_d"]

    # Each stage end writes a grid: background | composite after 0..stage warps | real.
    grids = sorted((out / "samples").glob("*.png"))
    assert [g.name for g in grids] == ["step_0000002.png", "step_0000004.png", "step_0000006.png"]
    H, W = SIZE
    for grid, columns in zip(grids, (2 + 1, 2 + 2, 2 + 3)):
        assert np.asarray(Image.open(grid)).shape == (4 * (H + 2) + 2, columns * (W + 2) + 2, 3)
    # The first cell is the first test background, in [0, 1] -> 8 bits.
    background = Placement(data_root, "test")[0]["background"]
    cell = np.asarray(Image.open(grids[-1]))[2 : 2 + H, 2 : 2 + W]
    np.testing.assert_array_equal(cell, (background * 255).round().byte().permute(1, 2, 0).numpy())

    state = load_checkpoint(out / "checkpoint.pt")
    assert state["step"] == 6 and state["stage"] == 2
    assert STGANConfig.from_dict(state["config"]) == STGANConfig(size=SIZE, warps=2, **SMALL)
    assert {"generators", "discriminator", "opt_g", "opt_d", "history"} <= set(state) and len(state["opt_g"]) == 2
    assert state["history"]["images"].shape[1:] == (3, H, W)


def test_an_interrupted_run_resumes_bit_for_bit(data_root, tmp_path, monkeypatch):
    # 8 steps straight vs a run killed at step 5 (checkpoint of step 4, inside stage 1) and resumed.
    straight, split = tmp_path / "straight", tmp_path / "split"
    settings = dict(d_steps=2, steps_per_stage=3, checkpoint_every=2, batch_size=5)
    train(tiny(data_root, straight, **settings))

    real_step, calls = stgan._train_step, []

    def crash_at_step_5(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt("killed")
        return real_step(*args, **kwargs)

    monkeypatch.setattr(stgan, "_train_step", crash_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        train(tiny(data_root, split, **settings))
    monkeypatch.undo()
    assert load_checkpoint(split / "checkpoint.pt")["step"] == 4
    assert sorted(p.name for p in split.iterdir() if p.name.startswith(".")) == []  # no temporary files
    train(tiny(data_root, split, resume=True, **settings))

    a, b = load_checkpoint(straight / "checkpoint.pt"), load_checkpoint(split / "checkpoint.pt")
    for key in ("generators", "discriminator"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name} differs after resuming"
    for opt_a, opt_b in zip([*a["opt_g"], a["opt_d"]], [*b["opt_g"], b["opt_d"]]):
        for index, state in opt_a["state"].items():
            for name, value in state.items():
                assert torch.equal(value, opt_b["state"][index][name])
    assert torch.equal(a["history"]["images"], b["history"]["images"]) and a["history"]["next"] == b["history"]["next"]
    log_a, log_b = read_log(straight / "log.jsonl"), read_log(split / "log.jsonl")
    assert [r["step"] for r in log_b] == list(range(1, 9))
    strip = ("it_s", "time")
    assert [{k: v for k, v in r.items() if k not in strip} for r in log_a] == [
        {k: v for k, v in r.items() if k not in strip} for r in log_b
    ]
    # A finished run has nothing left to do.
    assert train(tiny(data_root, split, resume=True, **settings))["step"] == 8


def test_resume_refuses_other_settings(data_root, tmp_path):
    out = tmp_path / "run"
    train(tiny(data_root, out, d_steps=1, steps_per_stage=1))
    with pytest.raises(ValueError, match="fc"):
        train(tiny(data_root, out, d_steps=1, steps_per_stage=1, resume=True,
                   model=STGANConfig(size=SIZE, warps=2, **{**SMALL, "fc": 8})))  # fmt: skip
    with pytest.raises(ValueError, match="steps_per_stage"):
        train(tiny(data_root, out, d_steps=1, steps_per_stage=2, resume=True))


@pytest.mark.parametrize("copy", [True, False])
def test_init_from_previous_copies_the_last_generator(data_root, tmp_path, monkeypatch, copy):
    # Stage 2's steps are skipped, so generator 2 keeps what it started the stage with.
    real_step = stgan._train_step
    monkeypatch.setattr(stgan, "_train_step", lambda networks, config, stage, *rest: (
        real_step(networks, config, stage, *rest) if stage < 2 else {}))  # fmt: skip
    out = tmp_path / "run"
    train(tiny(data_root, out, supervised=True, init_from_previous=copy))
    weights = load_checkpoint(out / "checkpoint.pt")["generators"]
    first = {k.removeprefix("generators.0."): v for k, v in weights.items() if k.startswith("generators.0.")}
    second = {k.removeprefix("generators.1."): v for k, v in weights.items() if k.startswith("generators.1.")}
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first) == copy


# ----------------------------------------------------------------------------- steps


def test_stage_two_trains_generator_two_only(data_root, tmp_path):
    config = tiny(data_root, tmp_path)
    networks = _build_networks(config, torch.device("cpu"))
    stgan._set_trainable(networks.model, 2)
    before = {k: v.clone() for k, v in networks.model.state_dict().items()}
    critic_before = {k: v.clone() for k, v in networks.discriminator.state_dict().items()}
    for _ in range(2):
        batch = random_batch()
        _train_step(networks, config, 2, batch, batch["real"])
    after = networks.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("generators.0."))
    assert all(not torch.equal(before[k], after[k]) for k in before if k.startswith("generators.1."))
    assert networks.opt_g[0].state == {}  # generator 1's Adam never stepped
    assert any(not torch.equal(v, networks.discriminator.state_dict()[k]) for k, v in critic_before.items())


def test_supervised_loss_decreases_on_a_tiny_problem(data_root, tmp_path):
    # Every p_init is p_true + the same offset: the generator has to learn to undo it.
    config = tiny(data_root, tmp_path, supervised=True, init_noise=0.0, lr_g=3e-3)
    networks = _build_networks(config, torch.device("cpu"))
    assert networks.discriminator is None
    stgan._set_trainable(networks.model, 1)
    offset = torch.tensor([0.1, -0.05, 0.05, 0.0, -0.1, 0.02, 0.0, 0.0])
    losses = []
    for step in range(60):
        torch.manual_seed(step)
        losses.append(_train_step(networks, config, 1, random_batch(8, offset), None)["loss_p"].item())
    assert losses[0] == pytest.approx(offset.square().sum().item(), rel=0.05)  # dp ~ 0 at init
    assert np.mean(losses[-5:]) < 0.1 * losses[0]


def test_history_mixes_half_old_half_new():
    history = FakeHistory(capacity=5)
    first = torch.arange(4.0).view(4, 1)
    torch.manual_seed(0)
    out = history.mix(first)
    assert sorted(out.flatten().tolist()) == [0, 1, 2, 3]  # nothing stored yet: all new
    assert history.count == 2 and set(history.images.flatten().tolist()) <= {0, 1, 2, 3}
    stored = set(history.images.flatten().tolist())
    second = torch.arange(10.0, 14.0).view(4, 1)
    out = history.mix(second).flatten().tolist()
    assert len(out) == 4
    old, new = [v for v in out if v < 10], [v for v in out if v >= 10]
    assert len(old) == 2 and set(old) == stored and len(set(new)) == 2
    assert history.count == 4
    third = torch.arange(20.0, 24.0).view(4, 1)
    out = history.mix(third).flatten().tolist()
    assert len([v for v in out if v < 20]) == 2
    # Full at 5: the 6th image overwrote the oldest (the ring's slot 0).
    assert history.count == 5 and history.next == 1
    assert history.images[0].item() >= 20
    copy = FakeHistory(5)
    copy.load_state_dict(history.state_dict())
    assert torch.equal(copy.images, history.images) and copy.next == history.next
    assert FakeHistory(0).mix(first) is first
    with pytest.raises(ValueError, match="capacity"):
        FakeHistory(-1)


# ----------------------------------------------------------------------------- evaluation


def _corner_error_by_hand(p_pred: np.ndarray, p_true: np.ndarray) -> float:
    """Mean distance between the box corners placed by the two warps, in pixels (numpy)."""

    def place(p):
        p0, p1, p2, p3, p4, p5, p6, p7 = p
        h = scipy.linalg.expm(np.array([[p2, p1, p0], [p5, -p2 - p6, p4], [p3, p7, p6]], dtype=np.float64))
        q = np.linalg.solve(h, np.array([[x, y, 1.0] for x, y in CORNERS]).T).T
        xy = q[:, :2] / q[:, 2:]
        return (xy + 1) * (np.array([SIZE[1], SIZE[0]]) - 1) / 2

    return float(np.linalg.norm(place(p_pred) - place(p_true), axis=1).mean())


def test_evaluate_measures_corner_errors_per_warp(data_root, tmp_path):
    out = tmp_path / "run"
    train(tiny(data_root, out))
    result = evaluate(out / "checkpoint.pt", tmp_path / "eval", batch_size=4, progress=False)
    test_set = Placement(data_root, "test")
    want = np.mean([_corner_error_by_hand(item["p_init"].double().numpy(), item["p_true"].double().numpy())
                    for item in test_set])  # fmt: skip
    assert result["samples"] == len(test_set) == 6 and result["warps_applied"] == 2
    assert len(result["corner_error_px"]) == 3
    assert result["corner_error_px"][0] == pytest.approx(want, rel=1e-6)
    errors = result["corner_error_px"]
    assert result["reduction_pct"] == pytest.approx([100 * (1 - e / errors[0]) for e in errors])
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["corner_error_px"] == errors
    assert len(list((tmp_path / "eval" / "images").glob("*.png"))) == 6
    assert np.asarray(Image.open(tmp_path / "eval" / "samples.png")).shape[1] == 5 * (SIZE[1] + 2) + 2


def test_supervised_needs_p_true(data_root, tmp_path, monkeypatch):
    class WithoutTruth(Placement):
        def __getitem__(self, index):
            item = super().__getitem__(index)
            del item["p_true"]
            return item

    monkeypatch.setattr(stgan, "open_placement", lambda root, split, glasses=None, size=144: WithoutTruth(root, split))
    with pytest.raises(ValueError, match="p_true"):
        train(tiny(data_root, tmp_path / "run", supervised=True))
    # Adversarial training and evaluation work without it: composites only.
    train(tiny(data_root, tmp_path / "adv", d_steps=1, steps_per_stage=1))
    result = evaluate(tmp_path / "adv" / "checkpoint.pt", tmp_path / "eval", progress=False)
    assert "corner_error_px" not in result and result["samples"] == 6


def test_config_errors(data_root, tmp_path):
    with pytest.raises(ValueError, match="steps_per_stage"):
        tiny(data_root, tmp_path, steps_per_stage=0)
    with pytest.raises(ValueError, match="device"):
        tiny(data_root, tmp_path, device="tpu")
    with pytest.raises(ValueError, match="glasses"):
        TrainConfig(glasses="frames/")
    with pytest.raises(ValueError, match="16x16 images but the model expects 32x32"):
        train(tiny(data_root, tmp_path, model=STGANConfig(size=(32, 32), warps=1, **SMALL)))
    config = tiny(data_root, tmp_path, d_steps=3, steps_per_stage=2)
    assert config.stage_lengths == [3, 2, 2] and config.total_steps == 7
    assert [config.stage_of(s) for s in range(7)] == [0, 0, 0, 1, 1, 2, 2]
    assert tiny(data_root, tmp_path, supervised=True).stage_lengths == [0, 2, 2]
    assert TrainConfig(data="synthetic", steps_per_stage=5).data is None and TrainConfig(steps_per_stage=5).d_steps == 5


def test_celeba_layout_trains_adversarially_and_yields_images(tmp_path):
    # A CelebA-format folder: 178 x 218 JPEGs, an attribute file with the Eyeglasses column,
    # the partition file; glasses PNGs with alpha. 4 + 2 training faces, 1 + 1 test faces.
    root, frames = tmp_path / "celeba", tmp_path / "glasses"
    (root / "img_align_celeba").mkdir(parents=True)
    frames.mkdir()
    faces = [("000001.jpg", 0, False), ("000002.jpg", 0, True), ("000003.jpg", 0, False), ("000004.jpg", 0, False),
             ("000005.jpg", 0, True), ("000006.jpg", 0, False), ("000007.jpg", 2, False), ("000008.jpg", 2, True)]  # fmt: skip
    rng = np.random.default_rng(0)
    for name, _, _ in faces:
        Image.fromarray(rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)).save(root / "img_align_celeba" / name)
    rows = [f"{name} {1 if glasses else -1} -1" for name, _, glasses in faces]
    (root / "list_attr_celeba.txt").write_text("\n".join([str(len(faces)), "Eyeglasses Male", *rows]) + "\n")
    (root / "list_eval_partition.txt").write_text("".join(f"{name} {part}\n" for name, part, _ in faces))
    rgba = np.zeros((144, 144, 4), np.uint8)
    rgba[50:70, 20:124] = (30, 30, 30, 255)
    Image.fromarray(rgba, "RGBA").save(frames / "frames.png")

    settings = dict(model=STGANConfig(size=SIZE, warps=1, **SMALL), out=str(tmp_path / "run"), data=str(root),
                    glasses=str(frames), steps_per_stage=1, d_steps=1, batch_size=4, workers=0, progress=False,
                    sample_every=0, checkpoint_every=0)  # fmt: skip
    with pytest.raises(ValueError, match="p_true"):
        train(TrainConfig(**settings, supervised=True))
    assert train(TrainConfig(**settings))["step"] == 2
    result = evaluate(tmp_path / "run" / "checkpoint.pt", tmp_path / "eval", progress=False)
    assert result["samples"] == 1 and "corner_error_px" not in result
    assert np.asarray(Image.open(tmp_path / "eval" / "images" / "000000.png")).shape == (*SIZE, 3)


def _run_probe(checkpoint: Path, *flags: str) -> subprocess.CompletedProcess:
    script = Path(__file__).resolve().parents[2] / "examples" / "stgan_critic_probe.py"
    return subprocess.run([sys.executable, str(script), str(checkpoint), *flags], capture_output=True, text=True)


def test_critic_probe_example(data_root, tmp_path):
    train(tiny(data_root, tmp_path / "run"))
    probe = _run_probe(tmp_path / "run" / "checkpoint.pt", "--iters", "10", "--eps", "0.001")
    assert probe.returncode == 0, probe.stderr
    lines = probe.stdout.splitlines()
    cosine = float(re.search(r"= (-?[\d.]+) over 6 samples", lines[0]).group(1))
    assert -1 <= cosine <= 1
    rows = [tuple(map(float, re.search(r"corner error ([\d.]+) px, score (\S+)", line).groups()))
            for line in lines[1:]]  # fmt: skip
    assert len(rows) == 3  # iterations 0, 5, 10
    want = np.mean([_corner_error_by_hand(item["p_init"].double().numpy(), item["p_true"].double().numpy())
                    for item in Placement(data_root, "test")])  # fmt: skip
    assert rows[0][0] == pytest.approx(want, abs=1e-3)
    assert rows[2][1] > rows[0][1]  # uphill on the critic
    # A supervised run has no critic; the oracle needs none and walks toward p_true.
    train(tiny(data_root, tmp_path / "sup", supervised=True))
    probe = _run_probe(tmp_path / "sup" / "checkpoint.pt")
    assert probe.returncode != 0 and "no critic" in probe.stderr
    probe = _run_probe(tmp_path / "sup" / "checkpoint.pt", "--oracle", "--iters", "10", "--eps", "0.01")
    assert probe.returncode == 0, probe.stderr
    errors = [float(e) for e in re.findall(r"corner error ([\d.]+) px", probe.stdout)]
    assert errors[0] == pytest.approx(want, abs=1e-3) and errors[-1] < errors[0]
