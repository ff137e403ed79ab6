"""The training engine (pydeform.train.engine) through the `pydeform` command, for every
family: resume after a kill, torchrun, and the run-management defects a new user hit."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pydeform
from pydeform import cli
from pydeform.cli import main
from pydeform.data.synth_factors import write_factors
from pydeform.data.synth_placement import write_placement
from pydeform.data.synth_pose import write_pose_pairs
from pydeform.errors import RunError
from pydeform.train.common import load_checkpoint
from pydeform.train.engine import LOCK, RunLock


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    write_pose_pairs(root / "pose", (64, 32), identities=4, seed=0, name="market", max_pairs_per_identity=4,
                     progress=False)  # fmt: skip
    write_placement(root / "placement", size=(16, 16), train=12, test=6, seed=0, progress=False, foregrounds=3)
    write_factors(root / "factors", count=12, size=64, seed=0, progress=False)
    return {"pose": root / "pose", "placement": root / "placement", "factors": root / "factors"}


def tiny(family: str, data: dict[str, Path], out: Path) -> list[str]:
    """argv of a tiny run of each family: 6 steps, a checkpoint every 2, a log line every step."""
    common = ["--out", str(out), "--workers", "0", "--no-progress", "--log-every", "1", "--checkpoint-every", "2",
              "--sample-every", "0"]  # fmt: skip
    if family == "deformgan":
        return ["train", "deformgan", "--data", str(data["pose"]), "--name", "market", "--size", "64x32", "--ngf", "4",
                "--ndf", "4", "--steps", "6", "--batch-size", "5", "--random-vgg", *common]  # fmt: skip
    if family == "patn":
        return ["train", "patn", "--data", str(data["pose"]), "--name", "market", "--size", "64x32", "--ngf", "4",
                "--ndf", "4", "--steps", "6", "--batch-size", "5", "--random-vgg", "--block", "nested", *common]  # fmt: skip
    if family == "vunet":
        return ["train", "vunet", "--data", str(data["pose"]), "--name", "market", "--size", "32", "--n-filters", "4",
                "--max-filters", "8", "--steps", "6", "--batch-size", "5", "--init-batches", "1", "--random-vgg",
                *common]  # fmt: skip
    if family == "finegan":
        return ["train", "finegan", "--data", str(data["factors"]), "--z-dim", "8", "--backgrounds", "4", "--children",
                "4", "--parents", "2", "--gf-dim", "4", "--df-dim", "4", "--residual", "1", "--steps", "4",
                "--hard-steps", "2", "--hard-repeat", "2", "--batch-size", "2", *common]  # fmt: skip
    if family == "mixnmatch":
        return ["train", "mixnmatch", "--data", str(data["factors"]), "--z-dim", "8", "--backgrounds", "4", "--children",
                "4", "--parents", "2", "--gf-dim", "4", "--df-dim", "4", "--encoder-dim", "4", "--bd-dim", "2",
                "--bd-hidden", "8", "--fx-dim", "2", "--steps", "4", "--feature-steps", "2", "--batch-size", "2",
                *common]  # fmt: skip
    return ["train", "stgan", "--data", str(data["placement"]), "--warps", "2", "--steps-per-stage", "2", "--d-steps",
            "2", "--g-widths", "4,8,8,8,8", "--d-widths", "4,8,8,8,8", "--fc", "16", "--batch-size", "4", "--lr-g",
            "1e-3", "--lr-d", "1e-3", "--history", "10", *common]  # fmt: skip


def read_log(path: Path) -> list[dict]:
    def strict(token):
        raise ValueError(f"not strict JSON: {token}")

    return [json.loads(line, parse_constant=strict) for line in path.read_text().splitlines()]


def losses(path: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("it_s", "time")} for r in read_log(path)]


def tensors(value, prefix=""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from tensors(v, f"{prefix}/{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from tensors(v, f"{prefix}/{i}")
    elif isinstance(value, torch.Tensor):
        yield prefix, value


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("pydeform: error: ")]
    assert len(lines) == 1, err
    return lines[0]


# ----------------------------------------------------------------------------- every family


@pytest.mark.parametrize("family", list(cli.FAMILIES))
def test_killed_and_resumed_run_equals_the_straight_run(family, data, tmp_path, monkeypatch):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(tiny(family, data, straight)) == 0

    recipe = cli._recipe(family)
    real_step, calls = recipe.train_step, []

    def killed_at_step_5(self, step, batches):
        calls.append(step)
        if len(calls) == 5:
            raise KeyboardInterrupt("killed")
        return real_step(self, step, batches)

    monkeypatch.setattr(recipe, "train_step", killed_at_step_5)
    assert main(tiny(family, data, split)) == 130  # Ctrl-C: one line, the exit status of SIGINT
    monkeypatch.undo()
    assert load_checkpoint(split / "checkpoint.pt")["step"] == 4
    assert not (split / LOCK).exists()  # released on the way out
    assert main([*tiny(family, data, split), "--resume"]) == 0

    a = dict(tensors(load_checkpoint(straight / "checkpoint.pt")))
    b = dict(tensors(load_checkpoint(split / "checkpoint.pt")))
    assert a.keys() == b.keys() and len(a) > 20
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    assert losses(straight / "log.jsonl") == losses(split / "log.jsonl")
    assert [r["step"] for r in read_log(split / "log.jsonl")] == [1, 2, 3, 4, 5, 6]


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not installed")
@pytest.mark.parametrize("family", list(cli.FAMILIES))
def test_torchrun_two_cpu_processes(family, data, tmp_path):
    out = tmp_path / "ddp"
    argv = tiny(family, data, out)
    argv[argv.index("--batch-size") + 1] = "2"
    command = ["torchrun", "--standalone", "--nproc_per_node=2", "-m", "pydeform.cli", *argv]
    # The workers import the pydeform this test imported, not whatever the working folder holds.
    package_parent = str(Path(pydeform.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": package_parent + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    run = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert [r["step"] for r in read_log(out / "log.jsonl")] == [1, 2, 3, 4, 5, 6]  # rank 0 alone writes
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["step"] == 6 and state["world_size"] == 2
    assert run.stdout.count("final step=6") == 1  # rank 0 alone prints the last line


# ----------------------------------------------------------------------------- the run folder


def test_a_fresh_run_refuses_a_folder_that_holds_a_run(data, tmp_path, capsys):
    out = tmp_path / "run"
    argv = tiny("deformgan", data, out)
    assert main([*argv, "--sample-every", "2"]) == 0
    before = (out / "log.jsonl").read_text(), (out / "checkpoint.pt").read_bytes()
    assert main(argv) == 1
    line = error_line(capsys)
    assert "holds a run" in line and "--overwrite" in line
    assert ((out / "log.jsonl").read_text(), (out / "checkpoint.pt").read_bytes()) == before  # untouched

    # --overwrite starts afresh: no grid of the old run is left beside the new ones.
    assert main([*argv, "--steps", "2", "--sample-every", "0", "--overwrite"]) == 0
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step_0000002.png"]
    assert [r["step"] for r in read_log(out / "log.jsonl")] == [1, 2]


def test_the_refusal_names_the_way_out(data, tmp_path, capsys):
    out = tmp_path / "run"
    (out / "samples").mkdir(parents=True)
    assert main(tiny("stgan", data, out)) == 1
    line = error_line(capsys)
    assert "holds a run (samples)" in line and "--resume" in line and "--overwrite" in line


def test_a_second_run_into_the_same_folder_refuses(data, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    lock = RunLock(out)  # another run holds the folder
    try:
        assert main(tiny("deformgan", data, out)) == 1
        line = error_line(capsys)
        assert "in use by another run" in line and f"pid {os.getpid()}" in line
        assert not (out / "log.jsonl").exists()
        with pytest.raises(RunError, match="in use"):
            RunLock(out)
    finally:
        lock.release()
    assert not (out / LOCK).exists()


def test_a_crashed_runs_lock_file_is_stale(data, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / LOCK).write_text(f"host here pid {dead.stdout.strip()}")  # left by a killed run: not locked
    assert main(tiny("deformgan", data, out)) == 0
    assert not (out / LOCK).exists()


def test_stale_temporary_checkpoints_are_removed(data, tmp_path):
    out = tmp_path / "run"
    argv = tiny("deformgan", data, out)
    assert main([*argv, "--steps", "2"]) == 0
    stale = [out / ".checkpoint.pt.tmp-99999", out / "samples" / ".step_0000002.png.tmp-99999"]
    for path in stale:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"half a checkpoint")
    assert main([*argv, "--resume"]) == 0
    assert not any(path.exists() for path in stale)


def test_out_that_is_a_file_fails_first(data, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PYDEFORM_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "file"
    out.write_text("not a folder")
    argv = ["train", "deformgan", "--out", str(out), "--steps", "1", "--variant", "dsc", "--no-progress", "--resume"]
    assert main(argv) == 1
    line = error_line(capsys)
    assert "is a file" in line and "no checkpoint" not in capsys.readouterr().out
    assert not (tmp_path / "cache").exists()  # before any data was written


# ----------------------------------------------------------------------------- resume policy


def test_resume_applies_a_new_learning_rate_and_records_it(data, tmp_path, capsys):
    out = tmp_path / "run"
    argv = tiny("deformgan", data, out)
    assert main([*argv, "--steps", "2"]) == 0
    assert main([*argv, "--steps", "4", "--lr", "1e-3", "--resume"]) == 0
    assert "lr 0.0002 -> 0.001" in capsys.readouterr().out
    state = load_checkpoint(out / "checkpoint.pt")
    assert [g["lr"] for g in state["opt_g"]["param_groups"]] == [1e-3]  # used, not the checkpoint's
    assert [g["lr"] for g in state["opt_d"]["param_groups"]] == [1e-3]
    config = json.loads((out / "config.json").read_text())
    assert config["lr"] == 1e-3
    assert {"step": 2, "field": "lr", "checkpoint": 2e-4, "now": 1e-3} in config["changes"]
    assert {"step": 2, "field": "steps", "checkpoint": 2, "now": 4} in state["changes"]


@pytest.mark.parametrize(("flag", "value", "field"), [("--seed", "1", "seed"), ("--batch-size", "4", "batch_size")])
def test_resume_refuses_a_changed_fixed_setting(data, tmp_path, capsys, flag, value, field):
    out = tmp_path / "run"
    argv = tiny("deformgan", data, out)
    assert main([*argv, "--steps", "2"]) == 0
    assert main([*argv, "--steps", "4", flag, value, "--resume"]) == 1
    line = error_line(capsys)
    assert "cannot resume" in line and f"{field} " in line
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 2


def test_divergence_stops_the_run_and_keeps_the_last_good_checkpoint(data, tmp_path, capsys):
    out = tmp_path / "run"
    argv = tiny("deformgan", data, out)
    assert main([*argv, "--steps", "2"]) == 0
    good = load_checkpoint(out / "checkpoint.pt")
    assert main([*argv, "--lr", "1e30", "--resume"]) == 1
    line = error_line(capsys)
    assert "diverged" in line and "still holds step 2" in line
    kept = load_checkpoint(out / "checkpoint.pt")
    assert kept["step"] == 2
    assert all(torch.equal(kept["generator"][k], v) for k, v in good["generator"].items())
    log = read_log(out / "log.jsonl")  # strict JSON: NaN is null
    assert any(None in r.values() for r in log)
    # A run that diverges before its first checkpoint says so.
    fresh = tmp_path / "fresh"
    assert main([*tiny("deformgan", data, fresh), "--lr", "1e30"]) == 1
    assert "no checkpoint was written" in error_line(capsys)


# ----------------------------------------------------------------------------- one-line errors


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (["--batch-size", "50"], "do not fill one batch of 50"),
        (["--size", "128x64"], "64x32 images but the model expects 128x64"),
        (["--random-vgg", "--vgg19", "/no/such/vgg19.pth"], "vgg19.pth"),
        (["--device", "cuda"], "CUDA"),
    ],
)
def test_run_time_errors_are_one_line(data, tmp_path, capsys, edit, message):
    if "--device" in edit and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    argv = tiny("deformgan", data, tmp_path / "run")
    if "--vgg19" in edit:
        argv.remove("--random-vgg")
        edit = edit[1:]
    assert main([*argv, *edit]) == 1
    assert message in error_line(capsys)


def test_test_command_errors_are_one_line(data, tmp_path, capsys):
    assert main(["test", "deformgan", "--checkpoint", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "e")]) == 1
    assert "checkpoint not found" in error_line(capsys)
    run = tmp_path / "run"
    assert main([*tiny("stgan", data, run), "--d-steps", "1", "--steps-per-stage", "1"]) == 0
    assert main(["test", "deformgan", "--checkpoint", str(run / "checkpoint.pt"), "--out", str(tmp_path / "e")]) == 1
    assert "not a Deformable GAN checkpoint" in error_line(capsys)
    # A damaged checkpoint: garbage, and a real one cut short.
    garbage, cut = tmp_path / "garbage.pt", tmp_path / "cut.pt"
    garbage.write_bytes(b"not a checkpoint")
    cut.write_bytes((run / "checkpoint.pt").read_bytes()[:5000])
    for damaged in (garbage, cut):
        assert main(["test", "stgan", "--checkpoint", str(damaged), "--out", str(tmp_path / "e")]) == 1
        assert f"{damaged} is not a readable checkpoint" in error_line(capsys)
    # OUT is a file; --device cuda on a machine without CUDA: said before anything is read.
    assert main(["test", "stgan", "--checkpoint", str(run / "checkpoint.pt"), "--out", str(garbage)]) == 1
    assert "is a file, not a folder" in error_line(capsys)
    if not torch.cuda.is_available():
        assert main(["test", "patn", "--checkpoint", str(garbage), "--out", str(tmp_path / "e"), "--device", "cuda"]) == 1
        assert "torch sees no CUDA GPU" in error_line(capsys)


def test_pose_tests_refuse_images_too_small_for_ssim(tmp_path):
    from pydeform.errors import is_user_error
    from pydeform.train.pose_transfer import pose_rows, test_pose_pairs

    pairs = [{"target": torch.zeros(3, 10, 8)} for _ in range(2)]  # a model trained at 10x8 (PATN allows 8)
    with pytest.raises(ValueError, match="11x11 window: images of 10x8 pixels are too small") as error:
        test_pose_pairs(pairs, tmp_path, lambda batch: batch["target"], pose_rows, desc="t", progress=False)
    assert is_user_error(error.value)


def test_a_bug_keeps_its_traceback(data, tmp_path, monkeypatch):
    recipe = cli._recipe("deformgan")

    def broken(self, step, batches):
        raise ValueError("a bug in a training step")

    monkeypatch.setattr(recipe, "train_step", broken)
    with pytest.raises(ValueError, match="a bug"):
        main(tiny("deformgan", data, tmp_path / "run"))


def test_lr_nan_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["train", "deformgan", "--out", str(tmp_path / "r"), "--steps", "1", "--variant", "dsc", "--lr", "nan"])
    assert exit.value.code == 2 and "lr must be > 0" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the command line


def test_every_flag_has_help_and_train_lists_the_families(capsys):
    import argparse

    def flags_without_help(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from flags_without_help(sub, [*path, name])
            elif action.option_strings and not action.help:
                yield " ".join(path), action.option_strings

    parser = cli.build_parser()
    assert list(flags_without_help(parser, [])) == []  # every command, every flag
    commands = next(a for a in parser._actions if a.dest == "command").choices
    for command in ("train", "test"):
        families = next(a for a in commands[command]._actions if a.dest == "model").choices
        assert set(families) == set(cli.FAMILIES)
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert "Deformable GAN (Siarohin" in text and "ST-GAN (Lin" in text


def test_config_file_with_flags_overriding(data, tmp_path):
    first = tmp_path / "first"
    assert main([*tiny("stgan", data, first), "--d-steps", "1", "--steps-per-stage", "1"]) == 0
    second = tmp_path / "second"
    assert main(["train", "stgan", "--config", str(first / "config.json"), "--out", str(second), "--lr-g", "5e-4"]) == 0
    a, b = json.loads((first / "config.json").read_text()), json.loads((second / "config.json").read_text())
    assert b["lr_g"] == 5e-4 and b["out"] == str(second)
    assert {k: v for k, v in a.items() if k not in ("lr_g", "out")} == {
        k: v for k, v in b.items() if k not in ("lr_g", "out")
    }


def test_config_file_of_another_family_is_refused(data, tmp_path, capsys):
    first = tmp_path / "first"
    assert main([*tiny("stgan", data, first), "--d-steps", "1", "--steps-per-stage", "1"]) == 0
    with pytest.raises(SystemExit) as exit:
        main(["train", "deformgan", "--config", str(first / "config.json"), "--out", str(tmp_path / "x")])
    assert exit.value.code == 2 and "not settings of this model" in capsys.readouterr().err


# ----------------------------------------------------------------------------- TensorBoard


def test_tensorboard_writes_losses_and_grids(data, tmp_path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    out = tmp_path / "run"
    assert main([*tiny("deformgan", data, out), "--steps", "3", "--sample-every", "2", "--tensorboard"]) == 0
    events = event_accumulator.EventAccumulator(str(out / "tb"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    log = read_log(out / "log.jsonl")
    for name in ("loss_d", "g_total"):
        scalars = events.Scalars(f"loss/{name}")
        assert [s.step for s in scalars] == [1, 2, 3]
        assert [s.value for s in scalars] == pytest.approx([r[name] for r in log], rel=1e-6)
    images = events.Images("samples")
    assert [i.step for i in images] == [2, 3] and images[0].width == 4 * (32 + 2) + 2


def test_tensorboard_without_the_package_says_what_to_install(data, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    assert main([*tiny("deformgan", data, tmp_path / "run"), "--tensorboard"]) == 1
    assert "pip install tensorboard" in error_line(capsys)
    # The refusal leaves no run behind: the same command without --tensorboard starts.
    assert main([*tiny("deformgan", data, tmp_path / "run"), "--steps", "1"]) == 0


def test_resume_reads_the_runs_own_settings(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*tiny("deformgan", data, out), "--steps", "2"]) == 0
    # --resume alone continues the run in OUT with its config.json; flags given still override.
    assert main(["train", "deformgan", "--out", str(out), "--resume", "--steps", "4", "--no-progress"]) == 0
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 4
    assert [r["step"] for r in read_log(out / "log.jsonl")] == [1, 2, 3, 4]
    assert main(["train", "deformgan", "--out", str(out), "--resume", "--no-progress"]) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_ctrl_c_is_one_line_that_points_at_resume(monkeypatch, capsys):
    def interrupted(recipe):
        raise KeyboardInterrupt

    monkeypatch.setattr("pydeform.train.engine.train", interrupted)
    assert main(["train", "stgan", "--out", "x", "--steps-per-stage", "1"]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and "interrupted" in err and "--resume" in err


def test_betas_need_two_values(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["train", "deformgan", "--out", "x", "--steps", "1", "--betas", "0.5"])
    assert exit.value.code == 2 and "betas must be two numbers" in capsys.readouterr().err


def test_non_finite_values_are_logged_as_null(tmp_path):
    from pydeform.train.common import JsonlLogger

    with JsonlLogger(tmp_path / "log.jsonl") as log:
        log.log(1, a=float("nan"), b=torch.tensor(float("inf")), c=1.5)
    assert read_log(tmp_path / "log.jsonl") == [{"step": 1, "a": None, "b": None, "c": 1.5}]


# ----------------------------------------------------------------------------- FID/IS/LPIPS in `test`


IMAGE_METRIC_FAMILIES = list(cli.FAMILIES)  # families whose test reports generation_metrics


@pytest.mark.parametrize("family", IMAGE_METRIC_FAMILIES)
def test_test_command_says_which_image_metrics_it_skipped(family, data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main([*tiny(family, data, run), "--steps", "1"] if family != "stgan" else
                [*tiny(family, data, run), "--d-steps", "1", "--steps-per-stage", "1"]) == 0  # fmt: skip
    evaluation = tmp_path / "eval"
    assert main(["test", family, "--checkpoint", str(run / "checkpoint.pt"), "--out", str(evaluation),
                 "--no-progress"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    skipped = json.loads((evaluation / "metrics.json").read_text())["image_metrics"]["skipped"]
    assert set(skipped) == {"is", "fid", "lpips"} and "Inception" in skipped["fid"]
    assert f"fid skipped: {skipped['fid']}" in printed


@pytest.mark.parametrize("family", IMAGE_METRIC_FAMILIES)
def test_test_command_passes_the_weight_files(family, data, tmp_path, monkeypatch):
    import pydeform.metrics

    run = tmp_path / "run"
    assert main([*tiny(family, data, run), "--steps", "1"] if family != "stgan" else
                [*tiny(family, data, run), "--d-steps", "1", "--steps-per-stage", "1"]) == 0  # fmt: skip
    calls = []

    def generation_metrics(generated, targets, **files):
        calls.append((generated, targets, files))
        return {"fid": 12.5, "is_mean": 3.0, "is_std": 0.5, "weights": {}, "skipped": {"lpips": "stub"}}

    monkeypatch.setattr(pydeform.metrics, "generation_metrics", generation_metrics)
    evaluation = tmp_path / "eval"
    assert main(["test", family, "--checkpoint", str(run / "checkpoint.pt"), "--out", str(evaluation), "--no-progress",
                 "--inception", "i.pth", "--real-stats", "real.npz", "--lpips-backbone", "a.pth",
                 "--lpips-linear", "l.pth"]) == 0  # fmt: skip
    (generated, targets, files), = calls
    images = sorted((evaluation / "images").glob("code_*.png" if family == "mixnmatch" else "*.png"))
    assert generated.dtype == torch.uint8 and len(generated) == len(images)  # every test image, as saved
    saved = {np.asarray(Image.open(path)).tobytes() for path in images}
    assert all(np.ascontiguousarray(g.permute(1, 2, 0).numpy()).tobytes() in saved for g in generated)
    assert targets is None or targets.shape == generated.shape
    assert {k: files[k] for k in ("inception_weights", "real_stats", "lpips_backbone", "lpips_linear")} == {
        "inception_weights": "i.pth", "real_stats": "real.npz", "lpips_backbone": "a.pth", "lpips_linear": "l.pth"}
    assert json.loads((evaluation / "metrics.json").read_text())["image_metrics"]["fid"] == 12.5


def test_a_synthetic_set_is_written_once_per_generator_source(tmp_path, monkeypatch, capsys):
    from types import SimpleNamespace

    from pydeform.train.common import synthetic_set

    monkeypatch.setenv("PYDEFORM_CACHE", str(tmp_path / "cache"))
    source = tmp_path / "generator.py"
    source.write_text("VERSION = 1\n")
    generator, writes = SimpleNamespace(__file__=str(source)), []

    def write(tmp: Path) -> None:
        writes.append(tmp)
        tmp.mkdir(parents=True)
        (tmp / "data.txt").write_text(source.read_text())

    first = synthetic_set("toy", "toy-seed0", generator, write, None)
    assert synthetic_set("toy", "toy-seed0", generator, write, None) == first and len(writes) == 1
    assert first.parent == tmp_path / "cache" and first.name.startswith("toy-seed0-")
    assert capsys.readouterr().err.count("writing the synthetic toy set") == 1
    source.write_text("VERSION = 2\n")  # a changed generator: a new set, the old one untouched
    second = synthetic_set("toy", "toy-seed0", generator, write, None)
    assert second != first and len(writes) == 2
    assert (second / "data.txt").read_text() == "VERSION = 2\n" and (first / "data.txt").read_text() == "VERSION = 1\n"
    assert not list((tmp_path / "cache").glob(".*tmp-*"))  # written under a temporary name, renamed
