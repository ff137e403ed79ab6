import numpy as np
import pytest
import scipy.linalg
import torch

from pydeform.metrics.frechet import frechet_distance


def test_frechet_against_scipy_sqrtm():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 6))
    b = rng.normal(size=(150, 6)) @ rng.normal(size=(6, 6)) + 0.5
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = ((mu_a - mu_b) ** 2).sum() + np.trace(ca + cb - 2 * scipy.linalg.sqrtm(ca @ cb).real)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(torch.from_numpy(a), torch.from_numpy(a)) == pytest.approx(0.0, abs=1e-8)
    with pytest.raises(ValueError, match="same D"):
        frechet_distance(a, b[:, :5])
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(a[:1], b)
