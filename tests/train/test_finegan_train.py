"""FineGAN's recipe through the `pydeform` command: a few steps, the test command, the EMA in
the checkpoint, the hard-negative draw and the error paths."""
import json

import pytest
import torch

from pydeform.cli import main
from pydeform.data.synth_factors import write_factors
from pydeform.models.finegan import FineGANConfig, FineGANGenerator, StageDiscriminator, init_weights
from pydeform.nets.ema import ParameterEMA
from pydeform.train.common import load_checkpoint
from pydeform.train.finegan import grid_rows, hard_negatives, load_generator, sample_codes

TINY = ["--z-dim", "8", "--backgrounds", "4", "--children", "4", "--parents", "2", "--gf-dim", "4", "--df-dim", "4",
        "--residual", "1", "--batch-size", "2", "--workers", "0", "--no-progress", "--hard-repeat", "2"]  # fmt: skip


@pytest.fixture(scope="module")
def factors(tmp_path_factory):
    root = tmp_path_factory.mktemp("f") / "factors"
    write_factors(root, count=12, size=64, seed=0, progress=False)
    return root


@pytest.fixture(scope="module")
def run(factors, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    argv = ["train", "finegan", "--data", str(factors), "--out", str(out), "--steps", "3", "--hard-steps", "2",
            "--log-every", "1", *TINY]  # fmt: skip
    assert main(argv) == 0
    return out


def test_log_checkpoint_and_ema(run):
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5]
    assert [r["phase"] for r in log] == ["main"] * 3 + ["hard"] * 2
    for record in log:
        parts = record["g_background"] + record["g_parent_info"] + record["g_child_adv"] + record["g_child_info"]
        assert record["g_total"] == pytest.approx(parts, rel=1e-5)
    state = load_checkpoint(run / "checkpoint.pt")
    assert state["kind"] == "pydeform.finegan" and state["step"] == 5
    g = FineGANGenerator(FineGANConfig.from_dict(state["config"]))
    g.load_state_dict(state["ema_generator"])
    for p, avg in zip(g.parameters(), state["ema"]["params"]):
        assert torch.equal(p, avg)
    live = dict(state["generator"])
    assert any(not torch.equal(live[k], v) for k, v in state["ema_generator"].items() if k in live)
    assert (run / "samples" / "step_0000005.png").is_file()


def test_test_command_metrics(run, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["test", "finegan", "--checkpoint", str(run / "checkpoint.pt"), "--out", str(out), "--count", "5",
                 "--batch-size", "2", "--no-progress"]) == 0  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(list((out / "images").glob("*.png"))) == 5
    # the coverage, recomputed from the same codes
    generator, _ = load_generator(run / "checkpoint.pt")
    gen = torch.Generator().manual_seed(0)
    total = 0.0
    with torch.no_grad():
        for n in (2, 2, 1):
            codes = sample_codes(n, generator.config, torch.device("cpu"), gen)
            total += float(generator(codes["z"], codes["c"], codes["p"], codes["b"]).parent_mask.mean((1, 2, 3)).sum())
    assert metrics["parent_mask_coverage"] == pytest.approx(total / 5, rel=1e-5)
    assert "parent mask coverage" in capsys.readouterr().out
    # --weights live: the trained generator instead of its EMA
    assert main(["test", "finegan", "--checkpoint", str(run / "checkpoint.pt"), "--out", str(tmp_path / "live"),
                 "--count", "2", "--batch-size", "2", "--weights", "live", "--no-progress"]) == 0  # fmt: skip
    live, state = load_generator(run / "checkpoint.pt", weights="live")
    assert all(torch.equal(v, state["generator"][k]) for k, v in live.state_dict().items())
    codes = sample_codes(2, live.config, torch.device("cpu"), torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = float(live(codes["z"], codes["c"], codes["p"], codes["b"]).parent_mask.mean())
    assert json.loads((tmp_path / "live" / "metrics.json").read_text())["parent_mask_coverage"] == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="weights"):
        load_generator(run / "checkpoint.pt", weights="other")


