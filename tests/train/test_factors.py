"""The factor classifier tool: trains on the training split, measures on the test split, and
the FineGAN test command uses it (shape consistency, Frechet distance on its features)."""
import json

import pytest
import torch

from pydeform.cli import main
from pydeform.data.synth_factors import write_factors
from pydeform.train.factors import FactorClassifier, factor_labels, load_classifier


@pytest.fixture(scope="module")
def factors(tmp_path_factory):
    root = tmp_path_factory.mktemp("fc") / "set"
    write_factors(root, count=20, size=64, seed=0, progress=False)
    return root


def test_train_and_use(factors, tmp_path, capsys):
    out = tmp_path / "clf"
    assert main(["factors", "train", "--data", str(factors), "--out", str(out), "--steps", "3", "--batch-size", "4",
                 "--no-progress"]) == 0  # fmt: skip
    assert "test accuracy: background" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_images"] == 4 and metrics["train_images"] == 16
    reader = load_classifier(out)
    assert reader.classes == {"background": 20, "shape": 10, "texture": 20}
    # the stored accuracy is the test accuracy of the stored network
    from pydeform.data.cub import CUBObjects, centre_object

    test = CUBObjects(factors, "test")
    images = torch.stack([centre_object(test[i]["object"]) for i in range(len(test))])
    labels = factor_labels(factors, test.records)
    predicted = reader.predict(images)
    for factor in ("background", "shape", "texture"):
        acc = float((predicted[factor] == torch.tensor(labels[factor])).float().mean())
        assert acc == pytest.approx(metrics["accuracy"][factor])
    assert reader.features(images).shape == (4, 128)

    # FineGAN's test command with the classifier
    run = tmp_path / "fg"
    assert main(["train", "finegan", "--data", str(factors), "--out", str(run), "--steps", "1", "--hard-steps", "0",
                 "--z-dim", "8", "--backgrounds", "4", "--children", "4", "--parents", "2", "--gf-dim", "4",
                 "--df-dim", "4", "--residual", "1", "--batch-size", "2", "--workers", "0", "--no-progress"]) == 0  # fmt: skip
    ev = tmp_path / "ev"
    assert main(["test", "finegan", "--checkpoint", str(run / "checkpoint.pt"), "--out", str(ev), "--count", "4",
                 "--per-parent", "3", "--classifier", str(out), "--no-progress"]) == 0  # fmt: skip
    result = json.loads((ev / "metrics.json").read_text())
    assert len(result["shape_consistency_per_parent"]) == 2
    assert all(s in (1 / 3, 2 / 3, 1.0) for s in result["shape_consistency_per_parent"])
    assert result["shape_chance"] == 0.1 and result["fd_classifier_features"] >= 0
    assert result["shape_majority_pooled"] in (1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1.0)
    assert result["shape_majority_pooled"] <= max(result["shape_consistency_per_parent"])
    assert result["shape_distinct_majorities"] in (1, 2)
    assert "factor classifier" in result["fd_features"]


def test_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["factors", "train", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 1
    assert "info.json" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["factors", "train", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--steps", "0"])
    torch.save({"kind": "other"}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not a factor classifier"):
        load_classifier(tmp_path / "x.pt")
    logits, features = FactorClassifier({"shape": 3})(torch.zeros(2, 3, 128, 128))
    assert logits["shape"].shape == (2, 3) and features.shape == (2, 128)
