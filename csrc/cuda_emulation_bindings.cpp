// The test-only module pydeform's CUDA emulation build makes (PYDEFORM_CUDA_EMULATION=ON): the
// CUDA launchers of the three ops, compiled as C++ with common/cuda_emulation.h, taking CPU
// pointers. tests/cuda_emulation/ compares them with the CPU kernels. Not part of a wheel.
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "affine_warp/affine_warp.h"
#include "common/cuda_emulation.h"
#include "homography/homography.h"
#include "patch_nn/patch_nn.h"

#ifndef PYDEFORM_EMULATION_MODULE
#define PYDEFORM_EMULATION_MODULE _cuda_emulation
#endif

namespace py = pybind11;
namespace emu = pydeform::emulation;

namespace {

// Kernels that check the emulation itself (tests/cuda_emulation/test_emulation.py).
__global__ void divergent_sync(int* out) {
  if (threadIdx.x % 2 == 0) __syncthreads();  // odd threads skip the barrier
  out[threadIdx.x] = 1;
}
__global__ void early_return(int* out) {
  if (threadIdx.x >= 3) return;  // these threads never reach the barrier below
  __syncthreads();
  out[threadIdx.x] = 1;
}
__global__ void shared_reverse(int* out) {  // needs its barrier: each thread reads another's slot
  __shared__ int s[64];
  s[threadIdx.x] = int(blockIdx.x * 64 + threadIdx.x);
  __syncthreads();
  out[blockIdx.x * 64 + threadIdx.x] = s[63 - threadIdx.x];
}
__global__ void atomic_sum(float* total) { atomicAdd(total, 1.0f); }
__global__ void endless(int* out) {
  if (threadIdx.x == 1)
    for (volatile int spin = 0; spin >= 0; spin = 0) {
    }
  __syncthreads();
  out[0] = 1;
}

py::object selftest(const std::string& name) {
  std::vector<int> out(4 * 64, 0);
  float total = 0;
  py::gil_scoped_release release;
  if (name == "divergent_sync") emu::launch(name.c_str(), 1, 8, 0, [&] { divergent_sync(out.data()); });
  else if (name == "early_return") emu::launch(name.c_str(), 1, 8, 0, [&] { early_return(out.data()); });
  else if (name == "shared_reverse") emu::launch(name.c_str(), 4, 64, 0, [&] { shared_reverse(out.data()); });
  else if (name == "atomic_sum") emu::launch(name.c_str(), dim3(3, 2), dim3(32, 4), 0, [&] { atomic_sum(&total); });
  else if (name == "endless") emu::launch(name.c_str(), 1, 4, 0, [&] { endless(out.data()); });
  else if (name == "bad_config") emu::launch(name.c_str(), 1, 2048, 0, [] {});
  else throw std::invalid_argument("unknown selftest " + name);
  py::gil_scoped_acquire acquire;
  py::list values;
  for (int v : out) values.append(v);
  return py::make_tuple(values, total);
}

}  // namespace

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
  m.def("selftest", &selftest, "Run one of the emulation's own test kernels: (int outputs, float total).");
  const auto release = py::call_guard<py::gil_scoped_release>();
  m.def("patch_nn_forward_cuda", &pydeform::patch_nn_forward_cuda, release);
  m.def("patch_nn_backward_cuda", &pydeform::patch_nn_backward_cuda, release);
  m.def("affine_warp_forward_cuda", &pydeform::affine_warp_forward_cuda, release);
  m.def("affine_warp_backward_cuda", &pydeform::affine_warp_backward_cuda, release);
  m.def("homography_forward_cuda", &pydeform::homography_forward_cuda, release);
  m.def("homography_backward_cuda", &pydeform::homography_backward_cuda, release);
  m.def("homography_grad_h_partials_cuda", &pydeform::homography_grad_h_partials_cuda);
}
