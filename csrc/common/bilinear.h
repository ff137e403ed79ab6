#pragma once
// Bilinear sampling on the pixel grid of DESIGN.md section 3, shared by multi_affine_warp and
// homography_sample on CPU and CUDA. Pixel centres sit at integers; the four taps of
// (sx, sy) are floor/floor+1; "zeros" padding drops taps outside the image, "border" clamps
// the point into [0, W-1] x [0, H-1] first. A side of length 1 samples at 0, as
// F.grid_sample(align_corners=True) does after its normalisation. Equal to grid_sample.
#include <cmath>
#include <cstdint>

#include "common/dtype.h"
#include "common/macros.h"

namespace pydeform {

template <typename A> struct BilinearTaps {
  int64_t offset[4];  // y * W + x of the taps (x0,y0), (x0+1,y0), (x0,y0+1), (x0+1,y0+1)
  A weight[4];        // interpolation weight; 0 for a tap outside the image
  bool inside[4];
  A fx, fy;           // fractional position inside the cell, for coordinate gradients
  A dsx, dsy;         // d(used coordinate) / d(given coordinate): 0 where clamped or collapsed
  int64_t x0, y0;     // pixel of the top-left tap (x0, y0), whether inside or not
};

// Fills `t` for sample point (sx, sy). Returns false when the point is not finite: the
// sample is then 0 and no gradient flows.
template <typename A> HOST_DEVICE bool finite(A v) {
#if defined(__CUDA_ARCH__)
  return ::isfinite(v);
#else
  return std::isfinite(v);
#endif
}

template <typename A> HOST_DEVICE A floor_of(A v) {
#if defined(__CUDA_ARCH__)
  return ::floor(v);
#else
  return std::floor(v);
#endif
}

template <typename A>
HOST_DEVICE bool bilinear_taps(A sx, A sy, int64_t H, int64_t W, bool border, BilinearTaps<A>& t) {
  if (!finite(sx) || !finite(sy)) return false;
  t.dsx = A(1);
  t.dsy = A(1);
  if (W == 1) sx = A(0), t.dsx = A(0);
  if (H == 1) sy = A(0), t.dsy = A(0);
  if (border) {
    if (sx < A(0)) sx = A(0), t.dsx = A(0);
    if (sx > A(W - 1)) sx = A(W - 1), t.dsx = A(0);
    if (sy < A(0)) sy = A(0), t.dsy = A(0);
    if (sy > A(H - 1)) sy = A(H - 1), t.dsy = A(0);
  } else {
    // Beyond one pixel outside, every tap is outside: clamping there changes neither the
    // value (0) nor the gradient (0), and keeps floor() inside int64 for huge coordinates.
    sx = sx < A(-2) ? A(-2) : (sx > A(W + 1) ? A(W + 1) : sx);
    sy = sy < A(-2) ? A(-2) : (sy > A(H + 1) ? A(H + 1) : sy);
  }
  const A x0f = floor_of(sx), y0f = floor_of(sy);
  const int64_t x0 = static_cast<int64_t>(x0f), y0 = static_cast<int64_t>(y0f);
  t.x0 = x0;
  t.y0 = y0;
  t.fx = sx - x0f;
  t.fy = sy - y0f;
  const A wx[2] = {A(1) - t.fx, t.fx}, wy[2] = {A(1) - t.fy, t.fy};
  for (int k = 0; k < 4; ++k) {
    const int64_t x = x0 + (k & 1), y = y0 + (k >> 1);
    t.inside[k] = x >= 0 && x < W && y >= 0 && y < H;
    t.offset[k] = t.inside[k] ? y * W + x : 0;
    t.weight[k] = t.inside[k] ? wx[k & 1] * wy[k >> 1] : A(0);
  }
  return true;
}

// The four tap values of one channel plane, 0 for taps outside the image.
template <typename T, typename A> HOST_DEVICE void bilinear_gather(const T* plane, const BilinearTaps<A>& t, A v[4]) {
  for (int k = 0; k < 4; ++k) v[k] = t.inside[k] ? A(load(plane + t.offset[k])) : A(0);
}

// The four tap values (0 outside) -> the interpolated value.
template <typename A> HOST_DEVICE A bilinear_value(const BilinearTaps<A>& t, const A v[4]) {
  return t.weight[0] * v[0] + t.weight[1] * v[1] + t.weight[2] * v[2] + t.weight[3] * v[3];
}

// d value / d (sx, sy) given the four tap values (0 for taps outside).
template <typename A> HOST_DEVICE void bilinear_coord_grad(const BilinearTaps<A>& t, const A v[4], A& gx, A& gy) {
  gx = ((A(1) - t.fy) * (v[1] - v[0]) + t.fy * (v[3] - v[2])) * t.dsx;
  gy = ((A(1) - t.fx) * (v[2] - v[0]) + t.fx * (v[3] - v[1])) * t.dsy;
}

}  // namespace pydeform
