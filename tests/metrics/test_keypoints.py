"""PCKh and keypoint error against a direct transcription of the published protocol."""

import numpy as np
import pytest

from pydeform.metrics import keypoint_error, pckh


def reference_pckh(pred, target, alpha=0.5):
    """calPCKH_market.py's loop: lists of y and x coordinates, -1 missing."""
    n_all = n_correct = 0
    for p, t in zip(pred, target):
        ty, tx, py, px = list(t[:, 1]), list(t[:, 0]), list(p[:, 1]), list(p[:, 0])
        comps = [(tx[c], ty[c]) for c in (0, 1, 14, 15, 16, 17) if tx[c] != -1 and ty[c] != -1]
        if len(comps) < 2:
            continue
        w = max(c[0] for c in comps) - min(c[0] for c in comps)
        h = max(c[1] for c in comps) - min(c[1] for c in comps)
        n_all += sum(1 for v in ty if v != -1)
        for i in range(18):
            if -1 in (px[i], py[i], tx[i], ty[i]):
                continue
            if abs(px[i] - tx[i]) < w * alpha and abs(py[i] - ty[i]) < h * alpha:
                n_correct += 1
    return n_correct, n_all


def test_pckh_matches_the_protocol():
    rng = np.random.default_rng(0)
    target = rng.uniform(0, 60, (50, 18, 2)).round()
    pred = target + rng.normal(0, 8, target.shape)
    target[rng.random((50, 18)) < 0.15] = -1
    pred[rng.random((50, 18)) < 0.15] = -1
    target[3, [0, 1, 14, 15, 16]] = -1  # one head joint left: the image is skipped
    got = pckh(pred, target)
    assert got == reference_pckh(pred, target)
    assert 0 < got[0] < got[1]
    correct, counted = pckh(target, target)
    assert correct == counted  # exact detections: all correct
    total, count = keypoint_error(pred, target)
    both = (pred != -1).all(-1) & (target != -1).all(-1)
    assert count == both.sum()
    assert total == pytest.approx(np.linalg.norm((pred - target)[both], axis=1).sum())


def test_pckh_errors():
    with pytest.raises(ValueError, match="shape"):
        pckh(np.zeros((2, 18, 2)), np.zeros((3, 18, 2)))
    with pytest.raises(ValueError, match="18, 2"):
        keypoint_error(np.zeros((17, 2)), np.zeros((17, 2)))
    with pytest.raises(ValueError, match="alpha"):
        pckh(np.zeros((18, 2)), np.zeros((18, 2)), alpha=0)
