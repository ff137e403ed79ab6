// CPU launcher of homography_sample: OpenMP over output rows (forward) and over
// (x image, channel block) tasks (backward). Each pixel is projected once per task and its
// taps reused over the channels; no sampling grid is materialised.
#include <algorithm>

#include "common/cpu_dispatch.h"
#include "common/cpu_parallel.h"
#include "common/dtype.h"
#include "common/errors.h"
#include "homography/homography.h"


namespace pydeform {

void homography_check_args(int64_t Bx, int64_t Bh, int64_t C, int64_t H, int64_t W, int64_t Ho, int64_t Wo) {
  check_sizes_positive({Bx, Bh, C, H, W, Ho, Wo});
  check_arg(Bx == Bh || Bx == 1 || Bh == 1, "the batch sizes of x and h must be equal or one of them 1");
}

void homography_check_grad_strides(int64_t b, int64_t c, int64_t i, int64_t j) {
  check_arg(b >= 0 && c >= 0 && i >= 0 && j >= 0, "grad_out strides must be non-negative");
}

int64_t homography_grad_h_partials_cpu(int64_t Bx, int64_t Bh, int64_t C, int64_t Ho, int64_t Wo) {
  homography_check_args(Bx, Bh, C, 1, 1, Ho, Wo);
  return std::max(Bx, Bh) * homography_cpu_channel_blocks(Bx, C) * 9;
}

int64_t homography_grad_h_partials_cuda(int64_t Bx, int64_t Bh, int64_t C, int64_t Ho, int64_t Wo) {
  homography_check_args(Bx, Bh, C, 1, 1, Ho, Wo);
  return std::max(Bx, Bh) * homography_cuda_grad_h_blocks(Ho, Wo) * 9;
}

namespace {

// The inputs and sizes the row and task bodies need (x and h contiguous).
template <typename T> struct Problem {
  const T* x;
  const T* h;
  int64_t Bx, Bh, C, H, W, Ho, Wo;
  HomographyGeometry<acc_t<T>> g;
  int64_t batch() const { return Bx > Bh ? Bx : Bh; }
  const T* x_image(int64_t b) const { return x + (Bx == 1 ? 0 : b) * C * H * W; }
  const T* homography(int64_t b) const { return h + (Bh == 1 ? 0 : b) * 9; }
};

// out[b, :, i, :]: each pixel projected once, its taps reused over the channels.
template <typename T>
PYDEFORM_ALWAYS_INLINE void forward_row(const Problem<T>& problem, T* out, int64_t b, int64_t i) {
  using A = acc_t<T>;
  const Problem<T> p = problem;  // a local copy: stores to out cannot alias it, so it stays in registers
  A m[9];
  load_homography(p.homography(b), m);
  const int64_t out_plane = p.Ho * p.Wo;
  T* out_row = out + b * p.C * out_plane + i * p.Wo;
  for (int64_t j = 0; j < p.Wo; ++j) {
    HomographySample<A> s;
    const bool defined = homography_sample_at(m, p.g, i, j, s);
    forward_pixel(p.x_image(b), p.H * p.W, out_row + j, out_plane, p.C, defined, s.taps);
  }
}

// Backward task (x image bx, channel block `block` of `blocks`): adds the gradients of every
// output pixel that reads image bx to grad_x[bx, block's channels] (the task owns those planes:
// plain adds, no races) and, when partials is given, writes partials[(b * blocks + block) * 9 + q]:
// the grad_h terms of batch item b over the block's channels, summed in pixel order (a row in
// the accumulation type, rows in double).
template <typename T>
PYDEFORM_ALWAYS_INLINE void backward_task(const Problem<T>& problem, const StridedGrad<T>& grad, acc_t<T>* grad_x,
                                          acc_t<T>* partials, int64_t bx, int64_t block, int64_t blocks) {
  using A = acc_t<T>;
  // Local copies: stores to grad_x cannot alias them, so they stay in registers.
  const Problem<T> p = problem;
  const StridedGrad<T> grad_out = grad;
  const int64_t in_plane = p.H * p.W, per_image = p.batch() / p.Bx;
  const int64_t c0 = block * p.C / blocks, c1 = (block + 1) * p.C / blocks;
  const T* x_image = p.x + bx * p.C * in_plane;
  A* grad_x_image = grad_x ? grad_x + bx * p.C * in_plane : nullptr;
  for (int64_t k = 0; k < per_image; ++k) {
    const int64_t b = p.Bx == 1 ? k : bx;
    A m[9];
    load_homography(p.homography(b), m);
    double sum[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
    for (int64_t i = 0; i < p.Ho; ++i) {
      A row_sum[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
      for (int64_t j = 0; j < p.Wo; ++j) {
        HomographySample<A> s;
        if (!homography_sample_at(m, p.g, i, j, s)) continue;
        A gsx, gsy;
        backward_pixel(x_image, grad_out.pixel(b, i, j), grad_x_image, in_plane, grad_out.stride_c, c0, c1, s.taps,
                       int64_t(0), in_plane, false, partials != nullptr, gsx, gsy);
        if (partials) add_homography_grad(s, p.g, gsx, gsy, row_sum);
      }
      for (int q = 0; q < 9; ++q) sum[q] += row_sum[q];
    }
    if (partials)
      for (int q = 0; q < 9; ++q) partials[(b * blocks + block) * 9 + q] = A(sum[q]);
  }
}

template <typename T> void forward_row_portable(const Problem<T>& p, T* out, int64_t b, int64_t i) {
  forward_row(p, out, b, i);
}
template <typename T>
void backward_task_portable(const Problem<T>& p, const StridedGrad<T>& grad, acc_t<T>* grad_x, acc_t<T>* partials,
                            int64_t bx, int64_t block, int64_t blocks) {
  backward_task(p, grad, grad_x, partials, bx, block, blocks);
}

#if PYDEFORM_X86_DISPATCH
// The same bodies compiled for AVX2 + FMA (one-instruction floor and fused multiply-adds),
// chosen at run time so one build still runs on any x86-64 CPU. flatten inlines the shared
// math, so that it is compiled for AVX2 too.
#define PYDEFORM_AVX2 __attribute__((target("avx2,fma"), flatten))
template <typename T> PYDEFORM_AVX2 void forward_row_avx2(const Problem<T>& p, T* out, int64_t b, int64_t i) {
  forward_row(p, out, b, i);
}
template <typename T>
PYDEFORM_AVX2 void backward_task_avx2(const Problem<T>& p, const StridedGrad<T>& grad, acc_t<T>* grad_x,
                                      acc_t<T>* partials, int64_t bx, int64_t block, int64_t blocks) {
  backward_task(p, grad, grad_x, partials, bx, block, blocks);
}
inline bool has_avx2() {
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return avx2;
}
#endif

template <typename T> auto pick_forward_row() {
#if PYDEFORM_X86_DISPATCH
  if (has_avx2()) return &forward_row_avx2<T>;
#endif
  return &forward_row_portable<T>;
}
template <typename T> auto pick_backward_task() {
#if PYDEFORM_X86_DISPATCH
  if (has_avx2()) return &backward_task_avx2<T>;
#endif
  return &backward_task_portable<T>;
}

template <typename T> void forward_rows(const Problem<T>& p, T* out, int num_threads) {
  const auto row = pick_forward_row<T>();
  parallel_for(p.batch() * p.Ho, num_threads, [&](int64_t r) { row(p, out, r / p.Ho, r % p.Ho); });
}

// One task per (x image, channel block), a partition fixed by the sizes: grad_x and grad_h are
// bit-identical on every run whatever the thread count, so the CPU backward is always
// deterministic. grad_h adds the tasks' partial sums in (batch item, block) order.
template <typename T>
void backward_tasks(const Problem<T>& p, const StridedGrad<T>& grad, acc_t<T>* grad_x, acc_t<T>* grad_h,
                    acc_t<T>* partials, int num_threads) {
  const int64_t B = p.batch(), blocks = homography_cpu_channel_blocks(p.Bx, p.C);
  const auto task = pick_backward_task<T>();
  parallel_for(p.Bx * blocks, num_threads, [&](int64_t t) {
    task(p, grad, grad_x, grad_h ? partials : nullptr, t / blocks, t % blocks, blocks);
  });
  if (!grad_h) return;
  for (int64_t bh = 0; bh < p.Bh; ++bh) {
    const int64_t b0 = p.Bh == 1 ? 0 : bh, b1 = p.Bh == 1 ? B : bh + 1;
    for (int q = 0; q < 9; ++q) {
      double total = 0;
      for (int64_t b = b0; b < b1; ++b)
        for (int64_t block = 0; block < blocks; ++block) total += partials[(b * blocks + block) * 9 + q];
      grad_h[bh * 9 + q] = static_cast<acc_t<T>>(total);
    }
  }
}

}  // namespace

void homography_forward_cpu(std::uintptr_t x, std::uintptr_t h, std::uintptr_t out, int64_t Bx, int64_t Bh, int64_t C,
                            int64_t H, int64_t W, int64_t Ho, int64_t Wo, bool border, bool normalized, int dtype,
                            int num_threads) {
  homography_check_args(Bx, Bh, C, H, W, Ho, Wo);
  for (auto [p, name] : {std::pair{x, "x"}, {h, "h"}, {out, "out"}}) check_pointer(p, name);
  dispatch_cpu(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const Problem<T> p{reinterpret_cast<const T*>(x), reinterpret_cast<const T*>(h), Bx, Bh, C, H, W, Ho, Wo,
                       homography_geometry<acc_t<T>>(H, W, Ho, Wo, border, normalized)};
    forward_rows(p, reinterpret_cast<T*>(out), num_threads);
  });
}

void homography_backward_cpu(std::uintptr_t grad_out, int64_t grad_stride_b, int64_t grad_stride_c,
                             int64_t grad_stride_i, int64_t grad_stride_j, std::uintptr_t x, std::uintptr_t h,
                             std::uintptr_t grad_x, std::uintptr_t grad_h, std::uintptr_t grad_h_partials,
                             int64_t partials_size, int64_t Bx, int64_t Bh, int64_t C, int64_t H, int64_t W,
                             int64_t Ho, int64_t Wo, bool border, bool normalized, bool deterministic, int dtype,
                             int num_threads) {
  (void)deterministic;  // the CPU backward is always deterministic
  homography_check_args(Bx, Bh, C, H, W, Ho, Wo);
  homography_check_grad_strides(grad_stride_b, grad_stride_c, grad_stride_i, grad_stride_j);
  for (auto [p, name] : {std::pair{grad_out, "grad_out"}, {x, "x"}, {h, "h"}}) check_pointer(p, name);
  if (grad_h) {
    check_pointer(grad_h_partials, "grad_h_partials");
    check_arg(partials_size >= homography_grad_h_partials_cpu(Bx, Bh, C, Ho, Wo), "grad_h_partials is too small");
  }
  if (!grad_x && !grad_h) return;
  dispatch_cpu(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const Problem<T> p{reinterpret_cast<const T*>(x), reinterpret_cast<const T*>(h), Bx, Bh, C, H, W, Ho, Wo,
                       homography_geometry<A>(H, W, Ho, Wo, border, normalized)};
    const StridedGrad<T> grad{reinterpret_cast<const T*>(grad_out), grad_stride_b, grad_stride_c, grad_stride_i,
                              grad_stride_j};
    backward_tasks(p, grad, reinterpret_cast<A*>(grad_x), reinterpret_cast<A*>(grad_h),
                   reinterpret_cast<A*>(grad_h_partials), num_threads);
  });
}

}  // namespace pydeform
