"""Network building blocks shared by the models, and the fixed networks of the metrics."""
from pydeform.nets.inception import InceptionV3FID
from pydeform.nets.vgg import VGG19Features

__all__ = ["InceptionV3FID", "VGG19Features"]
