#pragma once
// Run-time ISA dispatch for the CPU kernels: a hot loop is written once as an always-inline
// body and compiled for baseline x86-64 and for AVX2/FMA (homography_sample also for
// AVX-512); the launcher picks one with cpu_isa(), so one build runs on any x86-64 CPU.
#include <cstdlib>
#include <string>

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define PYDEFORM_X86_DISPATCH 1
#define PYDEFORM_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define PYDEFORM_X86_DISPATCH 0
#define PYDEFORM_ALWAYS_INLINE inline
#endif

namespace pydeform {

enum class CpuIsa { Portable = 0, Avx2 = 1, Avx512 = 2 };

// The widest instruction set the kernels use: what the CPU has, capped by the environment
// variable PYDEFORM_CPU_ISA (portable, avx2 or avx512), read once. The cap lets the tests run
// every build on one machine.
inline CpuIsa cpu_isa() {
  static const CpuIsa isa = [] {
    CpuIsa has = CpuIsa::Portable;
#if PYDEFORM_X86_DISPATCH
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
      has = CpuIsa::Avx2;
      if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
          __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw"))
        has = CpuIsa::Avx512;
    }
#endif
    // (pydeform.ops checks the value at import; anything else here means no cap)
    const char* cap = std::getenv("PYDEFORM_CPU_ISA");
    const std::string name(cap == nullptr ? "" : cap);
    CpuIsa wanted = CpuIsa::Avx512;
    if (name == "portable") wanted = CpuIsa::Portable;
    if (name == "avx2") wanted = CpuIsa::Avx2;
    return wanted < has ? wanted : has;
  }();
  return isa;
}

}  // namespace pydeform
