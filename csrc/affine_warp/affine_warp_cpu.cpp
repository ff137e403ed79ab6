// CPU launcher of multi_affine_warp. The forward runs over (b, output row): each part's
// sample point and taps are computed once per pixel and reused by all C channels, and the
// channel loop is outermost so each channel plane is read while it is in cache. The backward
// runs the gradients of theta and mask over (b, output row) and the scatter into x over
// (b, block of channels): each task owns what it writes, so no atomics are needed and the
// result does not depend on the number of threads.
#include <algorithm>
#include <utility>
#include <vector>

#include "affine_warp/affine_warp.h"
#include "common/cpu_parallel.h"
#include "common/dtype.h"
#include "common/errors.h"

namespace pydeform {

void affine_warp_check_args(int64_t B, int64_t C, int64_t H, int64_t W, int64_t K, int64_t Ho, int64_t Wo,
                            bool identity) {
  check_sizes_positive({B, C, H, W, K, Ho, Wo});
  check_arg(K <= kMaxParts, "at most 255 parts (K) fit the uint8 argmax");
  check_arg(!identity || (Ho == H && Wo == W), "include_identity needs the output size to equal the input size");
}

namespace {

struct Dims {
  int64_t B, C, H, W, K, Ho, Wo;
};

// One part's sampling of one output pixel, computed once and shared by every channel.
template <typename A> struct PartSample {
  BilinearTaps<A> taps;
  A m;           // mask value
  uint8_t k;     // the part, as stored in argmax
  bool valid;    // finite sample point; otherwise the part samples 0
};

template <typename T> acc_t<T> mask_at(const T* mask, int64_t b, int64_t k, int64_t i, int64_t j, const Dims& d) {
  return mask ? load(mask + ((b * d.K + k) * d.Ho + i) * d.Wo + j) : acc_t<T>(1);
}

template <typename T>
void sample_part(const T* theta, int64_t b, int64_t k, int64_t i, int64_t j, const Dims& d, acc_t<T> m,
                 PartSample<acc_t<T>>& s) {
  s.m = m;
  s.k = static_cast<uint8_t>(k);
  s.valid = affine_taps(load_affine(theta + (b * d.K + k) * 6), i, j, d.H, d.W, s.taps);
}

// The samples of one output row that the backward needs, computed on first use: the
// winners differ per channel, but a (part, pixel) pair is sampled at most once per row.
template <typename T> class LazyRowSamples {
 public:
  using A = acc_t<T>;
  void start_row(int64_t b, int64_t i, const Dims& d) {
    b_ = b, i_ = i, d_ = &d;
    samples_.resize(static_cast<size_t>(d.K * d.Wo));
    ready_.assign(static_cast<size_t>(d.K * d.Wo), 0);
  }
  bool ready(int64_t k, int64_t j) const { return ready_[k * d_->Wo + j]; }
  PartSample<A>& get(const T* theta, const T* mask, int64_t k, int64_t j) {
    PartSample<A>& s = samples_[k * d_->Wo + j];
    if (!ready_[k * d_->Wo + j]) {
      sample_part(theta, b_, k, i_, j, *d_, mask_at(mask, b_, k, i_, j, *d_), s);
      ready_[k * d_->Wo + j] = 1;
    }
    return s;
  }

 private:
  std::vector<PartSample<A>> samples_;  // [k * Wo + j]
  std::vector<uint8_t> ready_;
  int64_t b_ = 0, i_ = 0;
  const Dims* d_ = nullptr;
};

// Per batch item: is every value of x finite? Then a part whose mask is 0 at a pixel yields
// exactly 0 there (0 * finite), and of those parts only the first can win a tie, so the
// forward samples none of the others. A NaN or Inf in x makes 0 * it NaN: all are sampled.
template <typename T> std::vector<uint8_t> finite_batch_items(const T* x, const Dims& d, int num_threads) {
  const int64_t plane = d.H * d.W;
  std::vector<uint8_t> finite_plane(static_cast<size_t>(d.B * d.C), 1);
  parallel_for(d.B * d.C, num_threads, [&](int64_t bc) {
    const T* p = x + bc * plane;
    bool ok = true;
    for (int64_t q = 0; q < plane; ++q) ok &= finite(acc_t<T>(p[q]));
    finite_plane[bc] = ok;
  });
  std::vector<uint8_t> finite_item(static_cast<size_t>(d.B), 1);
  for (int64_t bc = 0; bc < d.B * d.C; ++bc) finite_item[bc / d.C] &= finite_plane[bc];
  return finite_item;
}

template <typename T>
void forward_rows(const T* x, const T* theta, const T* mask, T* out, uint8_t* argmax, const Dims& d, bool identity,
                  int num_threads) {
  using A = acc_t<T>;
  const std::vector<uint8_t> skip_zero_masks = finite_batch_items(x, d, num_threads);
  parallel_for(d.B * d.Ho, num_threads, [&](int64_t row) {
    const int64_t b = row / d.Ho, i = row % d.Ho;
    // The candidates of pixel j, in order, are samples[first[j] .. first[j + 1]).
    thread_local std::vector<PartSample<A>> samples;
    thread_local std::vector<int64_t> first;
    samples.clear();
    first.resize(static_cast<size_t>(d.Wo + 1));
    for (int64_t j = 0; j < d.Wo; ++j) {
      first[j] = static_cast<int64_t>(samples.size());
      bool zero_part_seen = false;
      for (int64_t k = 0; k < d.K; ++k) {
        const A m = mask_at(mask, b, k, i, j, d);
        PartSample<A> s{};
        if (skip_zero_masks[b] && m == A(0)) {
          if (zero_part_seen) continue;  // equals an earlier 0 candidate: cannot win
          zero_part_seen = true;
          s.m = A(0), s.k = static_cast<uint8_t>(k), s.valid = false;  // exactly 0, unsampled
        } else {
          sample_part(theta, b, k, i, j, d, m, s);
        }
        samples.push_back(s);
      }
    }
    first[d.Wo] = static_cast<int64_t>(samples.size());
    for (int64_t c = 0; c < d.C; ++c) {
      const T* plane = x + (b * d.C + c) * d.H * d.W;
      const int64_t out_row = ((b * d.C + c) * d.Ho + i) * d.Wo;
      for (int64_t j = 0; j < d.Wo; ++j) {
        int64_t s = first[j];
        A best;
        uint8_t code;
        if (identity) {
          best = load(plane + i * d.W + j), code = kIdentityCode;
        } else {
          best = part_candidate(plane, samples[s].valid, samples[s].taps, samples[s].m), code = samples[s].k, ++s;
        }
        for (; s < first[j + 1]; ++s) {
          const A v = part_candidate(plane, samples[s].valid, samples[s].taps, samples[s].m);
          if (warp_improves(v, best)) best = v, code = samples[s].k;
        }
        out[out_row + j] = static_cast<T>(best);
        argmax[out_row + j] = code;
      }
    }
  });
}

// grad_theta and grad_mask, one task per (b, output row). Per (part, pixel) it sums over
// the channels that part won: g * value (-> grad_mask) and g * d value / d point (-> theta).
// Each row's theta partial goes to theta_partials[b, k, i]; they are then summed over rows in
// row order, so the result is the same for any number of threads.
template <typename T>
void theta_mask_grad_rows(const T* grad_out, const T* x, const T* theta, const T* mask, const uint8_t* argmax,
                          T* grad_theta, T* grad_mask, acc_t<T>* theta_partials, const Dims& d, int num_threads) {
  using A = acc_t<T>;
  const int64_t KW = d.K * d.Wo;
  parallel_for(d.B * d.Ho, num_threads, [&](int64_t row) {
    const int64_t b = row / d.Ho, i = row % d.Ho;
    thread_local LazyRowSamples<T> samples;
    thread_local std::vector<A> sums;  // [3][K][Wo]: g * value, g * dv/dsx, g * dv/dsy
    samples.start_row(b, i, d);
    sums.assign(static_cast<size_t>(3 * KW), A(0));
    for (int64_t c = 0; c < d.C; ++c) {
      const T* plane = x + (b * d.C + c) * d.H * d.W;
      const int64_t out_row = ((b * d.C + c) * d.Ho + i) * d.Wo;
      for (int64_t j = 0; j < d.Wo; ++j) {
        const int64_t k = argmax[out_row + j];
        if (k >= d.K) continue;  // the identity won (or a code that is no part: never trusted)
        const PartSample<A>& s = samples.get(theta, mask, k, j);
        if (!s.valid) continue;  // the part sampled 0: no gradient
        const A g = load(grad_out + out_row + j);
        A value, gsx, gsy;
        part_value_and_coord_grad(plane, s.taps, value, gsx, gsy);
        sums[k * d.Wo + j] += g * value;
        sums[KW + k * d.Wo + j] += g * gsx;
        sums[2 * KW + k * d.Wo + j] += g * gsy;
      }
    }
    for (int64_t k = 0; k < d.K; ++k) {
      if (grad_mask) {
        T* gm = grad_mask + ((b * d.K + k) * d.Ho + i) * d.Wo;
        for (int64_t j = 0; j < d.Wo; ++j) gm[j] = static_cast<T>(sums[k * d.Wo + j]);
      }
      if (grad_theta) {
        A partial[6] = {A(0), A(0), A(0), A(0), A(0), A(0)};
        for (int64_t j = 0; j < d.Wo; ++j) {
          if (!samples.ready(k, j)) continue;  // part k won no channel here
          const A m = samples.get(theta, mask, k, j).m;
          add_theta_grad(m * sums[KW + k * d.Wo + j], m * sums[2 * KW + k * d.Wo + j], i, j, partial);
        }
        for (int q = 0; q < 6; ++q) theta_partials[((b * d.K + k) * d.Ho + i) * 6 + q] = partial[q];
      }
    }
  });
  if (!grad_theta) return;
  parallel_for(d.B * d.K * 6, num_threads, [&](int64_t bkq) {
    const int64_t bk = bkq / 6, q = bkq % 6;
    A total = A(0);
    for (int64_t p = 0; p < d.Ho; ++p) total += theta_partials[(bk * d.Ho + p) * 6 + q];
    grad_theta[bkq] = static_cast<T>(total);
  });
}

// grad_x, one task per (b, block of channels): the winner's taps are scattered into the
// task's own planes (zero-filled by Python), in a fixed order.
template <typename T>
void x_grad_blocks(const T* grad_out, const T* theta, const T* mask, const uint8_t* argmax, T* grad_x, const Dims& d,
                   bool identity, int num_threads) {
  using A = acc_t<T>;
  constexpr int64_t kBlock = 8;  // channels sharing one row's samples
  const int64_t blocks = (d.C + kBlock - 1) / kBlock;
  parallel_for(d.B * blocks, num_threads, [&](int64_t task) {
    const int64_t b = task / blocks, c0 = (task % blocks) * kBlock, c1 = std::min(d.C, c0 + kBlock);
    thread_local LazyRowSamples<T> samples;
    for (int64_t i = 0; i < d.Ho; ++i) {
      samples.start_row(b, i, d);
      for (int64_t c = c0; c < c1; ++c) {
        T* gx = grad_x + (b * d.C + c) * d.H * d.W;
        const int64_t out_row = ((b * d.C + c) * d.Ho + i) * d.Wo;
        for (int64_t j = 0; j < d.Wo; ++j) {
          const int64_t k = argmax[out_row + j];
          const A g = load(grad_out + out_row + j);
          if (k == kIdentityCode) {
            if (identity) gx[i * d.W + j] = static_cast<T>(A(gx[i * d.W + j]) + g);
            continue;
          }
          if (k >= d.K) continue;  // never trust a code that is no part
          const PartSample<A>& s = samples.get(theta, mask, k, j);
          if (!s.valid) continue;
          const A gm = g * s.m;
          for (int t = 0; t < 4; ++t) {
            if (s.taps.inside[t]) gx[s.taps.offset[t]] = static_cast<T>(A(gx[s.taps.offset[t]]) + gm * s.taps.weight[t]);
          }
        }
      }
    }
  });
}

}  // namespace

void affine_warp_forward_cpu(std::uintptr_t x, std::uintptr_t theta, std::uintptr_t mask, std::uintptr_t out,
                             std::uintptr_t argmax, int64_t B, int64_t C, int64_t H, int64_t W, int64_t K, int64_t Ho,
                             int64_t Wo, bool identity, int dtype, int num_threads) {
  affine_warp_check_args(B, C, H, W, K, Ho, Wo, identity);
  for (auto [p, name] : {std::pair{x, "x"}, {theta, "theta"}, {out, "out"}, {argmax, "argmax"}}) check_pointer(p, name);
  const Dims d{B, C, H, W, K, Ho, Wo};
  dispatch_cpu(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    forward_rows<T>(reinterpret_cast<const T*>(x), reinterpret_cast<const T*>(theta), reinterpret_cast<const T*>(mask),
                    reinterpret_cast<T*>(out), reinterpret_cast<uint8_t*>(argmax), d, identity, num_threads);
  });
}

