"""Losses of the models: nearest-neighbour (Deformable GAN) and the rest."""
from pydeform.losses.nn_loss import NNLoss

__all__ = ["NNLoss"]
