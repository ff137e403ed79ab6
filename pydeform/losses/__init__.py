"""Losses of the models: nearest-neighbour (Deformable GAN), WGAN-GP (ST-GAN), perceptual
and style (PATN) and the rest."""
from pydeform.losses.gan import gan_criterion
from pydeform.losses.nn_loss import NNLoss
from pydeform.losses.perceptual import PerceptualL1Loss, StyleLoss, gram_matrix, perceptual_l1, style_loss
from pydeform.losses.wgan import gradient_penalty, wgan_discriminator_loss, wgan_generator_loss

__all__ = ["NNLoss", "gan_criterion", "PerceptualL1Loss", "StyleLoss", "gram_matrix", "perceptual_l1", "style_loss", "gradient_penalty", "wgan_discriminator_loss", "wgan_generator_loss"]