def test_grid_rows_vary_one_code():
    torch.manual_seed(0)
    g = FineGANGenerator(FineGANConfig(z_dim=8, backgrounds=4, parents=2, children=4, gf_dim=4, df_dim=4, residual=1))
    g.apply(init_weights)
    rows = grid_rows(g.eval(), torch.device("cpu"), seed=0, columns=4)
    assert len(rows) == 5 and len(rows[0]) == 6 and all(len(r) == 4 for r in rows[1:])  # the stages row: 6
    vary_p = rows[3]  # p = 0, 0, 1, 1 (spread over 2 parents), the rest fixed
    assert torch.equal(vary_p[0], vary_p[1]) and not torch.equal(vary_p[1], vary_p[2])


def test_hard_negatives_keep_the_worst_classified():
    cfg = FineGANConfig(z_dim=8, backgrounds=4, parents=2, children=4, gf_dim=4, df_dim=4, residual=1)
    torch.manual_seed(0)
    g, d = FineGANGenerator(cfg).eval(), StageDiscriminator(4, 4).eval()
    torch.manual_seed(3)
    chosen = hard_negatives(g, d, 3, 4, torch.device("cpu"))
    torch.manual_seed(3)
    draws = [sample_codes(3, cfg, torch.device("cpu")) for _ in range(4)]
    with torch.no_grad():
        probs = torch.cat([d(g(c["z"], c["c"]).child_masked)[0].softmax(1)[torch.arange(3), c["c_index"]] for c in draws])
    z = torch.cat([c["z"] for c in draws])
    worst = probs.argsort()[:3]
    torch.testing.assert_close(chosen["z"], z[worst])
    assert chosen["c_index"].tolist() == torch.cat([c["c_index"] for c in draws])[worst].tolist()


def test_errors(factors, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["train", "finegan", "--data", str(factors), "--out", str(tmp_path / "a"), "--steps", "1",
              *TINY[:4], "--children", "6", "--parents", "2"])  # fmt: skip
    assert exit.value.code == 2 and "must equal children" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit:
        main(["train", "finegan", "--out", str(tmp_path / "b"), "--steps", "1", "--children", "7", "--backgrounds", "7"])
    assert exit.value.code == 2 and "multiple of parents" in capsys.readouterr().err
    assert main(["train", "finegan", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "c"), "--steps", "1",
                 *TINY]) == 1  # fmt: skip
    err = capsys.readouterr().err
    assert "pydeform: error:" in err and "images.txt" in err and "Traceback" not in err
    assert main(["test", "finegan", "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "d")]) == 1
    assert "checkpoint not found" in capsys.readouterr().err
    for argv, message in ((["train", "finegan", "--out", "x", "--steps", "1", "--batch-size", "1"], "BatchNorm"),
                          (["train", "finegan", "--out", "x", "--steps", "1", "--amp", "--device", "cuda"], "amp"),
                          (["test", "finegan", "--checkpoint", "c.pt", "--out", "x", "--count", "0"], "count must be"),
                          (["test", "finegan", "--checkpoint", "c.pt", "--out", "x", "--per-parent", "0"], "per_parent")):
        with pytest.raises(SystemExit) as exit:  # refused before anything runs
            main(argv)
        assert exit.value.code == 2 and message in capsys.readouterr().err


def test_parameter_ema_matches_the_code_update():
    # FineGAN: avg_p.mul_(0.999).add_(0.001, p) after every G step
    net = torch.nn.Linear(3, 1)
    ema = ParameterEMA(net)
    expected = [p.detach().clone() for p in net.parameters()]
    for _ in range(3):
        with torch.no_grad():
            for p in net.parameters():
                p.mul_(1.5).add_(0.1)
        ema.update(net)
        expected = [0.999 * e + 0.001 * p.detach() for e, p in zip(expected, net.parameters())]
    for a, e in zip(ema.params, expected):
        torch.testing.assert_close(a, e)
