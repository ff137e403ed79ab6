"""Distribution metrics on Inception outputs: FID, KID and the Inception Score.

- `fid(a, b)`: Fréchet distance of two Gaussians (Heusel et al. 2017) in float64, as
  pytorch-fid's `calculate_frechet_distance` (mseitzer/pytorch-fid, `fid_score.py`): when the
  square root of the covariance product is not finite, eps is added to both diagonals and it
  is taken again (a singular product with a finite root is kept); an imaginary part on the
  diagonal above 1e-3 is an error, a smaller one is dropped.
- `kid(features_a, features_b)`: Kernel Inception Distance (Binkowski et al. 2018), the
  unbiased MMD^2 with the cubic polynomial kernel (x.y / d + 1)^3, averaged over 100 random
  subsets of 1000 per set (torch-fidelity's defaults, seed 2020; `metric_kid.py`).
- `inception_score(logits)`: IS (Salimans et al. 2016) over 10 consecutive splits of the
  samples in input order (no shuffle, as the original improved-GAN `inception_score.py`),
  softmax over the 1008 unbiased logits; mean and population std over the splits.
- `FeatureStats`: mean, covariance (unbiased, as `np.cov`) and count of a feature set;
  saved to and read from `.npz` (keys mu, sigma, count).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.linalg
import torch
from torch import Tensor

__all__ = ["FeatureStats", "feature_stats", "fid", "kid", "inception_score"]


def _as_features(x: object, name: str) -> np.ndarray:
    """(N, D) tensor or array -> float64 numpy."""
    if isinstance(x, Tensor):
        x = x.detach().cpu().double().numpy()
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array of shape (N, D), got {type(x).__name__}")
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must have shape (N, D) with N, D >= 1, got {x.shape}")
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise ValueError(f"{name} holds non-finite values")
    return x


@dataclass
class FeatureStats:
    """Mean mu (D,), covariance sigma (D, D) (float64) and the number of samples (0: unknown,
    as in pytorch-fid's own .npz files)."""

    mu: np.ndarray
    sigma: np.ndarray
    count: int

    def __post_init__(self) -> None:
        self.mu = np.asarray(self.mu, dtype=np.float64)
        self.sigma = np.asarray(self.sigma, dtype=np.float64)
        d = self.mu.shape[0] if self.mu.ndim == 1 else -1
        if self.mu.ndim != 1 or self.sigma.shape != (d, d):
            raise ValueError(f"mu must be (D,) and sigma (D, D), got {self.mu.shape} and {self.sigma.shape}")
        if not (np.isfinite(self.mu).all() and np.isfinite(self.sigma).all()):
            raise ValueError("mu and sigma must be finite (statistics of features that held NaN or infinity?)")
        if int(self.count) < 0:
            raise ValueError(f"count must be >= 0 (0: unknown), got {self.count}")
        self.count = int(self.count)

    def save(self, path: str | os.PathLike, **extra: object) -> None:
        """Write mu, sigma, count (and string `extra` entries, e.g. the cache key) to `.npz`."""
        np.savez(Path(path), mu=self.mu, sigma=self.sigma, count=np.int64(self.count),
                 **{k: np.asarray(str(v)) for k, v in extra.items()})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FeatureStats":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"statistics file not found: {path}")
        with np.load(path) as data:
            missing = [k for k in ("mu", "sigma") if k not in data]
            if missing:
                raise ValueError(f"{path} is not a statistics file: it lacks {missing} (expected mu, sigma, count)")
            # pytorch-fid's own .npz files hold mu and sigma only: count 0 (unknown).
            return cls(data["mu"], data["sigma"], int(data["count"]) if "count" in data else 0)


def feature_stats(features: Tensor | np.ndarray) -> FeatureStats:
    """(N, D) features, N >= 2 -> FeatureStats (float64; unbiased covariance as `np.cov`)."""
    x = _as_features(features, "features")
    if x.shape[0] < 2:
        raise ValueError(f"features need at least 2 samples for a covariance, got {x.shape[0]}")
    return FeatureStats(x.mean(axis=0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1]), x.shape[0])


