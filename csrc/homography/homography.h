#pragma once
// homography_sample: per-pixel math shared by the CPU and CUDA launchers, and the launcher
// signatures the bindings expose. Contract: DESIGN.md section 4.
//
//   (px, py)      = output pixel (j, i) in h's coordinates (pixels, or normalised over Ho x Wo)
//   (u, v, w)     = h[b] @ (px, py, 1)
//   out[b,c,i,j]  = bilinear(x[b,c], input pixel of (u / w, v / w))   (normalised over H x W)
//                   or 0 where |w| < 1e-8 or the point is not finite (and no gradient flows).
//
// Either batch may be 1 and broadcasts: b reads x image (Bx == 1 ? 0 : b) and homography
// (Bh == 1 ? 0 : b), and the gradients of a broadcast input sum over the batch.
#include <cstdint>
#include <limits>

#include "common/bilinear.h"
#include "common/dtype.h"
#include "common/macros.h"

namespace pydeform {

// |w| below this leaves the sample point undefined.
constexpr double kHomographyMinW = 1e-8;
// Sample points are clamped to +-this (in h's coordinates) before they are scaled to input
// pixels, so that a huge but finite point cannot overflow to inf there. That far out every tap
// is outside the image (zeros) or the point is clamped to the border anyway (border), so the
// clamp changes neither the value nor any gradient.
constexpr double kHomographyFar = 1e18;

// Per-call constants: the two affine coordinate changes around h.
template <typename A> struct HomographyGeometry {
  int64_t H, W;  // input size
  bool border;
  A out_scale_x, out_offset_x, out_scale_y, out_offset_y;  // output pixel -> point fed to h
  A in_scale_x, in_offset_x, in_scale_y, in_offset_y;      // h's sample point -> input pixel
};

template <typename A>
HOST_DEVICE HomographyGeometry<A> homography_geometry(int64_t H, int64_t W, int64_t Ho, int64_t Wo, bool border,
                                                      bool normalized) {
  HomographyGeometry<A> g;
  g.H = H;
  g.W = W;
  g.border = border;
  // normalised: x -> 2x / (n - 1) - 1 on the output grid (a side of 1 maps to 0) and its inverse,
  // x -> (x + 1) (n - 1) / 2, for the sample point (a side of 1 maps everything to pixel 0).
  g.out_scale_x = normalized ? (Wo > 1 ? A(2) / A(Wo - 1) : A(0)) : A(1);
  g.out_scale_y = normalized ? (Ho > 1 ? A(2) / A(Ho - 1) : A(0)) : A(1);
  g.out_offset_x = normalized && Wo > 1 ? A(-1) : A(0);
  g.out_offset_y = normalized && Ho > 1 ? A(-1) : A(0);
  g.in_scale_x = normalized ? A(W - 1) / A(2) : A(1);
  g.in_scale_y = normalized ? A(H - 1) / A(2) : A(1);
  g.in_offset_x = normalized ? A(W - 1) / A(2) : A(0);
  g.in_offset_y = normalized ? A(H - 1) / A(2) : A(0);
  return g;
}

// Everything the forward and the backward need about one output pixel.
template <typename A> struct HomographySample {
  BilinearTaps<A> taps;
  A px, py;  // the output point in h's coordinates
  A su, sv;  // the sample point u / w, v / w in h's coordinates (clamped to +-kHomographyFar)
  A inv_w;   // 1 / w
};

template <typename T, typename A> HOST_DEVICE void load_homography(const T* h, A m[9]) {
  for (int k = 0; k < 9; ++k) m[k] = A(load(h + k));
}

template <typename A> HOST_DEVICE A clamp_far(A v) {
  return v < A(-kHomographyFar) ? A(-kHomographyFar) : (v > A(kHomographyFar) ? A(kHomographyFar) : v);
}

// Projects the point (px, py) (in h's coordinates) through m: the sample point (su, sv) =
// (u / w, v / w), clamped to +-kHomographyFar, and inv_w = 1 / w. Returns false where the sample
// point is undefined (|w| < 1e-8 or not finite); su, sv and inv_w are then 0, so that arithmetic
// on them stays finite. Branch-free, so that a CPU loop over a row of points vectorises.
template <typename A> HOST_DEVICE bool homography_project(const A m[9], A px, A py, A& su, A& sv, A& inv_w) {
  const A u = m[0] * px + m[1] * py + m[2];
  const A v = m[3] * px + m[4] * py + m[5];
  const A w = m[6] * px + m[7] * py + m[8];
  const A r = A(1) / w;
  const A su_raw = u * r, sv_raw = v * r;
  // Written so that a NaN fails: !(|w| >= min) rather than |w| < min. Bitwise &: no
  // short-circuit branches. u and v need no test of their own: with w finite and |w| >= min, r is
  // finite (and not 0, or 0 only where denormals flush, which makes inf * r NaN), so an infinite
  // or NaN u or v leaves su_raw or sv_raw infinite or NaN.
  const A abs_w = w < A(0) ? -w : w;
  const bool defined = (abs_w >= A(kHomographyMinW)) & (abs_w < std::numeric_limits<A>::infinity()) &
                       finite(su_raw) & finite(sv_raw);
  su = defined ? clamp_far(su_raw) : A(0);
  sv = defined ? clamp_far(sv_raw) : A(0);
  inv_w = defined ? r : A(0);
  return defined;
}

// Projects output pixel (j, i) through m and fills `s`. Returns false where the sample point
// is undefined (|w| < 1e-8 or not finite): the output is 0 there and no gradient flows.
template <typename A>
HOST_DEVICE bool homography_sample_at(const A m[9], const HomographyGeometry<A>& g, int64_t i, int64_t j,
                                      HomographySample<A>& s) {
  s.px = A(j) * g.out_scale_x + g.out_offset_x;
  s.py = A(i) * g.out_scale_y + g.out_offset_y;
  if (!homography_project(m, s.px, s.py, s.su, s.sv, s.inv_w)) return false;
  return bilinear_taps(s.su * g.in_scale_x + g.in_offset_x, s.sv * g.in_scale_y + g.in_offset_y, g.H, g.W, g.border,
                       s.taps);
}

// out[c] for every channel of one output pixel; 0 where the sample is undefined.
template <typename T, typename A>
HOST_DEVICE void forward_pixel(const T* x_image, int64_t in_plane, T* out_pixel, int64_t out_plane, int64_t C,
                               bool defined, const BilinearTaps<A>& t) {
  for (int64_t c = 0; c < C; ++c) {
    A value = A(0);
    if (defined) {
      A v[4];
      bilinear_gather(x_image + c * in_plane, t, v);
      value = bilinear_value(t, v);
    }
    store(out_pixel + c * out_plane, value);
  }
}

// The output gradient, read through its strides (elements; 0 for an expanded dimension).
template <typename T> struct StridedGrad {
  const T* data;
  int64_t stride_b, stride_c, stride_i, stride_j;
  HOST_DEVICE const T* pixel(int64_t b, int64_t i, int64_t j) const {
    return data + b * stride_b + i * stride_i + j * stride_j;
  }
};

template <typename A> HOST_DEVICE void add_to(A* p, A v, bool atomic) {
#if defined(__CUDA_ARCH__) || defined(PYDEFORM_CUDA_EMULATION)
  if (atomic) {
    atomicAdd(p, v);
    return;
  }
#else
  (void)atomic;
#endif
  *p += v;
}

// Backward of one (defined) output pixel over channels [c0, c1) of its x image; grad_out_pixel
// points at channel 0 of the pixel's output gradient, channels grad_channel_stride apart.
// grad_x_image (may be null): each in-image tap whose plane offset lies in [own_lo, own_hi)
// receives its share g * weight (plainly, or atomically on CUDA); the other taps belong to
// another owner. With coord_grad, gsx / gsy return d loss / d (sx, sy) summed over the channels.
template <typename T, typename A>
HOST_DEVICE void backward_pixel(const T* x_image, const T* grad_out_pixel, A* grad_x_image, int64_t in_plane,
                                int64_t grad_channel_stride, int64_t c0, int64_t c1, const BilinearTaps<A>& t,
                                int64_t own_lo, int64_t own_hi, bool atomic, bool coord_grad, A& gsx, A& gsy) {
  gsx = gsy = A(0);
  bool owned[4];
  bool any_owned = false;
  for (int k = 0; k < 4; ++k) {
    owned[k] = grad_x_image && t.inside[k] && t.offset[k] >= own_lo && t.offset[k] < own_hi;
    any_owned = any_owned || owned[k];
  }
  if (!any_owned && !coord_grad) return;
  for (int64_t c = c0; c < c1; ++c) {
    const A g = load(grad_out_pixel + c * grad_channel_stride);
    if (any_owned) {
      A* plane = grad_x_image + c * in_plane;
      for (int k = 0; k < 4; ++k)
        if (owned[k]) add_to(plane + t.offset[k], g * t.weight[k], atomic);
    }
    if (coord_grad) {
      A v[4], gx, gy;
      bilinear_gather(x_image + c * in_plane, t, v);
      bilinear_coord_grad(t, v, gx, gy);
      gsx += g * gx;
      gsy += g * gy;
    }
  }
}

// d loss / d (u, v, w) of one defined pixel, given d loss / d (sx, sy):
// sx = in_scale * u / w + in_offset: d sx / du = in_scale / w, d sx / dw = -in_scale (u / w) / w.
// add_homography_grad adds the resulting d loss / d h (row-major) to grad[9]: (u, v, w) are
// linear in h's rows with coefficients (px, py, 1).
template <typename A>
HOST_DEVICE void homography_uvw_grad(const HomographyGeometry<A>& g, A su, A sv, A inv_w, A gsx, A gsy, A& gu, A& gv,
                                     A& gw) {
  gu = gsx * g.in_scale_x * inv_w;
  gv = gsy * g.in_scale_y * inv_w;
  gw = -(gu * su + gv * sv);
}
template <typename A, typename P>
HOST_DEVICE void add_homography_grad(const HomographySample<A>& s, const HomographyGeometry<A>& g, A gsx, A gsy,
                                     P grad[9]) {
  A gu, gv, gw;
  homography_uvw_grad(g, s.su, s.sv, s.inv_w, gsx, gsy, gu, gv, gw);
  const A point[3] = {s.px, s.py, A(1)};
  for (int k = 0; k < 3; ++k) {
    grad[k] += P(gu * point[k]);
    grad[3 + k] += P(gv * point[k]);
    grad[6 + k] += P(gw * point[k]);
  }
}

// Launchers. Pointers are raw addresses of tensors allocated by Python, contiguous except
// grad_out, which is read through its strides (in elements; an expanded gradient, as from
// out.sum(), is not copied). Shapes: x (Bx, C, H, W); h (Bh, 3, 3); out, grad_out
// (B, C, Ho, Wo) with B = max(Bx, Bh).
// grad_x (Bx, C, H, W) and grad_h (Bh, 3, 3) are in the accumulation type (float, double for
// double), grad_x zero-filled by the caller for CUDA (the CPU launcher fills it itself); either may be 0 (= not wanted). grad_h_partials is
// a workspace of homography_grad_h_partials_{cpu,cuda}(...) accumulation-type elements.
void homography_forward_cpu(std::uintptr_t x, std::uintptr_t h, std::uintptr_t out, int64_t Bx, int64_t Bh, int64_t C,
                            int64_t H, int64_t W, int64_t Ho, int64_t Wo, bool border, bool normalized, int dtype,
                            int num_threads);
void homography_backward_cpu(std::uintptr_t grad_out, int64_t grad_stride_b, int64_t grad_stride_c,
                             int64_t grad_stride_i, int64_t grad_stride_j, std::uintptr_t x, std::uintptr_t h,
                             std::uintptr_t grad_x, std::uintptr_t grad_h, std::uintptr_t grad_h_partials,
                             int64_t partials_size, int64_t Bx, int64_t Bh, int64_t C, int64_t H, int64_t W,
                             int64_t Ho, int64_t Wo, bool border, bool normalized, bool deterministic, int dtype,
                             int num_threads);
void homography_forward_cuda(std::uintptr_t x, std::uintptr_t h, std::uintptr_t out, int64_t Bx, int64_t Bh,
                             int64_t C, int64_t H, int64_t W, int64_t Ho, int64_t Wo, bool border, bool normalized,
                             int dtype, int device, std::uintptr_t stream);
void homography_backward_cuda(std::uintptr_t grad_out, int64_t grad_stride_b, int64_t grad_stride_c,
                              int64_t grad_stride_i, int64_t grad_stride_j, std::uintptr_t x, std::uintptr_t h,
                              std::uintptr_t grad_x, std::uintptr_t grad_h, std::uintptr_t grad_h_partials,
                              int64_t partials_size, int64_t Bx, int64_t Bh, int64_t C, int64_t H, int64_t W,
                              int64_t Ho, int64_t Wo, bool border, bool normalized, bool deterministic, int dtype,
                              int device, std::uintptr_t stream);

// Work partitions, fixed by the sizes alone (never by the thread count or the GPU), so that
// the partial sums of grad_h, and with them grad_h's bits, are the same on every run.
//
// CPU backward: one task per (x image, block of channels); a task owns its grad_x planes and
// keeps one partial sum of grad_h per batch item it reads. Channels are split into blocks only
// when there are too few x images to keep the threads busy.
inline int64_t homography_cpu_channel_blocks(int64_t Bx, int64_t C) {
  constexpr int64_t kMinTasks = 8;
  const int64_t wanted = (kMinTasks + Bx - 1) / Bx;
  return wanted < C ? wanted : C;
}
// CUDA backward: a (blocks x B) grid of kHomographyCudaThreads threads; each block reduces its
// pixels' grad_h terms to one partial sum per batch item.
constexpr int kHomographyCudaThreads = 256;
inline int64_t homography_cuda_grad_h_blocks(int64_t Ho, int64_t Wo) {
  constexpr int64_t kMaxBlocks = 256;
  const int64_t blocks = (Ho * Wo + kHomographyCudaThreads - 1) / kHomographyCudaThreads;
  return blocks < kMaxBlocks ? blocks : kMaxBlocks;
}

// Workspace sizes (elements) of the grad_h partial sums: 9 per (batch item, task or block).
int64_t homography_grad_h_partials_cpu(int64_t Bx, int64_t Bh, int64_t C, int64_t Ho, int64_t Wo);
int64_t homography_grad_h_partials_cuda(int64_t Bx, int64_t Bh, int64_t C, int64_t Ho, int64_t Wo);

// Shared argument re-checks of the launchers.
void homography_check_args(int64_t Bx, int64_t Bh, int64_t C, int64_t H, int64_t W, int64_t Ho, int64_t Wo);
void homography_check_grad_strides(int64_t b, int64_t c, int64_t i, int64_t j);

}  // namespace pydeform
