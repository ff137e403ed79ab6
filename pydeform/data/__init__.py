"""Datasets: the Deformable GAN authors' pose-pair format, ST-GAN placement data (synthetic
and CelebA glasses) and synthetic data generators."""
from pydeform.data.placement import CelebAGlasses, Placement
from pydeform.data.pose_pairs import PosePairs

__all__ = ["CelebAGlasses", "Placement", "PosePairs"]
