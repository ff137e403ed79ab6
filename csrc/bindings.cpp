// The pybind11 module pydeform._C: one def per launcher plus what was compiled. It links
// no libtorch; Python passes raw pointers of tensors it allocated (DESIGN.md section 1).
#include <pybind11/pybind11.h>

#if defined(PYDEFORM_WITH_OPENMP)
#include <omp.h>
#endif
#if defined(PYDEFORM_WITH_CUDA)
#include <cuda_runtime.h>
#endif

#include "affine_warp/affine_warp.h"
#include "homography/homography.h"
#include "patch_nn/patch_nn.h"

namespace py = pybind11;

namespace {

py::dict build_info() {
  py::dict info;
#if defined(PYDEFORM_WITH_OPENMP)
  info["openmp"] = true;
  info["openmp_max_threads"] = omp_get_max_threads();
#else
  info["openmp"] = false;
  info["openmp_max_threads"] = 1;
#endif
#if defined(PYDEFORM_WITH_CUDA)
  info["cuda"] = true;
  info["cuda_archs"] = PYDEFORM_CUDA_ARCHS;
  info["cuda_runtime_version"] = CUDART_VERSION;
#else
  info["cuda"] = false;
  info["cuda_archs"] = "";
  info["cuda_runtime_version"] = 0;
#endif
  return info;
}

// Devices the CUDA runtime sees; 0 when there is no GPU or driver (never raises).
int cuda_device_count() {
#if defined(PYDEFORM_WITH_CUDA)
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return count;
#else
  return 0;
#endif
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "pydeform compiled kernels (raw-pointer launchers; use pydeform.ops instead)";
  m.def("build_info", &build_info);
  m.def("cuda_device_count", &cuda_device_count);
  const auto release = py::call_guard<py::gil_scoped_release>();

  m.def("patch_nn_forward_cpu", &pydeform::patch_nn_forward_cpu, release);
  m.def("patch_nn_backward_cpu", &pydeform::patch_nn_backward_cpu, release);
  m.def("affine_warp_cpu_packed_numel", &pydeform::affine_warp_cpu_packed_numel);
  m.def("affine_warp_cpu_tiles", &pydeform::affine_warp_cpu_tiles);
  m.def("affine_warp_forward_cpu", &pydeform::affine_warp_forward_cpu, release);
  m.def("affine_warp_backward_cpu", &pydeform::affine_warp_backward_cpu, release);
  m.def("homography_forward_cpu", &pydeform::homography_forward_cpu, release);
  m.def("homography_backward_cpu", &pydeform::homography_backward_cpu, release);
  m.def("homography_grad_h_partials_cpu", &pydeform::homography_grad_h_partials_cpu);
  m.def("homography_grad_h_partials_cuda", &pydeform::homography_grad_h_partials_cuda);
#if defined(PYDEFORM_WITH_CUDA)
  m.def("patch_nn_forward_cuda", &pydeform::patch_nn_forward_cuda, release);
  m.def("patch_nn_backward_cuda", &pydeform::patch_nn_backward_cuda, release);
  m.def("affine_warp_forward_cuda", &pydeform::affine_warp_forward_cuda, release);
  m.def("affine_warp_backward_cuda", &pydeform::affine_warp_backward_cuda, release);
  m.def("homography_forward_cuda", &pydeform::homography_forward_cuda, release);
  m.def("homography_backward_cuda", &pydeform::homography_backward_cuda, release);
#endif
}
