// CUDA launcher of patch_nn_distance. Only indexing and launch code lives here; the cost,
// its gradient and the tie rule come from patch_nn.h, which the CPU tests exercise.
#include <cstdint>

#include "common/cuda_utils.cuh"
#include "common/dtype.h"
#include "common/errors.h"
#include "patch_nn/patch_nn.h"

namespace pydeform {
namespace {

constexpr int kTileW = 32, kTileH = 8, kThreads = kTileW * kTileH;

// Forward for kernel sizes up to 9: a block owns a 32 x 8 tile of output pixels, stages the
// tile of y plus its halo in shared memory one channel at a time and keeps the N*N running
// costs in registers, so x and y are each read from global memory about once.
template <typename T, int P, int N>
__global__ void forward_tiled(const T* __restrict__ x, const T* __restrict__ y, T* __restrict__ dist,
                              int64_t* __restrict__ index, int64_t B, int64_t C, int64_t H, int64_t W) {
  using A = acc_t<T>;
  constexpr int R = N / 2, SH = kTileH + 2 * R, SW = kTileW + 2 * R;
  __shared__ A tile[SH][SW];
  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * kTileW + tx;
  // Grid-stride loops whose bounds depend only on the block, so every thread of a block
  // reaches the same __syncthreads().
  for (int64_t b = blockIdx.z; b < B; b += gridDim.z) {
    for (int64_t i0 = int64_t(blockIdx.y) * kTileH; i0 < H; i0 += int64_t(gridDim.y) * kTileH) {
      for (int64_t j0 = int64_t(blockIdx.x) * kTileW; j0 < W; j0 += int64_t(gridDim.x) * kTileW) {
        const int64_t i = i0 + ty, j = j0 + tx;
        const bool active = i < H && j < W;
        A cost[N * N];
#pragma unroll
        for (int q = 0; q < N * N; ++q) cost[q] = A(0);
        for (int64_t c = 0; c < C; ++c) {
          const T* yp = y + (b * C + c) * H * W;
          for (int t = tid; t < SH * SW; t += kThreads) {
            const int64_t gi = i0 - R + t / SW, gj = j0 - R + t % SW;
            tile[t / SW][t % SW] = nn_inside(gi, gj, H, W) ? load(yp + gi * W + gj) : A(0);
          }
          __syncthreads();
          if (active) {
            const A xv = load(x + ((b * C + c) * H + i) * W + j);
#pragma unroll
            for (int q = 0; q < N * N; ++q) cost[q] += nn_cost<P>(xv - tile[ty + q / N][tx + q % N]);
          }
          __syncthreads();
        }
        if (active) {
          A best = A(0);
          int best_q = -1;
#pragma unroll
          for (int q = 0; q < N * N; ++q) {
            if (nn_inside(i + q / N - R, j + q % N - R, H, W) && nn_improves(cost[q], best, best_q >= 0))
              best = cost[q], best_q = q;
          }
          store(dist + (b * H + i) * W + j, best);
          index[(b * H + i) * W + j] = best_q;
        }
      }
    }
  }
}

// Forward for larger kernels: one thread per output pixel, offsets clipped to the image.
template <typename T, int P>
__global__ void forward_generic(const T* __restrict__ x, const T* __restrict__ y, T* __restrict__ dist,
                                int64_t* __restrict__ index, int64_t B, int64_t C, int64_t H, int64_t W, int64_t n) {
  using A = acc_t<T>;
  const int64_t r = n / 2, total = B * H * W;
  for (int64_t pix = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; pix < total;
       pix += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = pix / (H * W), i = (pix / W) % H, j = pix % W;
    A best = A(0);
    int64_t best_q = -1;
    for (int64_t ii = (i - r > 0 ? i - r : 0); ii <= i + r && ii < H; ++ii) {
      for (int64_t jj = (j - r > 0 ? j - r : 0); jj <= j + r && jj < W; ++jj) {
        A d = A(0);
        for (int64_t c = 0; c < C; ++c) {
          const int64_t plane = (b * C + c) * H * W;
          d += nn_cost<P>(load(x + plane + i * W + j) - load(y + plane + ii * W + jj));
        }
        if (nn_improves(d, best, best_q >= 0)) best = d, best_q = (ii - i + r) * n + (jj - j + r);
      }
    }
    store(dist + pix, best);
    index[pix] = best_q;
  }
}

// grad_x: one thread per pixel, through its own minimiser.
template <typename T, int P>
__global__ void backward_x(const T* __restrict__ grad_dist, const T* __restrict__ x, const T* __restrict__ y,
                           const int64_t* __restrict__ index, T* __restrict__ grad_x, int64_t B, int64_t C,
                           int64_t H, int64_t W, int64_t n) {
  using A = acc_t<T>;
  const int64_t total = B * H * W;
  for (int64_t pix = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; pix < total;
       pix += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = pix / (H * W), i = (pix / W) % H, j = pix % W, q = index[pix];
    const NNOffset o = nn_offset(q, n);
    const bool valid = q >= 0 && q < n * n && nn_inside(i + o.di, j + o.dj, H, W);
    const A g = load(grad_dist + pix);
    for (int64_t c = 0; c < C; ++c) {
      const int64_t plane = (b * C + c) * H * W;
      A v = A(0);
      if (valid) v = g * nn_cost_grad<P>(load(x + plane + i * W + j) - load(y + plane + (i + o.di) * W + j + o.dj));
      store(grad_x + plane + i * W + j, v);
    }
  }
}

// grad_y: one thread per y pixel gathers from the x pixels whose minimiser it is, so each
// output element has one writer (deterministic, no atomics). Only the offsets that fit in the
// image are visited ((2 ri + 1) x (2 rj + 1) of the n x n, as in the forward), in increasing
// index order, 32 at a time as a bit mask of matches. Each channel's sum stays in A (float32
// for half types, as the contract asks) until it is stored once.
template <typename T, int P>
__global__ void backward_y(const T* __restrict__ grad_dist, const T* __restrict__ x, const T* __restrict__ y,
                           const int64_t* __restrict__ index, T* __restrict__ grad_y, int64_t B, int64_t C,
                           int64_t H, int64_t W, int64_t n) {
  using A = acc_t<T>;
  const int64_t r = n / 2, ri = r < H - 1 ? r : H - 1, rj = r < W - 1 ? r : W - 1;
  const int64_t nj = 2 * rj + 1, nv = (2 * ri + 1) * nj, total = B * H * W;
  for (int64_t pix = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; pix < total;
       pix += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = pix / (H * W), k = (pix / W) % H, l = pix % W;
    // Bit t: visited offset v0 + t (di = v / nj - ri, dj = v % nj - rj) is the minimiser of
    // the x pixel (k - di, l - dj), i.e. that pixel picked (k, l).
    auto group_hits = [&](int64_t v0) {
      uint32_t hits = 0;
      for (int t = 0; t < 32 && v0 + t < nv; ++t) {
        const int64_t v = v0 + t, di = v / nj - ri, dj = v % nj - rj, si = k - di, sj = l - dj;
        if (nn_inside(si, sj, H, W) && index[(b * H + si) * W + sj] == (di + r) * n + dj + r) hits |= 1u << t;
      }
      return hits;
    };
    auto gather = [&](uint32_t hits, int64_t v0, int64_t plane, A yv, A& sum) {
      for (uint32_t m = hits; m; m &= m - 1) {
        const int64_t v = v0 + __ffs(m) - 1, di = v / nj - ri, dj = v % nj - rj;
        const int64_t src = (b * H + k - di) * W + l - dj;
        sum -= load(grad_dist + src) * nn_cost_grad<P>(load(x + plane + (k - di) * W + l - dj) - yv);
      }
    };
    if (nv <= 32) {  // one group (n <= 5, or a small image): its matches serve every channel
      const uint32_t hits = group_hits(0);
      for (int64_t c = 0; c < C; ++c) {
        const int64_t plane = (b * C + c) * H * W;
        A sum = A(0);
        gather(hits, 0, plane, A(load(y + plane + k * W + l)), sum);
        store(grad_y + plane + k * W + l, sum);
      }
    } else {  // several groups: the matches again per channel, so that the sum stays in A
      for (int64_t c = 0; c < C; ++c) {
        const int64_t plane = (b * C + c) * H * W;
        const A yv = load(y + plane + k * W + l);
        A sum = A(0);
        for (int64_t v0 = 0; v0 < nv; v0 += 32) gather(group_hits(v0), v0, plane, yv, sum);
        store(grad_y + plane + k * W + l, sum);
      }
    }
  }
}

template <typename F> void dispatch_p(int p, F&& f) {
  if (p == 1) f(std::integral_constant<int, 1>{});
  else f(std::integral_constant<int, 2>{});
}

template <typename T, int P>
void launch_forward(const T* x, const T* y, T* dist, int64_t* index, int64_t B, int64_t C, int64_t H, int64_t W,
                    int64_t n, cudaStream_t stream) {
  const dim3 block(kTileW, kTileH);
  const dim3 grid(grid_extent((W + kTileW - 1) / kTileW), grid_extent((H + kTileH - 1) / kTileH), grid_extent(B));
  const char* name = "patch_nn forward";
  switch (n) {
    case 1: launch_kernel(name, forward_tiled<T, P, 1>, grid, block, 0, stream, x, y, dist, index, B, C, H, W); break;
    case 3: launch_kernel(name, forward_tiled<T, P, 3>, grid, block, 0, stream, x, y, dist, index, B, C, H, W); break;
    case 5: launch_kernel(name, forward_tiled<T, P, 5>, grid, block, 0, stream, x, y, dist, index, B, C, H, W); break;
    case 7: launch_kernel(name, forward_tiled<T, P, 7>, grid, block, 0, stream, x, y, dist, index, B, C, H, W); break;
    case 9: launch_kernel(name, forward_tiled<T, P, 9>, grid, block, 0, stream, x, y, dist, index, B, C, H, W); break;
    default:
      launch_kernel(name, forward_generic<T, P>, blocks_for(B * H * W, 256), 256, 0, stream, x, y, dist, index, B, C,
                    H, W, n);
  }
}

}  // namespace

void patch_nn_forward_cuda(std::uintptr_t x, std::uintptr_t y, std::uintptr_t dist, std::uintptr_t index, int64_t B,
                           int64_t C, int64_t H, int64_t W, int64_t n, int p, int dtype, int device,
                           std::uintptr_t stream) {
  patch_nn_check_args(B, C, H, W, n, p);
  for (auto [ptr, name] : {std::pair{x, "x"}, {y, "y"}, {dist, "dist"}, {index, "index"}}) check_pointer(ptr, name);
  DeviceGuard guard(device);
  dispatch_cuda(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    dispatch_p(p, [&](auto pc) {
      launch_forward<T, decltype(pc)::value>(reinterpret_cast<const T*>(x), reinterpret_cast<const T*>(y),
                                             reinterpret_cast<T*>(dist), reinterpret_cast<int64_t*>(index), B, C, H,
                                             W, n, as_stream(stream));
    });
  });
}

