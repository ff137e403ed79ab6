#pragma once
// dtype codes shared with pydeform/ops/_backend.py, the accumulation type of each storage
// type, and the switch that turns a code into a template argument.
#include <cstdint>
#include <string>

#include "common/errors.h"
#include "common/macros.h"

#if defined(__CUDACC__) || defined(PYDEFORM_CUDA_EMULATION)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

namespace pydeform {

enum DTypeCode : int { kFloat32 = 0, kFloat64 = 1, kFloat16 = 2, kBFloat16 = 3 };

// Accumulate in float, or double for double.
template <typename T> struct AccType { using type = float; };
template <> struct AccType<double> { using type = double; };
template <typename T> using acc_t = typename AccType<T>::type;

template <typename T> HOST_DEVICE acc_t<T> load(const T* p) { return static_cast<acc_t<T>>(*p); }
template <typename T> HOST_DEVICE void store(T* p, acc_t<T> v) { *p = static_cast<T>(v); }
#if defined(__CUDACC__) || defined(PYDEFORM_CUDA_EMULATION)
template <> HOST_DEVICE float load<__half>(const __half* p) { return __half2float(*p); }
template <> HOST_DEVICE void store<__half>(__half* p, float v) { *p = __float2half_rn(v); }
template <> HOST_DEVICE float load<__nv_bfloat16>(const __nv_bfloat16* p) { return __bfloat162float(*p); }
template <> HOST_DEVICE void store<__nv_bfloat16>(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }
#endif

template <typename T> struct TypeTag { using type = T; };

// CPU kernels: float32 and float64 only.
template <typename F> void dispatch_cpu(int code, F&& f) {
  switch (code) {
    case kFloat32: f(TypeTag<float>{}); break;
    case kFloat64: f(TypeTag<double>{}); break;
    default: throw std::invalid_argument("pydeform._C: the CPU kernels support float32 and float64, got dtype code " + std::to_string(code));
  }
}

#if defined(__CUDACC__) || defined(PYDEFORM_CUDA_EMULATION)
template <typename F> void dispatch_cuda(int code, F&& f) {
  switch (code) {
    case kFloat32: f(TypeTag<float>{}); break;
    case kFloat64: f(TypeTag<double>{}); break;
    case kFloat16: f(TypeTag<__half>{}); break;
    case kBFloat16: f(TypeTag<__nv_bfloat16>{}); break;
    default: throw std::invalid_argument("pydeform._C: unknown dtype code " + std::to_string(code));
  }
}
#endif

}  // namespace pydeform
