"""`pydeform train stgan` and `pydeform test stgan` (pydeform.cli)."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from pydeform.cli import main
from pydeform.data import Placement

TINY = ["--size", "16x16", "--g-widths", "4,8,8,8,8", "--d-widths", "4,8,8,8,8", "--batch-size", "4",
        "--workers", "0", "--no-progress"]  # fmt: skip


def test_help_lists_the_flags(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["train", "stgan", "--help"])
    assert exit.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--data", "--warps", "--steps-per-stage", "--out", "--supervised", "--d-steps", "--batch-size",
                 "--lr-g", "--lr-d", "--history", "--ops", "--resume", "--device", "--sample-every", "--seed"):  # fmt: skip
        assert flag in text
    with pytest.raises(SystemExit):
        main(["test", "stgan", "--help"])
    assert "--checkpoint" in capsys.readouterr().out


def test_bare_checkout_trains_on_synthetic_data_then_tests(tmp_path, monkeypatch, capsys):
    # No --data: the synthetic placement set is written into $PYDEFORM_CACHE first.
    monkeypatch.setenv("PYDEFORM_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    code = main(["train", "stgan", "--warps", "1", "--steps-per-stage", "2", "--d-steps", "1", "--synth-train", "8",
                 "--synth-test", "4", "--out", str(run), *TINY])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0 and "final step=3" in printed
    (cache,) = (tmp_path / "cache").glob("synth-placement-16x16-seed0-n8-4-*")
    assert len(Placement(cache, "train")) == 8 and len(Placement(cache, "test")) == 4
    assert (run / "checkpoint.pt").is_file() and len(list((run / "samples").glob("*.png"))) == 2

    evaluation = tmp_path / "eval"
    assert main(["test", "stgan", "--checkpoint", str(run / "checkpoint.pt"), "--out", str(evaluation),
                 "--no-progress"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "corner error px" in printed and "init" in printed
    metrics = json.loads((evaluation / "metrics.json").read_text())
    assert metrics["samples"] == 4 and len(metrics["corner_error_px"]) == 2 and metrics["mode"] == "adversarial"
    assert np.asarray(Image.open(evaluation / "images" / "000000.png")).shape == (16, 16, 3)

    # --supervised on the same set, then resuming the finished run has nothing to do.
    supervised = tmp_path / "supervised"
    argv = ["train", "stgan", "--supervised", "--warps", "1", "--steps-per-stage", "2", "--synth-train", "8",
            "--synth-test", "4", "--out", str(supervised), *TINY]  # fmt: skip
    assert main(argv) == 0 and "loss_p" in capsys.readouterr().out
    assert main([*argv, "--resume"]) == 0 and "nothing to do" in capsys.readouterr().out
    assert torch.load(supervised / "checkpoint.pt", weights_only=True)["step"] == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--warps", "0"], "warps"),
        (["--g-widths", "32,x"], "comma-separated"),
        (["--supervised", "--glasses", "frames", "--data", "celeba"], "CelebA"),
        (["--ops", "opencv"], "invalid choice"),
        (["--steps-per-stage", "0"], "steps_per_stage"),
    ],
)
def test_bad_arguments_are_usage_errors(tmp_path, capsys, argv, message):
    base = ["train", "stgan", "--out", str(tmp_path / "run")]
    if "--steps-per-stage" not in argv:
        base += ["--steps-per-stage", "1"]
    with pytest.raises(SystemExit) as exit:
        main([*base, *argv])
    assert exit.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("info", ['{"corners": []}', "not json"])
def test_an_info_json_without_the_size_is_named(tmp_path, capsys, info):
    data = tmp_path / "placement"
    data.mkdir()
    (data / "info.json").write_text(info)
    with pytest.raises(SystemExit) as exit:
        main(["train", "stgan", "--out", str(tmp_path / "run"), "--steps-per-stage", "1", "--data", str(data)])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and f"{data / 'info.json'} does not give the image size" in err and "--size" in err
