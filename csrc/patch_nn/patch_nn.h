#pragma once
// patch_nn_distance: per-element math shared by the CPU and CUDA launchers, and the
// launcher signatures the bindings expose. Contract: DESIGN.md section 4.
//
//   dist[b,i,j]  = min over in-image offsets (di, dj) in [-r, r]^2 of
//                  sum_c cost(x[b,c,i,j] - y[b,c,i+di,j+dj]),  cost = |d| (P=1) or d^2 (P=2)
//   index[b,i,j] = (di + r) * n + (dj + r) of the minimiser, ties to the smallest index.
#include <cstdint>

#include "common/macros.h"

namespace pydeform {

template <int P, typename A> HOST_DEVICE A nn_cost(A d) { return P == 1 ? (d < A(0) ? -d : d) : d * d; }

// d cost / d x for diff = x - y; sign(0) = 0 as in torch.abs's gradient.
template <int P, typename A> HOST_DEVICE A nn_cost_grad(A d) {
  return P == 1 ? A((d > A(0)) - (d < A(0))) : A(2) * d;
}

// Should candidate cost d replace the best so far? Candidates arrive in increasing index
// order, so strict < keeps the smallest index on ties. NaN wins once and then stays, as in
// torch.min, so a NaN input shows up in dist instead of being silently skipped.
template <typename A> HOST_DEVICE bool nn_improves(A d, A best, bool have_best) {
  return !have_best || d < best || (d != d && best == best);
}

struct NNOffset {
  int64_t di, dj;
};
HOST_DEVICE NNOffset nn_offset(int64_t q, int64_t n) { return {q / n - n / 2, q % n - n / 2}; }

HOST_DEVICE bool nn_inside(int64_t i, int64_t j, int64_t H, int64_t W) { return i >= 0 && i < H && j >= 0 && j < W; }

// Launchers. Pointers are raw addresses of contiguous tensors allocated by Python.
// Shapes: x, y (B, C, H, W); dist, index, grad_dist (B, H, W); grads like x.
void patch_nn_forward_cpu(std::uintptr_t x, std::uintptr_t y, std::uintptr_t dist, std::uintptr_t index, int64_t B,
                          int64_t C, int64_t H, int64_t W, int64_t n, int p, int dtype, int num_threads);
void patch_nn_backward_cpu(std::uintptr_t grad_dist, std::uintptr_t x, std::uintptr_t y, std::uintptr_t index,
                           std::uintptr_t grad_x, std::uintptr_t grad_y, int64_t B, int64_t C, int64_t H, int64_t W,
                           int64_t n, int p, int dtype, int num_threads);
void patch_nn_forward_cuda(std::uintptr_t x, std::uintptr_t y, std::uintptr_t dist, std::uintptr_t index, int64_t B,
                           int64_t C, int64_t H, int64_t W, int64_t n, int p, int dtype, int device,
                           std::uintptr_t stream);
void patch_nn_backward_cuda(std::uintptr_t grad_dist, std::uintptr_t x, std::uintptr_t y, std::uintptr_t index,
                            std::uintptr_t grad_x, std::uintptr_t grad_y, int64_t B, int64_t C, int64_t H, int64_t W,
                            int64_t n, int p, int dtype, int device, std::uintptr_t stream);

// Shared argument re-check of both launchers (grad_x / grad_y may be 0 = not wanted).
void patch_nn_check_args(int64_t B, int64_t C, int64_t H, int64_t W, int64_t n, int p);

}  // namespace pydeform