void patch_nn_backward_cuda(std::uintptr_t grad_dist, std::uintptr_t x, std::uintptr_t y, std::uintptr_t index,
                            std::uintptr_t grad_x, std::uintptr_t grad_y, int64_t B, int64_t C, int64_t H, int64_t W,
                            int64_t n, int p, int dtype, int device, std::uintptr_t stream) {
  patch_nn_check_args(B, C, H, W, n, p);
  for (auto [ptr, name] : {std::pair{grad_dist, "grad_dist"}, {x, "x"}, {y, "y"}, {index, "index"}})
    check_pointer(ptr, name);
  DeviceGuard guard(device);
  const unsigned blocks = blocks_for(B * H * W, 256);
  dispatch_cuda(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    dispatch_p(p, [&](auto pc) {
      constexpr int P = decltype(pc)::value;
      const auto* g = reinterpret_cast<const T*>(grad_dist);
      const auto* xp = reinterpret_cast<const T*>(x);
      const auto* yp = reinterpret_cast<const T*>(y);
      const auto* ip = reinterpret_cast<const int64_t*>(index);
      if (grad_x)
        launch_kernel("patch_nn backward (x)", backward_x<T, P>, blocks, 256, 0, as_stream(stream), g, xp, yp, ip,
                      reinterpret_cast<T*>(grad_x), B, C, H, W, n);
      if (grad_y)
        launch_kernel("patch_nn backward (y)", backward_y<T, P>, blocks, 256, 0, as_stream(stream), g, xp, yp, ip,
                      reinterpret_cast<T*>(grad_y), B, C, H, W, n);
    });
  });
}

}  // namespace pydeform
