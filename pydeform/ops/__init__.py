"""pydeform.ops: the fused kernels. `reference` holds pure-torch twins of each op."""
from pydeform.ops._backend import backend_info
from pydeform.ops.affine_warp import multi_affine_warp
from pydeform.ops.homography import homography_sample
from pydeform.ops.patch_nn import patch_nn_distance

__all__ = ["backend_info", "homography_sample", "multi_affine_warp", "patch_nn_distance"]
