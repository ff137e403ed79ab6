"""Network building blocks shared by the models."""
from pydeform.nets.vgg import VGG19Features

__all__ = ["VGG19Features"]
