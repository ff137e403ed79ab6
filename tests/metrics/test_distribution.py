"""FID, KID, IS and feature statistics against closed forms and direct numpy computations."""
import numpy as np
import pytest
import scipy.linalg
import torch

from pydeform.metrics import FeatureStats, feature_stats, fid, inception_score, kid


def _spd(rng, d, rank=None):
    a = rng.standard_normal((d, rank or d))
    return a @ a.T / d + (0 if rank else 0.1 * np.eye(d))


def _trace_sqrt_product(s1, s2):
    """tr (S1 S2)^(1/2) = tr (S1^(1/2) S2 S1^(1/2))^(1/2), through symmetric eigendecompositions."""
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(root1 @ s2 @ root1)
    return np.sqrt(np.clip(inner, 0, None)).sum()


def test_fid_equal_covariances_is_squared_mean_difference():
    rng = np.random.default_rng(0)
    sigma = _spd(rng, 6)
    mu_a, mu_b = rng.standard_normal(6), rng.standard_normal(6)
    value = fid(FeatureStats(mu_a, sigma, 10), FeatureStats(mu_b, sigma, 10))
    assert value == pytest.approx(np.sum((mu_a - mu_b) ** 2), rel=1e-9, abs=1e-9)


def test_fid_diagonal_covariances():
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0.1, 2, 5), rng.uniform(0.1, 2, 5)
    mu_a, mu_b = rng.standard_normal(5), rng.standard_normal(5)
    expected = np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert fid(FeatureStats(mu_a, np.diag(a), 3), FeatureStats(mu_b, np.diag(b), 3)) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_fid_random_spd_pairs_against_scipy(seed):
    rng = np.random.default_rng(seed)
    s1, s2 = _spd(rng, 8), _spd(rng, 8)
    mu1, mu2 = rng.standard_normal(8), rng.standard_normal(8)
    root = scipy.linalg.sqrtm(s1 @ s2).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * root)
    assert fid(FeatureStats(mu1, s1, 0), FeatureStats(mu2, s2, 0)) == pytest.approx(expected, rel=1e-9)
    eig = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2) - 2 * _trace_sqrt_product(s1, s2)
    assert fid(FeatureStats(mu1, s1, 0), FeatureStats(mu2, s2, 0)) == pytest.approx(eig, rel=1e-8)


def test_fid_fewer_samples_than_dimensions():
    rng = np.random.default_rng(5)
    a, b = feature_stats(rng.standard_normal((6, 16))), feature_stats(rng.standard_normal((7, 16)) + 0.5)
    expected = np.sum((a.mu - b.mu) ** 2) + np.trace(a.sigma + b.sigma) - 2 * _trace_sqrt_product(a.sigma, b.sigma)
    assert fid(a, b) == pytest.approx(expected, rel=1e-6)


def test_fid_singular_product_is_kept_without_eps():
    # All samples of a equal (sigma_a = 0), or a few dead feature channels: the product is
    # singular, its root finite, and pytorch-fid keeps it; eps must not move the value.
    rng = np.random.default_rng(6)
    a = feature_stats(np.tile(rng.standard_normal((1, 4)), (5, 1)))
    b = feature_stats(rng.standard_normal((9, 4)))
    assert fid(a, b, eps=1e-2) == pytest.approx(np.sum((a.mu - b.mu) ** 2) + np.trace(b.sigma), rel=1e-9)
    x, y = rng.standard_normal((400, 32)), rng.standard_normal((400, 32)) + 0.3
    x[:, :5] = 1.0  # dead channels
    c, d = feature_stats(x), feature_stats(y)
    exact = np.sum((c.mu - d.mu) ** 2) + np.trace(c.sigma + d.sigma) - 2 * _trace_sqrt_product(c.sigma, d.sigma)
    assert fid(c, d, eps=1e-2) == pytest.approx(exact, rel=1e-6)