def _sqrtm(a: np.ndarray) -> np.ndarray:
    """scipy's matrix square root (called without the `disp` argument scipy is removing),
    its singular-matrix warning silenced as pytorch-fid's `disp=False` does: a singular
    product still has a finite root, which pytorch-fid keeps."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        return scipy.linalg.sqrtm(a)


def fid(a: FeatureStats, b: FeatureStats, eps: float = 1e-6) -> float:
    """Fréchet Inception Distance |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))."""
    for value, name in ((a, "a"), (b, "b")):
        if not isinstance(value, FeatureStats):
            raise TypeError(f"{name} must be FeatureStats (see feature_stats), got {type(value).__name__}")
    if a.mu.shape != b.mu.shape:
        raise ValueError(f"a and b have different feature sizes: {a.mu.shape[0]} and {b.mu.shape[0]}")
    diff = a.mu - b.mu
    covmean = _sqrtm(a.sigma @ b.sigma)
    if not np.isfinite(covmean).all():  # pytorch-fid retries only then (not on a singular product)
        offset = np.eye(a.sigma.shape[0]) * eps
        covmean = _sqrtm((a.sigma + offset) @ (b.sigma + offset))
        if not np.isfinite(covmean).all():
            raise ValueError("FID: the square root of the covariance product is not finite, even with eps added")
    if np.iscomplexobj(covmean):
        imaginary = np.max(np.abs(np.diagonal(covmean).imag))
        if imaginary > 1e-3:
            raise ValueError(f"FID: the square root of the covariance product has an imaginary component {imaginary}")
        covmean = covmean.real
    return float(diff @ diff + np.trace(a.sigma) + np.trace(b.sigma) - 2 * np.trace(covmean))


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with k(u, v) = (u.v / d + 1)^3; x, y: (m, d)."""
    m, d = x.shape
    k_xx = (x @ x.T / d + 1) ** 3
    k_yy = (y @ y.T / d + 1) ** 3
    k_xy = (x @ y.T / d + 1) ** 3
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2 * k_xy.sum() / (m * m))


def kid(features_a: Tensor | np.ndarray, features_b: Tensor | np.ndarray, subsets: int = 100,
        subset_size: int = 1000, seed: int = 2020) -> tuple[float, float]:
    """Kernel Inception Distance -> (mean, std) over `subsets` subsets of `subset_size`
    drawn without replacement from each set (numpy RandomState(seed), as torch-fidelity).
    Each set needs at least `subset_size` samples."""
    x, y = _as_features(features_a, "features_a"), _as_features(features_b, "features_b")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"features_a and features_b have different feature sizes: {x.shape[1]} and {y.shape[1]}")
    if not isinstance(subsets, int) or subsets < 1:
        raise ValueError(f"subsets must be a positive int, got {subsets!r}")
    if not isinstance(subset_size, int) or subset_size < 2:
        raise ValueError(f"subset_size must be an int >= 2, got {subset_size!r}")
    if min(len(x), len(y)) < subset_size:
        raise ValueError(f"KID subsets of {subset_size} need at least {subset_size} samples per set, got "
                         f"{len(x)} and {len(y)}: pass a smaller subset_size")
    rng = np.random.RandomState(seed)
    values = np.empty(subsets)
    for i in range(subsets):
        xs = x[rng.choice(len(x), subset_size, replace=False)]
        ys = y[rng.choice(len(y), subset_size, replace=False)]
        values[i] = _mmd2_unbiased(xs, ys)
    return float(values.mean()), float(values.std())


def inception_score(logits: Tensor | np.ndarray, splits: int = 10) -> tuple[float, float]:
    """logits (N, C) (the unbiased Inception logits, C = 1008) -> (mean, std) of
    exp(E_x KL(p(y|x) || p(y))) over `splits` consecutive splits, in input order."""
    z = torch.as_tensor(_as_features(logits, "logits"))
    if not isinstance(splits, int) or splits < 1:
        raise ValueError(f"splits must be a positive int, got {splits!r}")
    n = z.shape[0]
    if n < splits:
        raise ValueError(f"inception_score needs at least one sample per split: {n} samples, {splits} splits")
    log_p = torch.log_softmax(z, dim=1)
    scores = []
    for i in range(splits):
        part = log_p[i * n // splits:(i + 1) * n // splits]
        log_q = torch.logsumexp(part, dim=0) - np.log(part.shape[0])  # log of the mean of p over the split
        kl = (part.exp() * (part - log_q)).sum(dim=1).mean()
        scores.append(float(kl.exp()))
    return float(np.mean(scores)), float(np.std(scores))
