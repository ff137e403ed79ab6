// CUDA launcher of homography_sample. Only indexing, reductions and launch code live here; the
// projection, its derivative and the bilinear taps come from homography.h and bilinear.h, which
// the CPU tests exercise.
//
// Backward, default mode: one thread per output pixel scatters into grad_x with atomicAdd (a
// float workspace for half/bf16) and adds its grad_h terms to per-thread sums, which each block
// reduces in a fixed tree to one partial per batch item; a second kernel adds the partials in a
// fixed order. grad_h is therefore deterministic in both modes.
// Deterministic mode (torch.use_deterministic_algorithms): grad_x without atomics, one thread per
// (x image, input row) that scans every output pixel reading that image in a fixed order and
// adds the taps landing in its row. Every thread projects all those pixels: H times the
// projections of the default mode, on only Bx * H threads, so its time grows with the output
// pixels per x image (B * Ho * Wo when one image is broadcast) instead of spreading over the
// GPU. It is meant for reproducibility, not speed (a gather through the inverse homography would
// be faster but needs care wherever the inverse is degenerate).
#include <algorithm>
#include <cstdint>

#include "common/cuda_utils.cuh"
#include "common/dtype.h"
#include "common/errors.h"
#include "homography/homography.h"

namespace pydeform {
namespace {

constexpr int kThreads = kHomographyCudaThreads;

// Pixels first, first + step, ... of an image Wo wide as (row i, column j), without a 64-bit
// division per step: p < Ho * Wo exactly while i < Ho.
struct PixelWalk {
  int64_t i, j, di, dj, Wo;
  __device__ PixelWalk(int64_t first, int64_t step, int64_t width)
      : i(first / width), j(first % width), di(step / width), dj(step % width), Wo(width) {}
  __device__ void next() {
    i += di;
    j += dj;
    if (j >= Wo) j -= Wo, ++i;
  }
};

// Grid (x blocks, min(B, 65535)) of kThreads threads: batch items along y, pixels along x.
template <typename T>
__global__ void forward_pixels(const T* __restrict__ x, const T* __restrict__ h, T* __restrict__ out, int64_t Bx,
                               int64_t Bh, int64_t C, int64_t H, int64_t W, int64_t Ho, int64_t Wo,
                               HomographyGeometry<acc_t<T>> g) {
  using A = acc_t<T>;
  const int64_t B = Bx > Bh ? Bx : Bh, in_plane = H * W, out_plane = Ho * Wo;
  for (int64_t b = blockIdx.y; b < B; b += gridDim.y) {
    A m[9];
    load_homography(h + (Bh == 1 ? 0 : b) * 9, m);
    const T* x_image = x + (Bx == 1 ? 0 : b) * C * in_plane;
    T* out_image = out + b * C * out_plane;
    for (PixelWalk p(blockIdx.x * int64_t(kThreads) + threadIdx.x, int64_t(gridDim.x) * kThreads, Wo); p.i < Ho;
         p.next()) {
      HomographySample<A> s;
      const bool defined = homography_sample_at(m, g, p.i, p.j, s);
      forward_pixel(x_image, in_plane, out_image + p.i * Wo + p.j, out_plane, C, defined, s.taps);
    }
  }
}

// Grid (homography_cuda_grad_h_blocks(Ho, Wo), min(B, 65535)) of kThreads threads. For batch
// item b, block x covers pixels x * kThreads + t + k * gridDim.x * kThreads. grad_x (atomic
// scatter) and partials (one grad_h partial per (b, block)) may each be null. The loops around
// the reduction depend only on the block, so every thread reaches each __syncthreads().
template <typename T>
__global__ void backward_pixels(StridedGrad<T> grad_out, const T* __restrict__ x, const T* __restrict__ h,
                                acc_t<T>* __restrict__ grad_x, acc_t<T>* __restrict__ partials, int64_t Bx,
                                int64_t Bh, int64_t C, int64_t H, int64_t W, int64_t Ho, int64_t Wo,
                                HomographyGeometry<acc_t<T>> g) {
  using A = acc_t<T>;
  __shared__ A reduce[9][kThreads];
  const int64_t B = Bx > Bh ? Bx : Bh, in_plane = H * W;
  const int tid = threadIdx.x;
  for (int64_t b = blockIdx.y; b < B; b += gridDim.y) {
    A m[9];
    load_homography(h + (Bh == 1 ? 0 : b) * 9, m);
    const int64_t bx = Bx == 1 ? 0 : b;
    const T* x_image = x + bx * C * in_plane;
    A* grad_x_image = grad_x ? grad_x + bx * C * in_plane : nullptr;
    A sum[9] = {A(0), A(0), A(0), A(0), A(0), A(0), A(0), A(0), A(0)};
    for (PixelWalk p(blockIdx.x * int64_t(kThreads) + tid, int64_t(gridDim.x) * kThreads, Wo); p.i < Ho; p.next()) {
      HomographySample<A> s;
      if (!homography_sample_at(m, g, p.i, p.j, s)) continue;
      A gsx, gsy;
      backward_pixel(x_image, grad_out.pixel(b, p.i, p.j), grad_x_image, in_plane, grad_out.stride_c, int64_t(0), C,
                     s.taps, int64_t(0), in_plane, true, partials != nullptr, gsx, gsy);
      if (partials) add_homography_grad(s, g, gsx, gsy, sum);
    }
    if (partials) {
      for (int q = 0; q < 9; ++q) reduce[q][tid] = sum[q];
      __syncthreads();
      for (int stride = kThreads / 2; stride > 0; stride /= 2) {
        if (tid < stride)
          for (int q = 0; q < 9; ++q) reduce[q][tid] += reduce[q][tid + stride];
        __syncthreads();
      }
      if (tid == 0)
        for (int q = 0; q < 9; ++q) partials[(b * gridDim.x + blockIdx.x) * 9 + q] = reduce[q][0];
      __syncthreads();  // `reduce` is reused for the next batch item
    }
  }
}

// grad_h[bh, q] = sum over the batch items reading homography bh, then over the blocks, in order.
template <typename A>
__global__ void reduce_grad_h(const A* __restrict__ partials, A* __restrict__ grad_h, int64_t B, int64_t Bh,
                              int64_t blocks) {
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < Bh * 9; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t bh = t / 9, q = t % 9;
    const int64_t b0 = Bh == 1 ? 0 : bh, b1 = Bh == 1 ? B : bh + 1;
    A total = A(0);
    for (int64_t b = b0; b < b1; ++b) {
      A item = A(0);
      for (int64_t k = 0; k < blocks; ++k) item += partials[(b * blocks + k) * 9 + q];
      total += item;
    }
    grad_h[t] = total;
  }
}

// Deterministic grad_x: thread (bx, y) owns row y of every channel of grad_x[bx] and adds, in
// pixel order, the taps landing there from every output pixel that reads image bx.
template <typename T>
__global__ void backward_x_owned_rows(StridedGrad<T> grad_out, const T* __restrict__ x,
                                      const T* __restrict__ h, acc_t<T>* __restrict__ grad_x, int64_t Bx, int64_t Bh,
                                      int64_t C, int64_t H, int64_t W, int64_t Ho, int64_t Wo,
                                      HomographyGeometry<acc_t<T>> g) {
  using A = acc_t<T>;
  const int64_t B = Bx > Bh ? Bx : Bh, in_plane = H * W, per_image = B / Bx;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < Bx * H; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t bx = t / H, y = t % H;
    const T* x_image = x + bx * C * in_plane;
    A* grad_x_image = grad_x + bx * C * in_plane;
    for (int64_t k = 0; k < per_image; ++k) {
      const int64_t b = Bx == 1 ? k : bx;
      A m[9];
      load_homography(h + (Bh == 1 ? 0 : b) * 9, m);
      for (int64_t i = 0; i < Ho; ++i) {
        for (int64_t j = 0; j < Wo; ++j) {
          HomographySample<A> s;
          if (!homography_sample_at(m, g, i, j, s)) continue;
          A gsx, gsy;
          backward_pixel(x_image, grad_out.pixel(b, i, j), grad_x_image, in_plane, grad_out.stride_c, int64_t(0), C,
                         s.taps, y * W, (y + 1) * W, false, false, gsx, gsy);
        }
      }
    }
  }
}

}  // namespace

