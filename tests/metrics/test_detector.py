"""The keypoint detector tool: coordinates, presence, training, checkpoints."""
import numpy as np
import pytest
import torch

from pydeform.data.synth_pose import write_pose_pairs
from pydeform.metrics.detector import (
    KeypointDetector,
    KeypointImages,
    detect,
    load_detector,
    main,
    score_detector,
    train_detector,
)


def test_uniform_maps_give_the_image_centre_and_presence_gates():
    model = KeypointDetector(8).eval()
    with torch.no_grad():
        model.maps.weight.zero_()
        model.maps.bias.zero_()
        model.presence.weight.zero_()
        model.presence.bias.copy_(torch.linspace(-1, 1, 18))
    xy, presence = model(torch.zeros(2, 3, 64, 32))
    torch.testing.assert_close(xy, torch.tensor([15.5, 31.5]).expand(2, 18, 2))  # ((W - 1) / 2, (H - 1) / 2)
    found = detect(model, torch.zeros(1, 3, 64, 32), threshold=0.0)
    assert ((found[0] == -1).all(-1) == (presence[0] < 0)).all()
    with pytest.raises(ValueError, match="images"):
        model(torch.zeros(1, 1, 8, 8))


def test_train_load_and_score(tmp_path, capsys):
    write_pose_pairs(tmp_path, (64, 32), identities=3, seed=0, name="s", max_pairs_per_identity=2, progress=False)
    last = train_detector(tmp_path, "s", tmp_path / "det.pt", steps=3, batch_size=4, width=8, progress=False)
    assert last["step"] == 3 and np.isfinite(last["coords"])
    model = load_detector(tmp_path / "det.pt")
    assert model.size == (64, 32)
    items = KeypointImages(tmp_path, "s", "test")
    images, target = map(torch.stack, zip(*(items[i] for i in range(len(items)))))
    scores = score_detector(model, images, target)
    assert 0 <= scores["pckh"] <= 1 and scores["joints"] > 0
    assert main(["score", "--checkpoint", str(tmp_path / "det.pt"), "--data", str(tmp_path), "--name", "s"]) == 0
    assert "pckh" in capsys.readouterr().out
    torch.save({"kind": "other"}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not a keypoint detector"):
        load_detector(tmp_path / "x.pt")
    with pytest.raises(ValueError, match="steps"):
        train_detector(tmp_path, "s", tmp_path / "d2.pt", steps=0)
    with pytest.raises(FileNotFoundError):
        KeypointImages(tmp_path, "nope", "train")
