#pragma once
// Launch helpers for the CUDA launchers: the device guard, the stream Python passed, grid
// sizing for grid-stride loops, and launch_kernel, through which every kernel is launched (with
// nvcc: <<<...>>> plus the error check; in the emulation build: cuda_emulation.h's launch).
#if defined(PYDEFORM_CUDA_EMULATION)
#include "common/cuda_emulation.h"
#else
#include <cuda_runtime.h>
#endif

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace pydeform {

inline void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw std::runtime_error(std::string("pydeform CUDA error in ") + what + ": " + cudaGetErrorString(err));
}

// Makes `device` current for the launch and restores the previous device afterwards, only if
// it changed it (as c10's guard: setting a device creates its context, hundreds of MB).
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    check_cuda(cudaGetDevice(&previous_), "cudaGetDevice");
    if (previous_ != device) {
      check_cuda(cudaSetDevice(device), "cudaSetDevice");
      changed_ = true;
    }
  }
  ~DeviceGuard() {
    if (changed_) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
  bool changed_ = false;
};

inline cudaStream_t as_stream(std::uintptr_t handle) { return reinterpret_cast<cudaStream_t>(handle); }

// A grid extent of at most `limit` (the hardware's). The emulation tests lower the limit so that
// the grid-stride loops behind it run with small sizes.
inline int64_t grid_limit(int64_t limit) {
#if defined(PYDEFORM_CUDA_EMULATION)
  const int64_t cap = emulation::grid_cap.load();
  if (cap > 0 && cap < limit) return cap;
#endif
  return limit;
}
inline unsigned int grid_extent(int64_t wanted, int64_t limit = 65535) {
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min<int64_t>(wanted, grid_limit(limit))));
}

// Blocks for a grid-stride loop over n items; the cap keeps the grid legal for any n.
inline unsigned int blocks_for(int64_t n, int threads) { return grid_extent((n + threads - 1) / threads, 65535LL * 32); }

inline void check_launch(const char* kernel) { check_cuda(cudaGetLastError(), kernel); }

// kernel<<<grid, block, shared_bytes, stream>>>(args...) and the error check. The arguments
// are converted to the kernel's parameter types here, as a <<<>>> launch does.
template <typename... Params, typename... Args>
void launch_kernel(const char* name, void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes,
                   cudaStream_t stream, Args... args) {
  static_assert(sizeof...(Params) == sizeof...(Args), "launch_kernel: wrong number of kernel arguments");
#if defined(PYDEFORM_CUDA_EMULATION)
  (void)stream;
  emulation::launch(name, grid, block, shared_bytes, [&] { kernel(static_cast<Params>(args)...); });
#else
  kernel<<<grid, block, shared_bytes, stream>>>(static_cast<Params>(args)...);
  check_launch(name);
#endif
}

}  // namespace pydeform