void affine_warp_backward_cpu(std::uintptr_t grad_out, std::uintptr_t x, std::uintptr_t theta, std::uintptr_t mask,
                              std::uintptr_t argmax, std::uintptr_t grad_x, std::uintptr_t grad_theta,
                              std::uintptr_t grad_mask, std::uintptr_t theta_partials, int64_t B, int64_t C, int64_t H,
                              int64_t W, int64_t K, int64_t Ho, int64_t Wo, bool identity, int64_t P, int dtype,
                              int num_threads) {
  affine_warp_check_args(B, C, H, W, K, Ho, Wo, identity);
  for (auto [p, name] : {std::pair{grad_out, "grad_out"}, {x, "x"}, {theta, "theta"}, {argmax, "argmax"}})
    check_pointer(p, name);
  check_arg(!grad_mask || mask, "grad_mask needs mask");
  check_arg(!grad_theta || (theta_partials && P == Ho), "grad_theta needs theta_partials of Ho rows on the CPU");
  const Dims d{B, C, H, W, K, Ho, Wo};
  dispatch_cpu(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const auto* go = reinterpret_cast<const T*>(grad_out);
    const auto* th = reinterpret_cast<const T*>(theta);
    const auto* mk = reinterpret_cast<const T*>(mask);
    const auto* am = reinterpret_cast<const uint8_t*>(argmax);
    if (grad_theta || grad_mask) {
      theta_mask_grad_rows<T>(go, reinterpret_cast<const T*>(x), th, mk, am, reinterpret_cast<T*>(grad_theta),
                              reinterpret_cast<T*>(grad_mask), reinterpret_cast<acc_t<T>*>(theta_partials), d,
                              num_threads);
    }
    if (grad_x) x_grad_blocks<T>(go, th, mk, am, reinterpret_cast<T*>(grad_x), d, identity, num_threads);
  });
}

}  // namespace pydeform
