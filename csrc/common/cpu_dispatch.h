#pragma once
// Run-time ISA dispatch for the CPU kernels: a hot loop is written once as an always-inline
// body and compiled twice (baseline x86-64 and AVX2/FMA); the launcher picks one with
// __builtin_cpu_supports, so one build runs on any x86-64 CPU.
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define PYDEFORM_X86_DISPATCH 1
#define PYDEFORM_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define PYDEFORM_X86_DISPATCH 0
#define PYDEFORM_ALWAYS_INLINE inline
#endif
