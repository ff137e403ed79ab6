// The test-only module pydeform's CUDA emulation build makes (PYDEFORM_CUDA_EMULATION=ON): the
// CUDA launchers of the three ops, compiled as C++ with common/cuda_emulation.h, taking CPU
// pointers. tests/cuda_emulation/ compares them with the CPU kernels. Not part of a wheel.
#include <pybind11/pybind11.h>

#include "affine_warp/affine_warp.h"
#include "common/cuda_emulation.h"
#include "homography/homography.h"
#include "patch_nn/patch_nn.h"

#ifndef PYDEFORM_EMULATION_MODULE
#define PYDEFORM_EMULATION_MODULE _cuda_emulation
#endif

namespace py = pybind11;
namespace emu = pydeform::emulation;

PYBIND11_MODULE(PYDEFORM_EMULATION_MODULE, m) {
  m.doc() = "pydeform's CUDA launchers run on the CPU by an emulated launch (tests only)";
  m.attr("variant") = PYDEFORM_EMULATION_VARIANT;         // "" or the defect a broken variant has
  m.attr("sanitizers") = PYDEFORM_EMULATION_SANITIZERS;   // "" or what -fsanitize= it was built with
  m.def("set_grid_cap", [](int64_t cap) { emu::grid_cap = cap; },
        "Cap every grid extent the launchers compute (0: the hardware limits), to run their grid-stride loops "
        "with small sizes.");
  m.def("set_barrier_timeout", [](int seconds) { emu::barrier_timeout_s = seconds; });
  m.def("counters", [] {
    py::dict d;
    d["launches"] = emu::launches.load();
    d["blocks"] = emu::blocks_run.load();
    return d;
  });
  const auto release = py::call_guard<py::gil_scoped_release>();
  m.def("patch_nn_forward_cuda", &pydeform::patch_nn_forward_cuda, release);
  m.def("patch_nn_backward_cuda", &pydeform::patch_nn_backward_cuda, release);
  m.def("affine_warp_forward_cuda", &pydeform::affine_warp_forward_cuda, release);
  m.def("affine_warp_backward_cuda", &pydeform::affine_warp_backward_cuda, release);
  m.def("homography_forward_cuda", &pydeform::homography_forward_cuda, release);
  m.def("homography_backward_cuda", &pydeform::homography_backward_cuda, release);
  m.def("homography_grad_h_partials_cuda", &pydeform::homography_grad_h_partials_cuda);
}
