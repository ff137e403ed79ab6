// CPU launcher of homography_sample: OpenMP over output rows (forward) and over
// (x image, channel block) tasks (backward). Each pixel is projected once per task and its
// taps reused over the channels; no sampling grid is materialised.
#include <algorithm>

#include "common/cpu_parallel.h"
#include "common/dtype.h"
#include "common/errors.h"
#include "homography/homography.h"

namespace pydeform {

void homography_check_args(int64_t Bx, int64_t Bh, int64_t C, int64_t H, int64_t W, int64_t Ho, int64_t Wo) {
  check_sizes_positive({Bx, Bh, C, H, W, Ho, Wo});
  check_arg(Bx == Bh || Bx == 1 || Bh == 1, "the batch sizes of x and h must be equal or one of them 1");
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

template <typename T>
void forward_rows(const T* x, const T* h, T* out, int64_t Bx, int64_t Bh, int64_t C, int64_t H, int64_t W, int64_t Ho,
                  int64_t Wo, const HomographyGeometry<acc_t<T>>& g, int num_threads) {
  using A = acc_t<T>;
  const int64_t B = std::max(Bx, Bh), in_plane = H * W, out_plane = Ho * Wo;
  parallel_for(B * Ho, num_threads, [&](int64_t row) {
    const int64_t b = row / Ho, i = row % Ho;
    A m[9];
    load_homography(h + (Bh == 1 ? 0 : b) * 9, m);
    const T* x_image = x + (Bx == 1 ? 0 : b) * C * in_plane;
    T* out_row = out + b * C * out_plane + i * Wo;
    for (int64_t j = 0; j < Wo; ++j) {
      HomographySample<A> s;
      const bool defined = homography_sample_at(m, g, i, j, s);
      forward_pixel(x_image, in_plane, out_row + j, out_plane, C, defined, s.taps);
    }
  });
}

// Task (x image bx, channel block): owns grad_x[bx, c0:c1] (race-free plain adds) and, for each
// batch item b reading image bx, one grad_h partial sum over its pixels and channels, summed in
// double in pixel order. The final grad_h adds the partials in (b, block) order. The partition
// depends on the sizes only, so grad_x and grad_h are bit-identical on every run whatever the
// thread count: the CPU backward is always deterministic.
template <typename T>
void backward_tasks(const T* grad_out, const T* x, const T* h, acc_t<T>* grad_x, acc_t<T>* grad_h,
                    acc_t<T>* partials, int64_t Bx, int64_t Bh, int64_t C, int64_t H, int64_t W, int64_t Ho,
                    int64_t Wo, const HomographyGeometry<acc_t<T>>& g, int num_threads) {
  using A = acc_t<T>;
  const int64_t B = std::max(Bx, Bh), in_plane = H * W, out_plane = Ho * Wo;
  const int64_t blocks = homography_cpu_channel_blocks(Bx, C), per_image = B / Bx;
  parallel_for(Bx * blocks, num_threads, [&](int64_t task) {
    const int64_t bx = task / blocks, block = task % blocks;
    const int64_t c0 = block * C / blocks, c1 = (block + 1) * C / blocks;
    const T* x_image = x + bx * C * in_plane;
    A* grad_x_image = grad_x ? grad_x + bx * C * in_plane : nullptr;
    for (int64_t k = 0; k < per_image; ++k) {
      const int64_t b = Bx == 1 ? k : bx;
      A m[9];
      load_homography(h + (Bh == 1 ? 0 : b) * 9, m);
      double sum[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
      for (int64_t i = 0; i < Ho; ++i) {
        A row_sum[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};  // a row in A, rows in double
        const T* grad_row = grad_out + b * C * out_plane + i * Wo;
        for (int64_t j = 0; j < Wo; ++j) {
          HomographySample<A> s;
          if (!homography_sample_at(m, g, i, j, s)) continue;
          A gsx, gsy;
          backward_pixel(x_image, grad_row + j, grad_x_image, in_plane, out_plane, c0, c1, s.taps, 0, in_plane, false,
                         grad_h != nullptr, gsx, gsy);
          if (grad_h) add_homography_grad(s, g, gsx, gsy, row_sum);
        }
        for (int q = 0; q < 9; ++q) sum[q] += row_sum[q];
      }
      if (grad_h)
        for (int q = 0; q < 9; ++q) partials[(b * blocks + block) * 9 + q] = A(sum[q]);
    }
  });
  if (!grad_h) return;
  for (int64_t bh = 0; bh < Bh; ++bh) {
    const int64_t b0 = Bh == 1 ? 0 : bh, b1 = Bh == 1 ? B : bh + 1;
    for (int q = 0; q < 9; ++q) {
      double total = 0;
      for (int64_t b = b0; b < b1; ++b)
        for (int64_t block = 0; block < blocks; ++block) total += partials[(b * blocks + block) * 9 + q];
      grad_h[bh * 9 + q] = A(total);
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
    const auto g = homography_geometry<acc_t<T>>(H, W, Ho, Wo, border, normalized);
    forward_rows(reinterpret_cast<const T*>(x), reinterpret_cast<const T*>(h), reinterpret_cast<T*>(out), Bx, Bh, C,
                 H, W, Ho, Wo, g, num_threads);
  });
}

void homography_backward_cpu(std::uintptr_t grad_out, std::uintptr_t x, std::uintptr_t h, std::uintptr_t grad_x,
                             std::uintptr_t grad_h, std::uintptr_t grad_h_partials, int64_t partials_size, int64_t Bx,
                             int64_t Bh, int64_t C, int64_t H, int64_t W, int64_t Ho, int64_t Wo, bool border,
                             bool normalized, bool deterministic, int dtype, int num_threads) {
  (void)deterministic;  // the CPU backward is always deterministic
  homography_check_args(Bx, Bh, C, H, W, Ho, Wo);
  for (auto [p, name] : {std::pair{grad_out, "grad_out"}, {x, "x"}, {h, "h"}}) check_pointer(p, name);
  if (grad_h) {
    check_pointer(grad_h_partials, "grad_h_partials");
    check_arg(partials_size >= homography_grad_h_partials_cpu(Bx, Bh, C, Ho, Wo), "grad_h_partials is too small");
  }
  if (!grad_x && !grad_h) return;
  dispatch_cpu(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const auto g = homography_geometry<A>(H, W, Ho, Wo, border, normalized);
    backward_tasks(reinterpret_cast<const T*>(grad_out), reinterpret_cast<const T*>(x), reinterpret_cast<const T*>(h),
                   reinterpret_cast<A*>(grad_x), reinterpret_cast<A*>(grad_h), reinterpret_cast<A*>(grad_h_partials),
                   Bx, Bh, C, H, W, Ho, Wo, g, num_threads);
  });
}

}  // namespace pydeform
