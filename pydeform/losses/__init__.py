"""Losses of the models: nearest-neighbour (Deformable GAN), WGAN-GP (ST-GAN) and the rest."""
from pydeform.losses.nn_loss import NNLoss
from pydeform.losses.wgan import gradient_penalty, wgan_discriminator_loss, wgan_generator_loss

__all__ = ["NNLoss", "gradient_penalty", "wgan_discriminator_loss", "wgan_generator_loss"]
