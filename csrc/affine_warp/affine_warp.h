#pragma once
// multi_affine_warp: per-element math shared by the CPU and CUDA launchers, and the launcher
// signatures the bindings expose. Contract: DESIGN.md section 4.
//
//   cand_k[b,c,i,j] = mask[b,k,i,j] * bilinear_zeros(x[b,c], theta[b,k] @ (j, i, 1))
//   out[b,c,i,j]    = max over [x[b,c,i,j] if identity], cand_0, ..., cand_{K-1}; ties to the first
//   argmax[b,c,i,j] = k of the winner, or kIdentityCode for the identity candidate (uint8).
#include <cstdint>

#include "common/bilinear.h"
#include "common/dtype.h"
#include "common/macros.h"

namespace pydeform {

// argmax is uint8: parts take codes 0..K-1 <= 254, so 255 is free for the identity candidate.
constexpr int64_t kMaxParts = 255;
constexpr uint8_t kIdentityCode = 255;

// theta[b,k] (row-major 2x3, output pixel -> input pixel) in the accumulation type.
template <typename A> struct Affine {
  A t[6];
};

template <typename T> HOST_DEVICE Affine<acc_t<T>> load_affine(const T* p) {
  Affine<acc_t<T>> a;
  for (int q = 0; q < 6; ++q) a.t[q] = load(p + q);
  return a;
}

// Taps of output pixel (i, j) under `a`. False when the sample point is not finite (NaN/Inf
// theta, or overflow): the part then samples 0 and passes no gradient to x or theta.
template <typename A>
HOST_DEVICE bool affine_taps(const Affine<A>& a, int64_t i, int64_t j, int64_t H, int64_t W, BilinearTaps<A>& taps) {
  const A sx = a.t[0] * A(j) + a.t[1] * A(i) + a.t[2];
  const A sy = a.t[3] * A(j) + a.t[4] * A(i) + a.t[5];
  return bilinear_taps(sx, sy, H, W, /*border=*/false, taps);
}

// The candidate m * bilinear_zeros(plane, point) of one part for one channel plane. (The CPU
// reads its taps from a packed copy of x instead and feeds them to the same bilinear_value.)
template <typename T, typename A>
HOST_DEVICE A part_candidate(const T* plane, bool valid, const BilinearTaps<A>& taps, A m) {
  if (!valid) return m * A(0);
  A v[4];
  bilinear_gather(plane, taps, v);
  return m * bilinear_value(taps, v);
}

// Should a later candidate v replace the best so far? Strict > keeps the first on ties; a NaN
// wins once and then stays, as in torch.max, so NaN input shows up in the output. Bitwise
// operators, not short-circuits, so that the CPU loops over channels vectorise.
template <typename A> HOST_DEVICE bool warp_improves(A v, A best) { return (v > best) | ((v != v) & (best == best)); }

// The backward of one winning part for one channel: the bilinear value (-> grad_mask) and
// d value / d sample point (-> grad_theta). Taps outside the image read as 0.
template <typename T, typename A>
HOST_DEVICE void part_value_and_coord_grad(const T* plane, const BilinearTaps<A>& taps, A& value, A& gsx, A& gsy) {
  A v[4];
  bilinear_gather(plane, taps, v);
  value = bilinear_value(taps, v);
  bilinear_coord_grad(taps, v, gsx, gsy);
}

// d loss / d theta[b,k] += the chain through sx = t0 j + t1 i + t2, sy = t3 j + t4 i + t5,
// given d loss / d (sx, sy) at output pixel (i, j).
template <typename A> HOST_DEVICE void add_theta_grad(A gsx, A gsy, int64_t i, int64_t j, A g[6]) {
  g[0] += gsx * A(j);
  g[1] += gsx * A(i);
  g[2] += gsx;
  g[3] += gsy * A(j);
  g[4] += gsy * A(i);
  g[5] += gsy;
}

// Launchers. Pointers are raw addresses of contiguous tensors allocated by Python; mask may
// be 0 (all ones). Shapes: x (B, C, H, W); theta (B, K, 2, 3); mask (B, K, Ho, Wo);
// out, grad_out (B, C, Ho, Wo); argmax uint8 (B, C, Ho, Wo).
// Backward outputs are 0 when not wanted: grad_x (B, C, H, W), on CUDA zero-filled by Python
// and float32 for float16/bfloat16; grad_theta (B, K, 2, 3); grad_mask (B, K, Ho, Wo).
// theta_partials (B, K, P, 6) in the accumulation type holds one partial sum of grad_theta per
// piece of a fixed partition of the output pixels, combined in a fixed order: on the CPU
// P = affine_warp_cpu_tiles(Ho, Wo), its tiles of output pixels; on CUDA P = the number of
// pixel tiles (blocks per (b, k)) Python chose.
// packed: the CPU's workspace for x (and grad_x) in channel blocks,
// affine_warp_cpu_packed_numel elements of x's dtype, needed by the forward and the
// backward; unused (0) on CUDA.
int64_t affine_warp_cpu_packed_numel(int64_t B, int64_t C, int64_t H, int64_t W);
int64_t affine_warp_cpu_tiles(int64_t Ho, int64_t Wo);
void affine_warp_forward_cpu(std::uintptr_t x, std::uintptr_t theta, std::uintptr_t mask, std::uintptr_t out,
                             std::uintptr_t argmax, std::uintptr_t packed, int64_t B, int64_t C, int64_t H, int64_t W,
                             int64_t K, int64_t Ho, int64_t Wo, bool identity, int dtype, int num_threads);
void affine_warp_backward_cpu(std::uintptr_t grad_out, std::uintptr_t x, std::uintptr_t theta, std::uintptr_t mask,
                              std::uintptr_t argmax, std::uintptr_t grad_x, std::uintptr_t grad_theta,
                              std::uintptr_t grad_mask, std::uintptr_t theta_partials, std::uintptr_t packed,
                              int64_t B, int64_t C, int64_t H, int64_t W, int64_t K, int64_t Ho, int64_t Wo,
                              bool identity, int64_t P, int dtype, int num_threads);
void affine_warp_forward_cuda(std::uintptr_t x, std::uintptr_t theta, std::uintptr_t mask, std::uintptr_t out,
                              std::uintptr_t argmax, std::uintptr_t packed, int64_t B, int64_t C, int64_t H, int64_t W,
                              int64_t K, int64_t Ho, int64_t Wo, bool identity, int dtype, int device,
                              std::uintptr_t stream);
void affine_warp_backward_cuda(std::uintptr_t grad_out, std::uintptr_t x, std::uintptr_t theta, std::uintptr_t mask,
                               std::uintptr_t argmax, std::uintptr_t grad_x, std::uintptr_t grad_theta,
                               std::uintptr_t grad_mask, std::uintptr_t theta_partials, std::uintptr_t packed,
                               int64_t B, int64_t C, int64_t H, int64_t W, int64_t K, int64_t Ho, int64_t Wo,
                               bool identity, int64_t P, int dtype, int device, std::uintptr_t stream);

// Shared argument re-check of the launchers.
void affine_warp_check_args(int64_t B, int64_t C, int64_t H, int64_t W, int64_t K, int64_t Ho, int64_t Wo,
                            bool identity);

}  // namespace pydeform
