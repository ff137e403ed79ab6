// CPU launcher of patch_nn_distance: OpenMP over image rows (forward) and channel planes
// (backward). The forward accumulates the n*n costs of a whole row channel by channel so
// the inner loop runs over contiguous columns and vectorises.
#include <algorithm>
#include <limits>
#include <vector>

#include "common/cpu_dispatch.h"
#include "common/cpu_parallel.h"
#include "common/dtype.h"
#include "common/errors.h"
#include "patch_nn/patch_nn.h"


namespace pydeform {

void patch_nn_check_args(int64_t B, int64_t C, int64_t H, int64_t W, int64_t n, int p) {
  check_sizes_positive({B, C, H, W});
  check_arg(n >= 1 && n % 2 == 1, "kernel_size must be odd and >= 1");
  check_arg(n < (int64_t(1) << 31), "kernel_size must be below 2^31");
  check_arg(p == 1 || p == 2, "p must be 1 or 2");
}

namespace {

// acc[(di + ri) * nj + (dj + rj)][j] += sum_c cost(x[b,c,i,j] - y[b,c,i+di,j+dj]): the hot loop.
// Channel by channel, so the innermost loop runs over contiguous columns and vectorises.
template <typename T, int P>
PYDEFORM_ALWAYS_INLINE void accumulate_row_costs(acc_t<T>* acc, const T* x, const T* y, int64_t b, int64_t i, int64_t C,
                                                 int64_t H, int64_t W, int64_t ri, int64_t rj) {
  using A = acc_t<T>;
  const int64_t nj = 2 * rj + 1;
  for (int64_t c = 0; c < C; ++c) {
    const T* xr = x + ((b * C + c) * H + i) * W;
    // Channel planes lie H * W elements apart, too far for the hardware prefetcher: ask for the
    // two rows that channel c + 2 reads first (the rows above it are still cached from row i - 1).
#if defined(__GNUC__)
    if (c + 2 < C) {
      const T* next_x = x + ((b * C + c + 2) * H + i) * W;
      const T* next_y = y + ((b * C + c + 2) * H + std::min(i + ri, H - 1)) * W;
      for (int64_t j = 0; j < W; j += 64 / int64_t(sizeof(T))) {
        __builtin_prefetch(next_x + j);
        __builtin_prefetch(next_y + j);
      }
    }
#endif
    for (int64_t di = -ri; di <= ri; ++di) {
      const int64_t ii = i + di;
      if (ii < 0 || ii >= H) continue;
      const T* yr = y + ((b * C + c) * H + ii) * W;
      for (int64_t dj = -rj; dj <= rj; ++dj) {
        A* a = acc + ((di + ri) * nj + (dj + rj)) * W;
        const int64_t lo = std::max<int64_t>(0, -dj), hi = std::min<int64_t>(W, W - dj);
        const T* ys = yr + dj;
        for (int64_t j = lo; j < hi; ++j) a[j] += nn_cost<P>(A(xr[j]) - A(ys[j]));
      }
    }
  }
}

template <typename T, int P>
void accumulate_row_costs_portable(acc_t<T>* acc, const T* x, const T* y, int64_t b, int64_t i, int64_t C, int64_t H,
                                   int64_t W, int64_t ri, int64_t rj) {
  accumulate_row_costs<T, P>(acc, x, y, b, i, C, H, W, ri, rj);
}

#if PYDEFORM_X86_DISPATCH
// The same loop compiled for AVX2: twice the vector width of the x86-64 baseline, chosen at
// run time so one build still runs on any x86-64 CPU.
template <typename T, int P>
__attribute__((target("avx2,fma"))) void accumulate_row_costs_avx2(acc_t<T>* acc, const T* x, const T* y, int64_t b,
                                                                   int64_t i, int64_t C, int64_t H, int64_t W,
                                                                   int64_t ri, int64_t rj) {
  accumulate_row_costs<T, P>(acc, x, y, b, i, C, H, W, ri, rj);
}
#endif

template <typename T, int P> auto pick_accumulate_row_costs() {
#if PYDEFORM_X86_DISPATCH
  if (cpu_isa() >= CpuIsa::Avx2) return &accumulate_row_costs_avx2<T, P>;
#endif
  return &accumulate_row_costs_portable<T, P>;
}

template <typename T, int P>
void forward_rows(const T* x, const T* y, T* dist, int64_t* index, int64_t B, int64_t C, int64_t H, int64_t W,
                  int64_t n, int num_threads) {
  using A = acc_t<T>;
  // Offsets beyond the image never count, so only (2 ri + 1) x (2 rj + 1) of the n x n are
  // scanned: a huge kernel_size costs no more than one covering the image.
  const int64_t r = n / 2, ri = std::min(r, H - 1), rj = std::min(r, W - 1), ni = 2 * ri + 1, nj = 2 * rj + 1;
  const auto accumulate = pick_accumulate_row_costs<T, P>();
  parallel_for(B * H, num_threads, [&](int64_t row) {
    const int64_t b = row / H, i = row % H;
    thread_local std::vector<A> acc;  // acc[(di + ri) * nj + (dj + rj)][j]
    acc.assign(static_cast<size_t>(ni * nj * W), A(0));
    accumulate(acc.data(), x, y, b, i, C, H, W, ri, rj);
    // Scanning di, then dj, upwards visits the offsets in increasing index order.
    for (int64_t j = 0; j < W; ++j) {
      A best = A(0);
      int64_t best_q = -1;
      for (int64_t di = -ri; di <= ri; ++di) {
        for (int64_t dj = -rj; dj <= rj; ++dj) {
          if (!nn_inside(i + di, j + dj, H, W)) continue;
          const A d = acc[((di + ri) * nj + (dj + rj)) * W + j];
          if (nn_improves(d, best, best_q >= 0)) best = d, best_q = (di + r) * n + (dj + r);
        }
      }
      dist[(b * H + i) * W + j] = static_cast<T>(best);
      index[(b * H + i) * W + j] = best_q;
    }
  });
}

// One task per (b, block of channels): each row's minimisers are decoded once and reused
// by the block's channels. grad_x gathers from the minimiser, grad_y scatters to it; a task
// owns its channels, so the scatter is race-free and deterministic.
template <typename T, int P>
void backward_blocks(const T* grad_dist, const T* x, const T* y, const int64_t* index, T* grad_x, T* grad_y,
                     int64_t B, int64_t C, int64_t H, int64_t W, int64_t n, int num_threads) {
  using A = acc_t<T>;
  constexpr int64_t kBlock = 8;
  const int64_t nn = n * n, blocks = (C + kBlock - 1) / kBlock, plane = H * W;
  parallel_for(B * blocks, num_threads, [&](int64_t task) {
    const int64_t b = task / blocks, c0 = (task % blocks) * kBlock, c1 = std::min(C, c0 + kBlock);
    thread_local std::vector<int64_t> source_row;
    source_row.resize(static_cast<size_t>(W));
    int64_t* source = source_row.data();  // flat index in the plane of each minimiser, -1: none
    if (grad_y) std::fill(grad_y + (b * C + c0) * plane, grad_y + (b * C + c1) * plane, T(0));
    for (int64_t i = 0; i < H; ++i) {
      const int64_t* q_row = index + (b * H + i) * W;
      for (int64_t j = 0; j < W; ++j) {
        // Never trust index: an out-of-range minimiser contributes nothing.
        const int64_t q = q_row[j];
        const NNOffset o = nn_offset(q, n);
        source[j] = q >= 0 && q < nn && nn_inside(i + o.di, j + o.dj, H, W) ? (i + o.di) * W + j + o.dj : -1;
      }
      const T* g_row = grad_dist + (b * H + i) * W;
      for (int64_t c = c0; c < c1; ++c) {
        const T* xr = x + (b * C + c) * plane + i * W;
        const T* yp = y + (b * C + c) * plane;
        T* gx = grad_x ? grad_x + (b * C + c) * plane + i * W : nullptr;
        T* gy = grad_y ? grad_y + (b * C + c) * plane : nullptr;
        for (int64_t j = 0; j < W; ++j) {
          const int64_t src = source[j];
          const A g = src < 0 ? A(0) : A(g_row[j]) * nn_cost_grad<P>(A(xr[j]) - A(yp[src < 0 ? 0 : src]));
          if (gx) gx[j] = static_cast<T>(g);
          if (gy && src >= 0) gy[src] = static_cast<T>(A(gy[src]) - g);
        }
      }
    }
  });
}

template <typename F> void dispatch_p(int p, F&& f) {
  if (p == 1) f(std::integral_constant<int, 1>{});
  else f(std::integral_constant<int, 2>{});
}

}  // namespace

void patch_nn_forward_cpu(std::uintptr_t x, std::uintptr_t y, std::uintptr_t dist, std::uintptr_t index, int64_t B,
                          int64_t C, int64_t H, int64_t W, int64_t n, int p, int dtype, int num_threads) {
  patch_nn_check_args(B, C, H, W, n, p);
  for (auto [ptr, name] : {std::pair{x, "x"}, {y, "y"}, {dist, "dist"}, {index, "index"}}) check_pointer(ptr, name);
  dispatch_cpu(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    dispatch_p(p, [&](auto pc) {
      forward_rows<T, decltype(pc)::value>(reinterpret_cast<const T*>(x), reinterpret_cast<const T*>(y),
                                           reinterpret_cast<T*>(dist), reinterpret_cast<int64_t*>(index), B, C, H,
                                           W, n, num_threads);
    });
  });
}

void patch_nn_backward_cpu(std::uintptr_t grad_dist, std::uintptr_t x, std::uintptr_t y, std::uintptr_t index,
                           std::uintptr_t grad_x, std::uintptr_t grad_y, int64_t B, int64_t C, int64_t H, int64_t W,
                           int64_t n, int p, int dtype, int num_threads) {
  patch_nn_check_args(B, C, H, W, n, p);
  for (auto [ptr, name] : {std::pair{grad_dist, "grad_dist"}, {x, "x"}, {y, "y"}, {index, "index"}})
    check_pointer(ptr, name);
  if (!grad_x && !grad_y) return;
  dispatch_cpu(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    dispatch_p(p, [&](auto pc) {
      backward_blocks<T, decltype(pc)::value>(
          reinterpret_cast<const T*>(grad_dist), reinterpret_cast<const T*>(x), reinterpret_cast<const T*>(y),
          reinterpret_cast<const int64_t*>(index), reinterpret_cast<T*>(grad_x), reinterpret_cast<T*>(grad_y), B, C,
          H, W, n, num_threads);
    });
  });
}

}  // namespace pydeform