def test_feature_stats_refuse_non_finite_values():
    with pytest.raises(ValueError, match="finite"):
        FeatureStats(np.array([0.0, np.nan]), np.eye(2), 0)
    with pytest.raises(ValueError, match="finite"):
        FeatureStats(np.zeros(2), np.array([[1.0, np.inf], [0.0, 1.0]]), 0)


def test_fid_non_finite_root_retries_and_imaginary_part_is_an_error(monkeypatch):
    rng = np.random.default_rng(7)
    s1, s2 = _spd(rng, 3), _spd(rng, 3)
    real_sqrtm, calls = scipy.linalg.sqrtm, []

    def first_fails(m):
        calls.append(m)
        return np.full_like(m, np.nan) if len(calls) == 1 else real_sqrtm(m)

    monkeypatch.setattr(scipy.linalg, "sqrtm", first_fails)
    value = fid(FeatureStats(np.zeros(3), s1, 0), FeatureStats(np.zeros(3), s2, 0), eps=1e-3)
    np.testing.assert_allclose(calls[1], (s1 + 1e-3 * np.eye(3)) @ (s2 + 1e-3 * np.eye(3)))
    expected = np.trace(s1 + s2) - 2 * _trace_sqrt_product(s1 + 1e-3 * np.eye(3), s2 + 1e-3 * np.eye(3))
    assert value == pytest.approx(expected, rel=1e-9)

    monkeypatch.setattr(scipy.linalg, "sqrtm", lambda m: real_sqrtm(m) + 1e-4j * np.eye(3))
    assert np.isfinite(fid(FeatureStats(np.zeros(3), s1, 0), FeatureStats(np.zeros(3), s2, 0)))  # small: dropped
    monkeypatch.setattr(scipy.linalg, "sqrtm", lambda m: real_sqrtm(m) + 1j * np.eye(3))
    with pytest.raises(ValueError, match="imaginary component"):
        fid(FeatureStats(np.zeros(3), s1, 0), FeatureStats(np.zeros(3), s2, 0))
    monkeypatch.setattr(scipy.linalg, "sqrtm", lambda m: np.full_like(m, np.inf))
    with pytest.raises(ValueError, match="not finite"):
        fid(FeatureStats(np.zeros(3), s1, 0), FeatureStats(np.zeros(3), s2, 0))


def test_fid_errors():
    s = FeatureStats(np.zeros(3), np.eye(3), 4)
    with pytest.raises(TypeError, match="FeatureStats"):
        fid(s, np.zeros(3))
    with pytest.raises(ValueError, match="different feature sizes"):
        fid(s, FeatureStats(np.zeros(2), np.eye(2), 4))
    with pytest.raises(ValueError, match="mu must be"):
        FeatureStats(np.zeros(3), np.eye(2), 4)
    with pytest.raises(ValueError, match="count"):
        FeatureStats(np.zeros(3), np.eye(3), -1)


def test_feature_stats_and_npz_round_trip(tmp_path):
    x = torch.randn(20, 5, dtype=torch.float64)
    stats = feature_stats(x)
    np.testing.assert_allclose(stats.mu, x.numpy().mean(0))
    np.testing.assert_allclose(stats.sigma, np.cov(x.numpy(), rowvar=False))
    assert stats.count == 20
    stats.save(tmp_path / "s.npz", key="abc")
    back = FeatureStats.load(tmp_path / "s.npz")
    np.testing.assert_array_equal(back.mu, stats.mu)
    np.testing.assert_array_equal(back.sigma, stats.sigma)
    assert back.count == 20
    np.savez(tmp_path / "pytorch_fid.npz", mu=stats.mu, sigma=stats.sigma)  # pytorch-fid's own format
    assert FeatureStats.load(tmp_path / "pytorch_fid.npz").count == 0
    np.savez(tmp_path / "other.npz", x=stats.mu)
    with pytest.raises(ValueError, match="not a statistics file"):
        FeatureStats.load(tmp_path / "other.npz")
    with pytest.raises(FileNotFoundError):
        FeatureStats.load(tmp_path / "missing.npz")
    with pytest.raises(ValueError, match="at least 2 samples"):
        feature_stats(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="non-finite"):
        feature_stats(np.array([[0.0, np.nan], [1.0, 2.0]]))
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        feature_stats(np.zeros(3))
    with pytest.raises(TypeError, match="numpy array"):
        feature_stats([[1.0, 2.0]])


