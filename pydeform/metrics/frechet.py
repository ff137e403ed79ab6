"""The Fréchet distance between two sets of features (FID when the features are Inception's
pool3; Heusel et al., NeurIPS 2017):

    ||mu_a - mu_b||^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2))

tr((S_a S_b)^(1/2)) = sum of the square roots of the eigenvalues of S_a^(1/2) S_b S_a^(1/2),
a symmetric PSD matrix (float64, eigenvalues clipped at 0), which avoids the complex sqrtm."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["frechet_distance"]


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(a: Tensor | np.ndarray, b: Tensor | np.ndarray) -> float:
    """a (N, D), b (M, D) features, N, M >= 2 -> the Fréchet distance of their Gaussians
    (unbiased covariances, as the FID reference code's np.cov)."""
    a = a.detach().cpu().double().numpy() if isinstance(a, Tensor) else np.asarray(a, np.float64)
    b = b.detach().cpu().double().numpy() if isinstance(b, Tensor) else np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"features must be (N, D) and (M, D) with the same D, got {a.shape} and {b.shape}")
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError(f"need at least 2 samples in each set, got {a.shape[0]} and {b.shape[0]}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    root = _psd_sqrt(cov_a)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root @ cov_b @ root), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * cross)
