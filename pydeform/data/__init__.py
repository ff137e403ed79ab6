"""Datasets: the Deformable GAN authors' pose-pair format and synthetic data generators."""
from pydeform.data.pose_pairs import PosePairs

__all__ = ["PosePairs"]