def _kid_reference(x, y, subsets, size, seed):
    """The unbiased estimator written out as double sums over pairs i != j."""
    rng = np.random.RandomState(seed)
    d = x.shape[1]
    k = lambda u, v: (u @ v / d + 1) ** 3
    values = []
    for _ in range(subsets):
        xs, ys = x[rng.choice(len(x), size, replace=False)], y[rng.choice(len(y), size, replace=False)]
        same = sum(k(xs[i], xs[j]) + k(ys[i], ys[j]) for i in range(size) for j in range(size) if i != j)
        cross = sum(k(xs[i], ys[j]) for i in range(size) for j in range(size))
        values.append(same / (size * (size - 1)) - 2 * cross / size**2)
    return np.mean(values), np.std(values)


def test_kid_against_direct_numpy():
    rng = np.random.default_rng(8)
    x, y = rng.standard_normal((12, 5)), rng.standard_normal((15, 5)) + 0.3
    mean, std = kid(torch.from_numpy(x), y, subsets=4, subset_size=7, seed=3)
    ref_mean, ref_std = _kid_reference(x, y, 4, 7, 3)
    assert mean == pytest.approx(ref_mean, rel=1e-10)
    assert std == pytest.approx(ref_std, rel=1e-10)


def test_kid_errors():
    x = np.zeros((10, 4))
    with pytest.raises(ValueError, match="need at least 1000 samples per set"):
        kid(x, x)
    with pytest.raises(ValueError, match="different feature sizes"):
        kid(x, np.zeros((10, 3)), subset_size=5)
    with pytest.raises(ValueError, match="subsets"):
        kid(x, x, subsets=0, subset_size=5)
    with pytest.raises(ValueError, match="subset_size"):
        kid(x, x, subset_size=1)


def _is_reference(logits, splits):
    """The improved-GAN inception_score.py loop: softmax, splits in order, exp(mean KL)."""
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    scores = []
    for i in range(splits):
        part = p[i * len(p) // splits:(i + 1) * len(p) // splits]
        kl = part * (np.log(part) - np.log(part.mean(0, keepdims=True)))
        scores.append(np.exp(kl.sum(1).mean()))
    return np.mean(scores), np.std(scores)


def test_inception_score_closed_forms_and_numpy():
    mean, std = inception_score(torch.zeros(30, 1008))
    assert (mean, std) == (pytest.approx(1.0, abs=1e-12), pytest.approx(0.0, abs=1e-12))
    k = 7
    confident = torch.full((10 * k, k), -60.0)
    confident[torch.arange(10 * k), torch.arange(10 * k) % k] = 60.0  # every split holds each class once
    mean, std = inception_score(confident)
    assert mean == pytest.approx(k, rel=1e-9) and std == pytest.approx(0, abs=1e-9)
    logits = np.random.default_rng(9).standard_normal((53, 20)) * 3
    for splits in (1, 10):
        got = inception_score(logits, splits=splits)
        assert got == pytest.approx(_is_reference(logits, splits), rel=1e-10)
    assert inception_score(logits[::-1].copy())[0] != pytest.approx(inception_score(logits)[0], rel=1e-9)  # order kept


def test_inception_score_errors():
    with pytest.raises(ValueError, match="at least one sample per split"):
        inception_score(torch.zeros(5, 10))
    with pytest.raises(ValueError, match="splits"):
        inception_score(torch.zeros(5, 10), splits=0)
