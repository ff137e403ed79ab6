"""Datasets: the Deformable GAN authors' pose-pair format, ST-GAN placement data and
synthetic data generators."""
from pydeform.data.placement import Placement
from pydeform.data.pose_pairs import PosePairs

__all__ = ["Placement", "PosePairs"]
