#pragma once
// HOST_DEVICE marks the per-element math that both the CPU and the CUDA launchers call.
#if defined(__CUDACC__)
#define HOST_DEVICE __host__ __device__ __forceinline__
#else
#define HOST_DEVICE inline
#endif
