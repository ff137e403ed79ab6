"""pydeform: fused C++/CUDA kernels and models for deformation-based image generation."""
__version__ = "0.1.0"
