// CUDA launcher of multi_affine_warp. Only indexing and launch code lives here; the sample
// point, the candidate, the tie rule and the gradient chain come from affine_warp.h, which
// the CPU tests exercise.
//
// Determinism: the forward, grad_mask and grad_theta are deterministic. grad_theta is a
// block-level tree reduction per ((b, k), tile of pixels) into theta_partials, then a
// second kernel sums the tiles of each (b, k) in tile order. grad_x is a scatter with
// atomicAdd (into a float32 workspace for float16/bfloat16), so its last bits can vary
// from run to run.
#include <algorithm>
#include <cstdint>
#include <utility>

#include "affine_warp/affine_warp.h"
#include "common/cuda_utils.cuh"
#include "common/dtype.h"
#include "common/errors.h"

namespace pydeform {
namespace {

constexpr int kThreads = 256;
// Channels per thread in the forward and the x scatter: a part's sample point and taps are
// computed once for the whole chunk.
constexpr int kChannelChunk = 8;

struct Dims {
  int64_t B, C, H, W, K, Ho, Wo;
};

// Work item -> (b, first channel, channels in the chunk, output pixel). Pixels vary
// fastest, so the threads of a warp sample neighbouring points.
struct ChunkPixel {
  int64_t b, c0, pix, i, j;
  int n;
};

__device__ __forceinline__ ChunkPixel chunk_pixel(int64_t item, const Dims& d) {
  const int64_t pixels = d.Ho * d.Wo, chunks = (d.C + kChannelChunk - 1) / kChannelChunk;
  ChunkPixel p;
  p.pix = item % pixels;
  const int64_t bc = item / pixels;
  p.b = bc / chunks;
  p.c0 = (bc % chunks) * kChannelChunk;
  p.i = p.pix / d.Wo;
  p.j = p.pix % d.Wo;
  p.n = static_cast<int>(d.C - p.c0 < kChannelChunk ? d.C - p.c0 : kChannelChunk);
  return p;
}

__host__ __device__ __forceinline__ int64_t chunk_items(const Dims& d) {
  return d.B * ((d.C + kChannelChunk - 1) / kChannelChunk) * d.Ho * d.Wo;
}

template <typename T>
__global__ void forward_kernel(const T* __restrict__ x, const T* __restrict__ theta, const T* __restrict__ mask,
                               T* __restrict__ out, uint8_t* __restrict__ argmax, Dims d, bool identity) {
  using A = acc_t<T>;
  const int64_t total = chunk_items(d), pixels = d.Ho * d.Wo;
  for (int64_t item = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; item < total;
       item += int64_t(gridDim.x) * blockDim.x) {
    const ChunkPixel p = chunk_pixel(item, d);
    A best[kChannelChunk];
    uint8_t code[kChannelChunk];
#pragma unroll
    for (int cc = 0; cc < kChannelChunk; ++cc) {
      best[cc] = A(0), code[cc] = kIdentityCode;
      if (identity && cc < p.n) best[cc] = load(x + ((p.b * d.C + p.c0 + cc) * d.H + p.i) * d.W + p.j);
    }
    for (int64_t k = 0; k < d.K; ++k) {
      const int64_t bk = p.b * d.K + k;
      const A m = mask ? load(mask + bk * pixels + p.pix) : A(1);
      BilinearTaps<A> taps;
      const bool valid = affine_taps(load_affine(theta + bk * 6), p.i, p.j, d.H, d.W, taps);
      const bool first = k == 0 && !identity;
#pragma unroll
      for (int cc = 0; cc < kChannelChunk; ++cc) {
        if (cc < p.n) {
          const A v = part_candidate(x + (p.b * d.C + p.c0 + cc) * d.H * d.W, valid, taps, m);
          if (first || warp_improves(v, best[cc])) best[cc] = v, code[cc] = static_cast<uint8_t>(k);
        }
      }
    }
#pragma unroll
    for (int cc = 0; cc < kChannelChunk; ++cc) {
      if (cc < p.n) {
        const int64_t o = (p.b * d.C + p.c0 + cc) * pixels + p.pix;
        store(out + o, best[cc]);
        argmax[o] = code[cc];
      }
    }
  }
}

// grad_x: each output element scatters g * mask * tap weight to the winner's taps with
// atomicAdd into grad_x (acc_t<T>, zero-filled by Python). Neighbouring channels usually
// share the winner, so the taps are recomputed only when it changes.
template <typename T>
__global__ void x_grad_kernel(const T* __restrict__ grad_out, const T* __restrict__ theta, const T* __restrict__ mask,
                              const uint8_t* __restrict__ argmax, acc_t<T>* __restrict__ grad_x, Dims d,
                              bool identity) {
  using A = acc_t<T>;
  const int64_t total = chunk_items(d), pixels = d.Ho * d.Wo;
  for (int64_t item = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; item < total;
       item += int64_t(gridDim.x) * blockDim.x) {
    const ChunkPixel p = chunk_pixel(item, d);
    int64_t taps_k = -1;
    BilinearTaps<A> taps;
    bool valid = false;
    A m = A(0);
    for (int cc = 0; cc < p.n; ++cc) {
      const int64_t c = p.c0 + cc, o = (p.b * d.C + c) * pixels + p.pix;
      const int64_t k = argmax[o];
      A* gx = grad_x + (p.b * d.C + c) * d.H * d.W;
      const A g = load(grad_out + o);
      if (k == kIdentityCode) {
        if (identity) atomicAdd(gx + p.i * d.W + p.j, g);
        continue;
      }
      if (k >= d.K) continue;  // never trust a code that is no part
      if (k != taps_k) {
        const int64_t bk = p.b * d.K + k;
        m = mask ? load(mask + bk * pixels + p.pix) : A(1);
        valid = affine_taps(load_affine(theta + bk * 6), p.i, p.j, d.H, d.W, taps);
        taps_k = k;
      }
      if (!valid) continue;
      const A gm = g * m;
      for (int t = 0; t < 4; ++t) {
        if (taps.inside[t]) atomicAdd(gx + taps.offset[t], gm * taps.weight[t]);
      }
    }
  }
}

// grad_mask and the grad_theta partials. Block (tile, bk) covers the pixels tile, tile + P,
// ... (in units of kThreads) of (b, k) = bk; a thread sums, over the channels that part k
// won at its pixel, g * value (-> grad_mask, written directly: one writer) and g * d value /
// d point (-> theta). The block then tree-reduces its theta terms in shared memory and
// writes them to theta_partials[bk, tile]: no atomics, a fixed order.
template <typename T>
__global__ void theta_mask_grad_kernel(const T* __restrict__ grad_out, const T* __restrict__ x,
                                       const T* __restrict__ theta, const T* __restrict__ mask,
                                       const uint8_t* __restrict__ argmax, T* __restrict__ grad_mask,
                                       acc_t<T>* __restrict__ theta_partials, Dims d, int64_t P) {
  using A = acc_t<T>;
  __shared__ A reduce[6][kThreads];
  const int64_t pixels = d.Ho * d.Wo, BK = d.B * d.K;
  const int tid = threadIdx.x;
  // Loop bounds depend only on the block, so every thread reaches each __syncthreads().
  for (int64_t bk = blockIdx.y; bk < BK; bk += gridDim.y) {
    const int64_t b = bk / d.K;
    const uint8_t k = static_cast<uint8_t>(bk % d.K);
    const Affine<A> affine = load_affine(theta + bk * 6);
    A partial[6] = {A(0), A(0), A(0), A(0), A(0), A(0)};
    for (int64_t pix = blockIdx.x * int64_t(kThreads) + tid; pix < pixels; pix += P * kThreads) {
      const int64_t i = pix / d.Wo, j = pix % d.Wo;
      BilinearTaps<A> taps;
      A sum_value = A(0), sum_gsx = A(0), sum_gsy = A(0);
      if (affine_taps(affine, i, j, d.H, d.W, taps)) {  // else the part sampled 0: no gradient
        for (int64_t c = 0; c < d.C; ++c) {
          const int64_t o = (b * d.C + c) * pixels + pix;
          if (argmax[o] != k) continue;
          const A g = load(grad_out + o);
          A value, gsx, gsy;
          part_value_and_coord_grad(x + (b * d.C + c) * d.H * d.W, taps, value, gsx, gsy);
          sum_value += g * value, sum_gsx += g * gsx, sum_gsy += g * gsy;
        }
      }
      if (grad_mask) store(grad_mask + bk * pixels + pix, sum_value);
      const A m = mask ? load(mask + bk * pixels + pix) : A(1);
      add_theta_grad(m * sum_gsx, m * sum_gsy, i, j, partial);
    }
    if (theta_partials) {
      for (int q = 0; q < 6; ++q) reduce[q][tid] = partial[q];
      __syncthreads();
      for (int s = kThreads / 2; s > 0; s >>= 1) {
        if (tid < s) {
          for (int q = 0; q < 6; ++q) reduce[q][tid] += reduce[q][tid + s];
        }
        __syncthreads();
      }
      if (tid < 6) theta_partials[(bk * P + blockIdx.x) * 6 + tid] = reduce[tid][0];
      __syncthreads();  // the next bk reuses `reduce`
    }
  }
}

// grad_theta[bk, q] = sum of theta_partials[bk, 0..P-1, q], in tile order.
template <typename T>
__global__ void theta_combine_kernel(const acc_t<T>* __restrict__ theta_partials, T* __restrict__ grad_theta,
                                     int64_t BK, int64_t P) {
  using A = acc_t<T>;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < BK * 6;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t bk = idx / 6, q = idx % 6;
    A total = A(0);
    for (int64_t p = 0; p < P; ++p) total += theta_partials[(bk * P + p) * 6 + q];
    store(grad_theta + idx, total);
  }
}

}  // namespace