void homography_forward_cuda(std::uintptr_t x, std::uintptr_t h, std::uintptr_t out, int64_t Bx, int64_t Bh,
                             int64_t C, int64_t H, int64_t W, int64_t Ho, int64_t Wo, bool border, bool normalized,
                             int dtype, int device, std::uintptr_t stream) {
  homography_check_args(Bx, Bh, C, H, W, Ho, Wo);
  for (auto [p, name] : {std::pair{x, "x"}, {h, "h"}, {out, "out"}}) check_pointer(p, name);
  DeviceGuard guard(device);
  const dim3 grid(blocks_for(Ho * Wo, kThreads), grid_extent(std::max(Bx, Bh)));
  dispatch_cuda(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const auto g = homography_geometry<acc_t<T>>(H, W, Ho, Wo, border, normalized);
    launch_kernel("homography forward", forward_pixels<T>, grid, kThreads, 0, as_stream(stream),
                  reinterpret_cast<const T*>(x), reinterpret_cast<const T*>(h), reinterpret_cast<T*>(out), Bx, Bh, C, H,
                  W, Ho, Wo, g);
  });
}

void homography_backward_cuda(std::uintptr_t grad_out, int64_t grad_stride_b, int64_t grad_stride_c,
                              int64_t grad_stride_i, int64_t grad_stride_j, std::uintptr_t x, std::uintptr_t h,
                              std::uintptr_t grad_x, std::uintptr_t grad_h, std::uintptr_t grad_h_partials,
                              int64_t partials_size, int64_t Bx, int64_t Bh, int64_t C, int64_t H, int64_t W,
                              int64_t Ho, int64_t Wo, bool border, bool normalized, bool deterministic, int dtype,
                              int device, std::uintptr_t stream) {
  homography_check_args(Bx, Bh, C, H, W, Ho, Wo);
  homography_check_grad_strides(grad_stride_b, grad_stride_c, grad_stride_i, grad_stride_j);
  for (auto [p, name] : {std::pair{grad_out, "grad_out"}, {x, "x"}, {h, "h"}}) check_pointer(p, name);
  if (grad_h) {
    check_pointer(grad_h_partials, "grad_h_partials");
    check_arg(partials_size >= homography_grad_h_partials_cuda(Bx, Bh, C, Ho, Wo), "grad_h_partials is too small");
  }
  if (!grad_x && !grad_h) return;
  DeviceGuard guard(device);
  const int64_t B = std::max(Bx, Bh), blocks = homography_cuda_grad_h_blocks(Ho, Wo);
  const dim3 grid(static_cast<unsigned>(blocks), grid_extent(B));
  const cudaStream_t s = as_stream(stream);
  dispatch_cuda(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const auto g = homography_geometry<A>(H, W, Ho, Wo, border, normalized);
    const StridedGrad<T> go{reinterpret_cast<const T*>(grad_out), grad_stride_b, grad_stride_c, grad_stride_i,
                            grad_stride_j};
    const auto* xp = reinterpret_cast<const T*>(x);
    const auto* hp = reinterpret_cast<const T*>(h);
    auto* gx = reinterpret_cast<A*>(grad_x);
    auto* partials = grad_h ? reinterpret_cast<A*>(grad_h_partials) : nullptr;
    if (partials || (gx && !deterministic))
      launch_kernel("homography backward", backward_pixels<T>, grid, kThreads, 0, s, go, xp, hp,
                    deterministic ? nullptr : gx, partials, Bx, Bh, C, H, W, Ho, Wo, g);
    if (gx && deterministic)
      launch_kernel("homography backward (deterministic grad_x)", backward_x_owned_rows<T>, blocks_for(Bx * H, 64), 64,
                    0, s, go, xp, hp, gx, Bx, Bh, C, H, W, Ho, Wo, g);
    if (partials)
      launch_kernel("homography backward (grad_h)", reduce_grad_h<A>, blocks_for(Bh * 9, kThreads), kThreads, 0, s,
                    partials, reinterpret_cast<A*>(grad_h), B, Bh, blocks);
  });
}

}  // namespace pydeform
