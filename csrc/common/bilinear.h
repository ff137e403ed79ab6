#pragma once
// Bilinear sampling on the pixel grid of DESIGN.md section 3, shared by multi_affine_warp and
// homography_sample on CPU and CUDA. Pixel centres sit at integers; the four taps of
// (sx, sy) are floor/floor+1; "zeros" padding drops taps outside the image, "border" clamps
// the point into [0, W-1] x [0, H-1] first. A side of length 1 samples at 0, as
// F.grid_sample(align_corners=True) does after its normalisation. Equal to grid_sample.
#include <cmath>
#include <cstdint>
#include <limits>

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

// Where the taps are taken, for a finite point (sx, sy): a side of 1 collapses to 0 (derivative
// 0); "border" clamps into the image (derivative 0 where clamped and on the border); "zeros"
// clamps to one pixel beyond it, where every tap is outside already, so that changes neither the value (0) nor the
// gradient (0) and keeps floor() inside int64 for huge coordinates. As two boxes per image size
// and padding, so that clamping a point is branch-free and a CPU loop over points vectorises.
template <typename A> struct BilinearClamp {
  A lo_x, hi_x, lo_y, hi_y;      // the point is clamped into this box
  A flat_lo_x, flat_hi_x, flat_lo_y, flat_hi_y;  // on or outside this one the derivative is 0
};

template <typename A> HOST_DEVICE BilinearClamp<A> bilinear_clamp(int64_t H, int64_t W, bool border) {
  constexpr A inf = std::numeric_limits<A>::infinity();
  BilinearClamp<A> c;
  c.lo_x = W == 1 || border ? A(0) : A(-2);
  c.lo_y = H == 1 || border ? A(0) : A(-2);
  c.hi_x = W == 1 ? A(0) : (border ? A(W - 1) : A(W + 1));
  c.hi_y = H == 1 ? A(0) : (border ? A(H - 1) : A(H + 1));
  // A collapsed side: an empty box (derivative 0 everywhere); "zeros": no bound.
  c.flat_lo_x = W == 1 ? inf : (border ? A(0) : -inf);
  c.flat_lo_y = H == 1 ? inf : (border ? A(0) : -inf);
  c.flat_hi_x = W == 1 ? -inf : (border ? A(W - 1) : inf);
  c.flat_hi_y = H == 1 ? -inf : (border ? A(H - 1) : inf);
  return c;
}

template <typename A>
HOST_DEVICE void bilinear_clamp_point(A& sx, A& sy, const BilinearClamp<A>& c, A& dsx, A& dsy) {
  // On the border itself the derivative is 0 too (<=, >=), as grid_sample's
  // clip_coordinates_set_grad: at x = W-1 the right tap lies outside and reads 0, so the
  // one-sided slope from the taps would be wrong. Bitwise: no branches.
  dsx = (sx <= c.flat_lo_x) | (sx >= c.flat_hi_x) ? A(0) : A(1);
  dsy = (sy <= c.flat_lo_y) | (sy >= c.flat_hi_y) ? A(0) : A(1);
  sx = sx < c.lo_x ? c.lo_x : (sx > c.hi_x ? c.hi_x : sx);
  sy = sy < c.lo_y ? c.lo_y : (sy > c.hi_y ? c.hi_y : sy);
}

template <typename A>
HOST_DEVICE bool bilinear_taps(A sx, A sy, int64_t H, int64_t W, bool border, BilinearTaps<A>& t) {
  if (!finite(sx) || !finite(sy)) return false;
  bilinear_clamp_point(sx, sy, bilinear_clamp<A>(H, W, border), t.dsx, t.dsy);
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
template <typename A>
HOST_DEVICE void bilinear_coord_grad(A fx, A fy, A dsx, A dsy, const A v[4], A& gx, A& gy) {
  gx = ((A(1) - fy) * (v[1] - v[0]) + fy * (v[3] - v[2])) * dsx;
  gy = ((A(1) - fx) * (v[2] - v[0]) + fx * (v[3] - v[1])) * dsy;
}
template <typename A> HOST_DEVICE void bilinear_coord_grad(const BilinearTaps<A>& t, const A v[4], A& gx, A& gy) {
  bilinear_coord_grad(t.fx, t.fy, t.dsx, t.dsy, v, gx, gy);
}

}  // namespace pydeform