void affine_warp_forward_cuda(std::uintptr_t x, std::uintptr_t theta, std::uintptr_t mask, std::uintptr_t out,
                              std::uintptr_t argmax, std::uintptr_t /*packed: CPU only*/, int64_t B, int64_t C,
                              int64_t H, int64_t W, int64_t K, int64_t Ho, int64_t Wo, bool identity, int dtype,
                              int device, std::uintptr_t stream) {
  affine_warp_check_args(B, C, H, W, K, Ho, Wo, identity);
  for (auto [p, name] : {std::pair{x, "x"}, {theta, "theta"}, {out, "out"}, {argmax, "argmax"}}) check_pointer(p, name);
  const Dims d{B, C, H, W, K, Ho, Wo};
  DeviceGuard guard(device);
  dispatch_cuda(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch_kernel("affine_warp forward", forward_kernel<T>, blocks_for(chunk_items(d), kThreads), kThreads, 0,
                  as_stream(stream), reinterpret_cast<const T*>(x), reinterpret_cast<const T*>(theta),
                  reinterpret_cast<const T*>(mask), reinterpret_cast<T*>(out), reinterpret_cast<uint8_t*>(argmax), d,
                  identity);
  });
}

void affine_warp_backward_cuda(std::uintptr_t grad_out, std::uintptr_t x, std::uintptr_t theta, std::uintptr_t mask,
                               std::uintptr_t argmax, std::uintptr_t grad_x, std::uintptr_t grad_theta,
                               std::uintptr_t grad_mask, std::uintptr_t theta_partials,
                               std::uintptr_t /*packed: CPU only*/, int64_t B, int64_t C, int64_t H, int64_t W,
                               int64_t K, int64_t Ho, int64_t Wo, bool identity, int64_t P, int dtype, int device,
                               std::uintptr_t stream) {
  affine_warp_check_args(B, C, H, W, K, Ho, Wo, identity);
  for (auto [p, name] : {std::pair{grad_out, "grad_out"}, {x, "x"}, {theta, "theta"}, {argmax, "argmax"}})
    check_pointer(p, name);
  check_arg(!grad_mask || mask, "grad_mask needs mask");
  check_arg(!grad_theta || theta_partials, "grad_theta needs theta_partials");
  check_arg(!(grad_theta || grad_mask) || (P >= 1 && P <= 65535), "P (pixel tiles per part) must be in [1, 65535]");
  const Dims d{B, C, H, W, K, Ho, Wo};
  DeviceGuard guard(device);
  const cudaStream_t s = as_stream(stream);
  dispatch_cuda(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const auto* go = reinterpret_cast<const T*>(grad_out);
    const auto* th = reinterpret_cast<const T*>(theta);
    const auto* mk = reinterpret_cast<const T*>(mask);
    const auto* am = reinterpret_cast<const uint8_t*>(argmax);
    if (grad_x)
      launch_kernel("affine_warp backward (x)", x_grad_kernel<T>, blocks_for(chunk_items(d), kThreads), kThreads, 0,
                    s, go, th, mk, am, reinterpret_cast<A*>(grad_x), d, identity);
    if (grad_theta || grad_mask) {
      A* partials = grad_theta ? reinterpret_cast<A*>(theta_partials) : nullptr;
      const dim3 grid(static_cast<unsigned>(P), grid_extent(B * K));
      launch_kernel("affine_warp backward (theta, mask)", theta_mask_grad_kernel<T>, grid, kThreads, 0, s, go,
                    reinterpret_cast<const T*>(x), th, mk, am, reinterpret_cast<T*>(grad_mask), partials, d, P);
    }
    if (grad_theta)
      launch_kernel("affine_warp backward (theta combine)", theta_combine_kernel<T>, blocks_for(B * K * 6, kThreads),
                    kThreads, 0, s, reinterpret_cast<const A*>(theta_partials), reinterpret_cast<T*>(grad_theta),
                    B * K, P);
  });
}

}  // namespace pydeform
