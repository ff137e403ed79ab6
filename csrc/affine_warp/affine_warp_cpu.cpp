// CPU launcher of multi_affine_warp.
//
// Packed x: the forward and the theta/mask gradients first copy x into a workspace of
// 8-channel blocks with the lanes innermost and a one-pixel zero border,
//   packed[b][cb][y + 1][x + 1][l] = x[b][8 cb + l][y][x]   (0 on the border and unused lanes).
// A sample point's four taps are then four contiguous 8-channel vectors, and a tap outside
// the image reads the border's 0, so the candidates of 8 channels cost one vectorised,
// branch-free evaluation. The copy also tells whether each batch item is all finite.
//
// Tiles: the work goes by tiles of 4 x 64 output pixels. A tile's candidates (part, pixel,
// taps) are decoded once, part by part so that each pixel meets its parts in order, and
// shared by every channel: the coordinate cost is per pixel, not per channel. A tile samples
// a small region of the input, which stays in cache while all channel blocks go through it.
//
// Work split: the forward and the theta/mask gradients run over (b, tile); the scatter into
// grad_x runs over (b, group of channel blocks), each task owning its blocks, in the packed
// layout too (the workspace is reused for it). No atomics, and the results do not depend on
// the number of threads.
#include <algorithm>
#include <type_traits>
#include <utility>
#include <vector>

#include "affine_warp/affine_warp.h"
#include "common/cpu_dispatch.h"
#include "common/cpu_parallel.h"
#include "common/dtype.h"
#include "common/errors.h"


#if defined(__GNUC__)
// __builtin_prefetch needs constant arguments; written as two calls so that a build without
// inlining (-O0/-O1, e.g. the sanitizer build) compiles too.
#define PYDEFORM_PREFETCH(address, for_write) \
  ((for_write) ? __builtin_prefetch((address), 1, 3) : __builtin_prefetch((address), 0, 3))
#else
#define PYDEFORM_PREFETCH(address, for_write) ((void)(address))
#endif

namespace pydeform {

constexpr int64_t kLanes = 8;                  // channels per packed block
constexpr int64_t kTileH = 4, kTileW = 64;      // output pixels per tile
constexpr int64_t kTilePixels = kTileH * kTileW;

void affine_warp_check_args(int64_t B, int64_t C, int64_t H, int64_t W, int64_t K, int64_t Ho, int64_t Wo,
                            bool identity) {
  check_sizes_positive({B, C, H, W, K, Ho, Wo});
  check_arg(K <= kMaxParts, "at most 255 parts (K) fit the uint8 argmax");
  check_arg(!identity || (Ho == H && Wo == W), "include_identity needs the output size to equal the input size");
}

int64_t affine_warp_cpu_packed_numel(int64_t B, int64_t C, int64_t H, int64_t W) {
  check_sizes_positive({B, C, H, W});
  return B * ((C + kLanes - 1) / kLanes) * (H + 2) * (W + 2) * kLanes;
}

int64_t affine_warp_cpu_tiles(int64_t Ho, int64_t Wo) {
  check_sizes_positive({Ho, Wo});
  return ((Ho + kTileH - 1) / kTileH) * ((Wo + kTileW - 1) / kTileW);
}

namespace {

struct Dims {
  int64_t B, C, H, W, K, Ho, Wo;
  int64_t blocks() const { return (C + kLanes - 1) / kLanes; }
  int64_t packed_row() const { return (W + 2) * kLanes; }  // elements per packed row
  int64_t packed_block() const { return (H + 2) * packed_row(); }
  int64_t tiles() const { return affine_warp_cpu_tiles(Ho, Wo); }
};

// Output rows i0 .. i0 + h - 1 and columns j0 .. j0 + w - 1 of item b; its pixel p is
// (i0 + p / w, j0 + p % w).
struct Tile {
  int64_t b, index, i0, j0, h, w;  // index: the tile's number within item b
};

Tile tile_at(int64_t task, const Dims& d) {
  const int64_t per_item = d.tiles(), across = (d.Wo + kTileW - 1) / kTileW;
  Tile t;
  t.b = task / per_item;
  t.index = task % per_item;
  t.i0 = t.index / across * kTileH;
  t.j0 = t.index % across * kTileW;
  t.h = std::min(kTileH, d.Ho - t.i0);
  t.w = std::min(kTileW, d.Wo - t.j0);
  return t;
}

// Codes of the running max in lanes as wide as A, so that the select vectorises with it.
template <typename A> using CodeLane = std::conditional_t<sizeof(A) == 4, int32_t, int64_t>;

template <typename T> acc_t<T> mask_at(const T* mask, int64_t b, int64_t k, int64_t i, int64_t j, const Dims& d) {
  return mask ? load(mask + ((b * d.K + k) * d.Ho + i) * d.Wo + j) : acc_t<T>(1);
}

// Copies x into `packed` (layout above). Returns, per batch item, whether all of x[b] is finite.
template <typename T> std::vector<uint8_t> pack_x(const T* x, T* packed, const Dims& d, int num_threads) {
  const int64_t blocks = d.blocks(), row = d.packed_row();
  std::vector<uint8_t> finite_block(static_cast<size_t>(d.B * blocks));
  parallel_for_dynamic(d.B * blocks, num_threads, [&](int64_t bb) {
    const int64_t b = bb / blocks, c0 = (bb % blocks) * kLanes, n = std::min(kLanes, d.C - c0);
    T* dst = packed + bb * d.packed_block();
    std::fill(dst, dst + row, T(0));                                 // top border
    std::fill(dst + (d.H + 1) * row, dst + (d.H + 2) * row, T(0));  // bottom border
    bool finite_all = true;
    for (int64_t y = 0; y < d.H; ++y) {
      T* dst_row = dst + (y + 1) * row;
      if (n < kLanes) std::fill(dst_row, dst_row + row, T(0));  // unused lanes
      std::fill(dst_row, dst_row + kLanes, T(0));                 // left border
      std::fill(dst_row + (d.W + 1) * kLanes, dst_row + row, T(0));  // right border
      for (int64_t l = 0; l < n; ++l) {
        const T* src = x + ((b * d.C + c0 + l) * d.H + y) * d.W;
        for (int64_t xx = 0; xx < d.W; ++xx) {
          finite_all &= finite(acc_t<T>(src[xx]));
          dst_row[(xx + 1) * kLanes + l] = src[xx];
        }
      }
    }
    finite_block[bb] = finite_all;
  });
  std::vector<uint8_t> finite_item(static_cast<size_t>(d.B), 1);
  for (int64_t bb = 0; bb < d.B * blocks; ++bb) finite_item[bb / blocks] &= finite_block[bb];
  return finite_item;
}

// One part's sampling of one output pixel of a tile, shared by every channel.
template <typename A> struct Candidate {
  BilinearTaps<A> taps;   // all-zero weights and derivatives for a part that samples 0
  int64_t packed_offset;  // of the top-left tap in a packed block; 0 (a border corner) for a 0 sample
  A m;                    // mask value
  int32_t p;              // the pixel in the tile
  uint8_t k;              // the part, as stored in argmax
  bool first;             // the pixel's first candidate: it starts the running max
};

// Fills the taps of part k at output pixel (i, j). False when the part samples 0 there (a
// non-finite point or no tap inside the image): the candidate then reads the zero border
// with zero weights, so the same branch-free code yields m * 0 and no gradient.
template <typename T>
bool sample_candidate(const T* theta, int64_t b, int64_t k, int64_t i, int64_t j, const Dims& d,
                      Candidate<acc_t<T>>& e) {
  using A = acc_t<T>;
  BilinearTaps<A>& t = e.taps;
  if (affine_taps(load_affine(theta + (b * d.K + k) * 6), i, j, d.H, d.W, t) &&
      (t.inside[0] | t.inside[1] | t.inside[2] | t.inside[3])) {
    // Some tap is inside, so x0 is in [-1, W - 1] and y0 in [-1, H - 1]: within the border.
    e.packed_offset = (t.y0 + 1) * d.packed_row() + (t.x0 + 1) * kLanes;
    return true;
  }
  t = BilinearTaps<A>{};
  e.packed_offset = 0;
  return false;
}

enum class Purpose {
  kForward,    // every part that can win, in order; a 0 part stands unsampled for the rest
  kThetaMask,  // the same parts that can win, sampled; parts that sample 0 pass no gradient
  kScatterX,   // parts with a nonzero mask that sample something: the only ones with grad_x
};

// The candidates of a tile, part by part. When x[b] is all finite, a part whose mask is 0 at
// a pixel yields exactly 0 there (0 * finite), and of those parts only the first can win a
// tie; the others are left out. (A NaN or Inf in x makes 0 * it NaN: every part is kept.)
template <typename T>
void build_candidates(const T* theta, const T* mask, const Tile& tile, const Dims& d, bool x_finite, bool identity,
                      Purpose purpose, std::vector<Candidate<acc_t<T>>>& candidates, std::vector<uint8_t>& state) {
  using A = acc_t<T>;
  constexpr uint8_t kHasCandidate = 1, kZeroPartSeen = 2;
  candidates.clear();
  state.assign(static_cast<size_t>(tile.h * tile.w), 0);
  const auto build_one = [&](int64_t k, int64_t p, int64_t i, int64_t j) {
    Candidate<A> e;
    e.m = mask_at(mask, tile.b, k, i, j, d);
    e.p = static_cast<int32_t>(p);
    e.k = static_cast<uint8_t>(k);
    e.first = false;
    if (purpose == Purpose::kScatterX) {
      if (e.m != A(0) && sample_candidate(theta, tile.b, k, i, j, d, e)) candidates.push_back(e);
      return;
    }
    const bool zero_part = x_finite && e.m == A(0);
    if (zero_part) {
      if (state[p] & kZeroPartSeen) return;  // equals an earlier 0 candidate: cannot win
      state[p] |= kZeroPartSeen;
    }
    e.first = !identity && !(state[p] & kHasCandidate);
    state[p] |= kHasCandidate;
    if (purpose == Purpose::kForward && zero_part) {
      e.taps = BilinearTaps<A>{}, e.packed_offset = 0;  // exactly 0: no need to sample
      candidates.push_back(e);
    } else if (sample_candidate(theta, tile.b, k, i, j, d, e) || purpose == Purpose::kForward) {
      candidates.push_back(e);
    }
  };
  for (int64_t k = 0; k < d.K; ++k) {
    for (int64_t p = 0, i = tile.i0; i < tile.i0 + tile.h; ++i) {
      for (int64_t j = tile.j0; j < tile.j0 + tile.w; ++j, ++p) build_one(k, p, i, j);
    }
  }
}

// Memory prefetches. A tile reads scattered pieces of large arrays, and each read would wait
// on memory in turn; asking for the next block's pieces while the current block is being
// worked on overlaps those waits.

// The lines of a packed block that the candidates' taps will touch.
template <typename T, typename A>
void prefetch_taps(const T* block, int64_t packed_row, const std::vector<Candidate<A>>& candidates, int for_write) {
  for (const Candidate<A>& e : candidates) {
    PYDEFORM_PREFETCH(block + e.packed_offset, for_write);
    PYDEFORM_PREFETCH(block + e.packed_offset + packed_row, for_write);
  }
}

// The rows of a tile in n planes `plane` apart, starting at `first` (a tile pixel's element).
template <typename T> void prefetch_tile_rows(const T* first, int64_t n, const Tile& tile, int64_t Wo, int64_t plane) {
  constexpr int64_t kLine = 64 / sizeof(T);
  for (int64_t l = 0; l < n; ++l) {
    for (int64_t r = 0; r < tile.h; ++r) {
      for (int64_t col = 0; col < tile.w; col += kLine) PYDEFORM_PREFETCH(first + l * plane + r * Wo + col, 0);
    }
  }
}

// The four tap values of lane l at a candidate (0 outside the image: the border).
template <typename T, typename A>
PYDEFORM_ALWAYS_INLINE void packed_taps(const T* p, int64_t packed_row, int64_t l, A v[4]) {
  v[0] = A(p[l]), v[1] = A(p[kLanes + l]), v[2] = A(p[packed_row + l]), v[3] = A(p[packed_row + kLanes + l]);
}

// The forward's hot loop: the running max of a tile's candidates for the 8 lanes of one
// packed block; best / code are [pixel][kLanes]. The select is branch-free: which part wins
// is data-dependent and would defeat branch prediction.
template <typename T>
PYDEFORM_ALWAYS_INLINE void max_over_candidates(const T* block, int64_t packed_row, const Candidate<acc_t<T>>* e,
                                                const Candidate<acc_t<T>>* end, acc_t<T>* best,
                                                CodeLane<acc_t<T>>* code) {
  using A = acc_t<T>;
  for (; e != end; ++e) {
    const T* p = block + e->packed_offset;
    A* bp = best + e->p * kLanes;
    CodeLane<A>* cp = code + e->p * kLanes;
    const CodeLane<A> k = e->k;
    for (int64_t l = 0; l < kLanes; ++l) {
      A v[4];
      packed_taps(p, packed_row, l, v);
      const A cand = e->m * bilinear_value(e->taps, v);
      const bool better = e->first | warp_improves(cand, bp[l]);
      bp[l] = better ? cand : bp[l];
      cp[l] = better ? k : cp[l];
    }
  }
}

// The theta/mask gradient's hot loop: per candidate and lane, where that part won, adds
// g * value, g * dv/dsx and g * dv/dsy to sums[candidate][3][kLanes].
template <typename T>
PYDEFORM_ALWAYS_INLINE void accumulate_winners(const T* block, int64_t packed_row, const Candidate<acc_t<T>>* e,
                                               const Candidate<acc_t<T>>* end, const CodeLane<acc_t<T>>* code,
                                               const acc_t<T>* g, acc_t<T>* sums) {
  using A = acc_t<T>;
  for (; e != end; ++e, sums += 3 * kLanes) {
    const BilinearTaps<A> taps = e->taps;  // a local copy: the stores to sums cannot alias it
    const T* __restrict__ p = block + e->packed_offset;
    const CodeLane<A>* __restrict__ cp = code + e->p * kLanes;
    const A* __restrict__ gp = g + e->p * kLanes;
    A* __restrict__ s = sums;
    const CodeLane<A> k = e->k;
    for (int64_t l = 0; l < kLanes; ++l) {
      A v[4], gsx, gsy;
      packed_taps(p, packed_row, l, v);
      const A value = bilinear_value(taps, v);
      bilinear_coord_grad(taps, v, gsx, gsy);
      // Weighting by 0/1 rather than selecting keeps the loop free of branches (so it
      // vectorises). It differs from a select only when x is not finite, where a losing
      // part's 0 * Inf is NaN, exactly as in the reference's backward.
      const A won = A(cp[l] == k) * gp[l];
      s[l] += won * value;
      s[kLanes + l] += won * gsx;
      s[2 * kLanes + l] += won * gsy;
    }
  }
}

// q[l] += gm[l] * w over the lanes of one tap.
template <typename T, typename A>
PYDEFORM_ALWAYS_INLINE void scatter_lanes(T* __restrict__ q, const A* __restrict__ gm, A w) {
#pragma omp simd
  for (int64_t l = 0; l < kLanes; ++l) q[l] = static_cast<T>(A(q[l]) + gm[l] * w);
}

// grad_x's hot loop, in the packed layout: per candidate, the lanes where that part won get
// g * mask * weight added at the four taps (taps outside the image land on the border, which
// is dropped). The identity's winners were added before.
template <typename T>
PYDEFORM_ALWAYS_INLINE void scatter_winners(T* block, int64_t packed_row, const Candidate<acc_t<T>>* e,
                                            const Candidate<acc_t<T>>* end, const CodeLane<acc_t<T>>* code,
                                            const acc_t<T>* g) {
  using A = acc_t<T>;
  for (; e != end; ++e) {
    const CodeLane<A>* cp = code + e->p * kLanes;
    const A* gp = g + e->p * kLanes;
    const CodeLane<A> k = e->k;
    const A m = e->m;
    A gm[kLanes];  // local, so that the stores below cannot alias it
#pragma omp simd
    for (int64_t l = 0; l < kLanes; ++l) gm[l] = (cp[l] == k ? gp[l] : A(0)) * m;
    T* q = block + e->packed_offset;
    scatter_lanes(q, gm, e->taps.weight[0]);
    scatter_lanes(q + kLanes, gm, e->taps.weight[1]);
    scatter_lanes(q + packed_row, gm, e->taps.weight[2]);
    scatter_lanes(q + packed_row + kLanes, gm, e->taps.weight[3]);
  }
}

// The hot loops compiled twice: for the x86-64 baseline and for AVX2 (8-wide float lanes),
// chosen at run time so that one build still runs on any x86-64 CPU.
template <typename T> struct HotLoops {
  using A = acc_t<T>;
  using MaxFn = void (*)(const T*, int64_t, const Candidate<A>*, const Candidate<A>*, A*, CodeLane<A>*);
  using AccumulateFn = void (*)(const T*, int64_t, const Candidate<A>*, const Candidate<A>*, const CodeLane<A>*,
                                const A*, A*);
  using ScatterFn = void (*)(T*, int64_t, const Candidate<A>*, const Candidate<A>*, const CodeLane<A>*, const A*);
  MaxFn max_over;
  AccumulateFn accumulate;
  ScatterFn scatter;
};

template <typename T>
void max_over_portable(const T* block, int64_t row, const Candidate<acc_t<T>>* e, const Candidate<acc_t<T>>* end,
                       acc_t<T>* best, CodeLane<acc_t<T>>* code) {
  max_over_candidates<T>(block, row, e, end, best, code);
}
template <typename T>
void accumulate_portable(const T* block, int64_t row, const Candidate<acc_t<T>>* e, const Candidate<acc_t<T>>* end,
                         const CodeLane<acc_t<T>>* code, const acc_t<T>* g, acc_t<T>* sums) {
  accumulate_winners<T>(block, row, e, end, code, g, sums);
}
template <typename T>
void scatter_portable(T* block, int64_t row, const Candidate<acc_t<T>>* e, const Candidate<acc_t<T>>* end,
                      const CodeLane<acc_t<T>>* code, const acc_t<T>* g) {
  scatter_winners<T>(block, row, e, end, code, g);
}
#if PYDEFORM_X86_DISPATCH
template <typename T>
__attribute__((target("avx2,fma"))) void scatter_avx2(T* block, int64_t row, const Candidate<acc_t<T>>* e,
                                                      const Candidate<acc_t<T>>* end, const CodeLane<acc_t<T>>* code,
                                                      const acc_t<T>* g) {
  scatter_winners<T>(block, row, e, end, code, g);
}
template <typename T>
__attribute__((target("avx2,fma"))) void max_over_avx2(const T* block, int64_t row, const Candidate<acc_t<T>>* e,
                                                       const Candidate<acc_t<T>>* end, acc_t<T>* best,
                                                       CodeLane<acc_t<T>>* code) {
  max_over_candidates<T>(block, row, e, end, best, code);
}
template <typename T>
__attribute__((target("avx2,fma"))) void accumulate_avx2(const T* block, int64_t row, const Candidate<acc_t<T>>* e,
                                                         const Candidate<acc_t<T>>* end,
                                                         const CodeLane<acc_t<T>>* code, const acc_t<T>* g,
                                                         acc_t<T>* sums) {
  accumulate_winners<T>(block, row, e, end, code, g, sums);
}
#endif

template <typename T> HotLoops<T> pick_hot_loops() {
#if PYDEFORM_X86_DISPATCH
  if (cpu_isa() >= CpuIsa::Avx2) return {&max_over_avx2<T>, &accumulate_avx2<T>, &scatter_avx2<T>};
#endif
  return {&max_over_portable<T>, &accumulate_portable<T>, &scatter_portable<T>};
}

// A tile of the block's n channels, lanes innermost -> (B, C, Ho, Wo): out / argmax point at
// the tile's first pixel in the block's first channel, planes `plane` apart.
template <typename T, typename A>
void unpack_tile(const A* best, const CodeLane<A>* code, int64_t n, const Tile& tile, int64_t Wo, int64_t plane,
                 T* __restrict__ out, uint8_t* __restrict__ argmax) {
  for (int64_t l = 0; l < n; ++l) {
    for (int64_t r = 0; r < tile.h; ++r) {
      for (int64_t col = 0; col < tile.w; ++col) {
        const int64_t p = r * tile.w + col, o = l * plane + r * Wo + col;
        out[o] = static_cast<T>(best[p * kLanes + l]);
        argmax[o] = static_cast<uint8_t>(code[p * kLanes + l]);
      }
    }
  }
}

// The reverse for the backward: a tile of n channels' winners and upstream gradients, lanes
// innermost. Unused lanes win nothing and carry no gradient.
template <typename T, typename A>
void pack_tile(const uint8_t* argmax, const T* grad_out, int64_t n, const Tile& tile, int64_t Wo, int64_t plane,
               CodeLane<A>* __restrict__ code, A* __restrict__ g) {
  for (int64_t l = 0; l < kLanes; ++l) {
    for (int64_t r = 0; r < tile.h; ++r) {
      for (int64_t col = 0; col < tile.w; ++col) {
        const int64_t p = r * tile.w + col, o = l * plane + r * Wo + col;
        code[p * kLanes + l] = l < n ? CodeLane<A>(argmax[o]) : CodeLane<A>(kIdentityCode);
        g[p * kLanes + l] = l < n ? load(grad_out + o) : A(0);
      }
    }
  }
}

template <typename T>
void forward_tiles(const T* x, const T* theta, const T* mask, T* out, uint8_t* argmax, T* packed, const Dims& d,
                   bool identity, int num_threads) {
  using A = acc_t<T>;
  const std::vector<uint8_t> x_finite = pack_x(x, packed, d, num_threads);
  const HotLoops<T> loops = pick_hot_loops<T>();
  const int64_t blocks = d.blocks(), packed_row = d.packed_row();
  parallel_for_dynamic(d.B * d.tiles(), num_threads, [&](int64_t task) {
    const Tile tile = tile_at(task, d);
    thread_local std::vector<Candidate<A>> tls_candidates;
    thread_local std::vector<uint8_t> tls_state;
    thread_local std::vector<A> tls_best;
    thread_local std::vector<CodeLane<A>> tls_code;
    auto& candidates = tls_candidates;  // one TLS lookup per tile
    build_candidates(theta, mask, tile, d, x_finite[tile.b], identity, Purpose::kForward, candidates, tls_state);
    tls_best.assign(static_cast<size_t>(kTilePixels * kLanes), A(0));
    tls_code.assign(static_cast<size_t>(kTilePixels * kLanes), CodeLane<A>(kIdentityCode));
    A* best = tls_best.data();
    CodeLane<A>* code = tls_code.data();
    prefetch_taps(packed + tile.b * blocks * d.packed_block(), packed_row, candidates, 0);
    for (int64_t cb = 0; cb < blocks; ++cb) {
      const T* block = packed + (tile.b * blocks + cb) * d.packed_block();
      if (cb + 1 < blocks) prefetch_taps(block + d.packed_block(), packed_row, candidates, 0);
      if (identity) {  // the identity comes first: it starts every running max
        for (int64_t r = 0; r < tile.h; ++r) {
          const T* src = block + (tile.i0 + r + 1) * packed_row + (tile.j0 + 1) * kLanes;
          std::copy(src, src + tile.w * kLanes, best + r * tile.w * kLanes);
        }
        std::fill_n(code, tile.h * tile.w * kLanes, CodeLane<A>(kIdentityCode));
      }
      loops.max_over(block, packed_row, candidates.data(), candidates.data() + candidates.size(), best, code);
      const int64_t o = ((tile.b * d.C + cb * kLanes) * d.Ho + tile.i0) * d.Wo + tile.j0;
      unpack_tile(best, code, std::min(kLanes, d.C - cb * kLanes), tile, d.Wo, d.Ho * d.Wo, out + o, argmax + o);
    }
  });
}

// grad_theta and grad_mask, one task per (b, tile): per candidate (part, pixel), the sums over
// the channels it won of g * value (-> grad_mask) and g * d value / d point (-> theta). Each
// tile's theta partial goes to theta_partials[b, k, tile]; they are then summed over tiles in
// order, so the result is the same for any number of threads.
template <typename T>
void theta_mask_grad_tiles(const T* grad_out, const T* x, const T* theta, const T* mask, const uint8_t* argmax,
                           T* grad_theta, T* grad_mask, acc_t<T>* theta_partials, T* packed, const Dims& d,
                           bool identity, int num_threads) {
  using A = acc_t<T>;
  const std::vector<uint8_t> x_finite = pack_x(x, packed, d, num_threads);
  const HotLoops<T> loops = pick_hot_loops<T>();
  const int64_t blocks = d.blocks(), packed_row = d.packed_row(), P = d.tiles();
  parallel_for_dynamic(d.B * P, num_threads, [&](int64_t task) {
    const Tile tile = tile_at(task, d);
    thread_local std::vector<Candidate<A>> tls_candidates;
    thread_local std::vector<uint8_t> tls_state;
    thread_local std::vector<A> tls_sums, tls_g, tls_partial;
    thread_local std::vector<CodeLane<A>> tls_code;
    auto& candidates = tls_candidates;  // one TLS lookup per tile
    build_candidates(theta, mask, tile, d, x_finite[tile.b], identity, Purpose::kThetaMask, candidates, tls_state);
    const int64_t n_cand = static_cast<int64_t>(candidates.size());
    tls_sums.assign(static_cast<size_t>(n_cand * 3 * kLanes), A(0));
    tls_g.resize(static_cast<size_t>(kTilePixels * kLanes));
    tls_code.resize(static_cast<size_t>(kTilePixels * kLanes));
    A *sums = tls_sums.data(), *g = tls_g.data();
    CodeLane<A>* code = tls_code.data();
    prefetch_taps(packed + tile.b * blocks * d.packed_block(), packed_row, candidates, 0);
    for (int64_t cb = 0; cb < blocks; ++cb) {
      const int64_t o = ((tile.b * d.C + cb * kLanes) * d.Ho + tile.i0) * d.Wo + tile.j0;
      const int64_t n = std::min(kLanes, d.C - cb * kLanes), plane = d.Ho * d.Wo;
      const T* block = packed + (tile.b * blocks + cb) * d.packed_block();
      if (cb + 1 < blocks) {
        prefetch_taps(block + d.packed_block(), packed_row, candidates, 0);
        const int64_t n_next = std::min(kLanes, d.C - (cb + 1) * kLanes);
        prefetch_tile_rows(argmax + o + kLanes * plane, n_next, tile, d.Wo, plane);
        prefetch_tile_rows(grad_out + o + kLanes * plane, n_next, tile, d.Wo, plane);
      }
      pack_tile(argmax + o, grad_out + o, n, tile, d.Wo, plane, code, g);
      loops.accumulate(block, packed_row, candidates.data(), candidates.data() + n_cand, code, g, sums);
    }
    if (grad_mask) {  // 0 where a part won nothing
      for (int64_t k = 0; k < d.K; ++k) {
        for (int64_t r = 0; r < tile.h; ++r) {
          std::fill_n(grad_mask + ((tile.b * d.K + k) * d.Ho + tile.i0 + r) * d.Wo + tile.j0, tile.w, T(0));
        }
      }
    }
    tls_partial.assign(static_cast<size_t>(d.K * 6), A(0));
    for (int64_t q = 0; q < n_cand; ++q) {
      const Candidate<A>& e = candidates[q];
      A total[3] = {A(0), A(0), A(0)};
      for (int s = 0; s < 3; ++s) {
        for (int64_t l = 0; l < kLanes; ++l) total[s] += sums[(q * 3 + s) * kLanes + l];
      }
      const int64_t i = tile.i0 + e.p / tile.w, j = tile.j0 + e.p % tile.w;
      if (grad_mask) grad_mask[((tile.b * d.K + e.k) * d.Ho + i) * d.Wo + j] = static_cast<T>(total[0]);
      add_theta_grad(e.m * total[1], e.m * total[2], i, j, tls_partial.data() + e.k * 6);
    }
    if (grad_theta) {
      for (int64_t k = 0; k < d.K; ++k) {
        std::copy_n(tls_partial.data() + k * 6, 6, theta_partials + ((tile.b * d.K + k) * P + tile.index) * 6);
      }
    }
  });
  if (!grad_theta) return;
  parallel_for(d.B * d.K * 6, num_threads, [&](int64_t bkq) {
    const int64_t bk = bkq / 6, q = bkq % 6;
    A total = A(0);
    for (int64_t t = 0; t < P; ++t) total += theta_partials[(bk * P + t) * 6 + q];
    grad_theta[bkq] = static_cast<T>(total);
  });
}

// The reverse of pack_x, for grad_x: packed (border dropped) -> (B, C, H, W).
template <typename T> void unpack_x(const T* packed, T* grad_x, const Dims& d, int num_threads) {
  const int64_t blocks = d.blocks(), row = d.packed_row();
  parallel_for_dynamic(d.B * blocks, num_threads, [&](int64_t bb) {
    const int64_t b = bb / blocks, c0 = (bb % blocks) * kLanes, n = std::min(kLanes, d.C - c0);
    const T* src = packed + bb * d.packed_block();
    for (int64_t y = 0; y < d.H; ++y) {
      const T* src_row = src + (y + 1) * row + kLanes;
      for (int64_t l = 0; l < n; ++l) {
        T* dst = grad_x + ((b * d.C + c0 + l) * d.H + y) * d.W;
        for (int64_t xx = 0; xx < d.W; ++xx) dst[xx] = src_row[xx * kLanes + l];
      }
    }
  });
}

// grad_x: the winners' taps are scattered in the packed layout, 8 channels at a time, into
// `packed` (reused as the workspace, zeroed here), then unpacked into grad_x. One task per
// (b, group of channel blocks) owns those blocks and goes through the tiles in order. Groups
// are only as many as the threads need, since each task decodes every tile's candidates.
template <typename T>
void x_grad_groups(const T* grad_out, const T* theta, const T* mask, const uint8_t* argmax, T* grad_x, T* packed,
                   const Dims& d, bool identity, int num_threads) {
  using A = acc_t<T>;
  const HotLoops<T> loops = pick_hot_loops<T>();
  const int64_t blocks = d.blocks(), tiles = d.tiles(), packed_row = d.packed_row();
  const int64_t groups = std::min(blocks, std::max<int64_t>(1, (num_threads + d.B - 1) / d.B));
  parallel_for_dynamic(d.B * groups, num_threads, [&](int64_t task) {
    const int64_t b = task / groups, group = task % groups;
    const int64_t cb0 = blocks * group / groups, cb1 = blocks * (group + 1) / groups;
    std::fill(packed + (b * blocks + cb0) * d.packed_block(), packed + (b * blocks + cb1) * d.packed_block(), T(0));
    thread_local std::vector<Candidate<A>> tls_candidates;
    thread_local std::vector<uint8_t> tls_state;
    thread_local std::vector<A> tls_g;
    thread_local std::vector<CodeLane<A>> tls_code;
    auto& candidates = tls_candidates;  // one TLS lookup per task
    tls_g.resize(static_cast<size_t>(kTilePixels * kLanes));
    tls_code.resize(static_cast<size_t>(kTilePixels * kLanes));
    A* g = tls_g.data();
    CodeLane<A>* code = tls_code.data();
    for (int64_t t = 0; t < tiles; ++t) {
      const Tile tile = tile_at(b * tiles + t, d);
      build_candidates(theta, mask, tile, d, true, identity, Purpose::kScatterX, candidates, tls_state);
      prefetch_taps(packed + (b * blocks + cb0) * d.packed_block(), packed_row, candidates, 1);
      for (int64_t cb = cb0; cb < cb1; ++cb) {
        const int64_t o = ((b * d.C + cb * kLanes) * d.Ho + tile.i0) * d.Wo + tile.j0;
        const int64_t n = std::min(kLanes, d.C - cb * kLanes), plane = d.Ho * d.Wo;
        T* block = packed + (b * blocks + cb) * d.packed_block();
        if (cb + 1 < cb1) {
          prefetch_taps(block + d.packed_block(), packed_row, candidates, 1);
          const int64_t n_next = std::min(kLanes, d.C - (cb + 1) * kLanes);
          prefetch_tile_rows(argmax + o + kLanes * plane, n_next, tile, d.Wo, plane);
          prefetch_tile_rows(grad_out + o + kLanes * plane, n_next, tile, d.Wo, plane);
        }
        pack_tile(argmax + o, grad_out + o, n, tile, d.Wo, plane, code, g);
        if (identity) {  // the identity's winners: their own pixel
          for (int64_t p = 0, i = tile.i0; i < tile.i0 + tile.h; ++i) {
            for (int64_t j = tile.j0; j < tile.j0 + tile.w; ++j, ++p) {
              T* dst = block + (i + 1) * packed_row + (j + 1) * kLanes;
              for (int64_t l = 0; l < kLanes; ++l) {
                if (code[p * kLanes + l] == kIdentityCode) dst[l] = static_cast<T>(A(dst[l]) + g[p * kLanes + l]);
              }
            }
          }
        }
        loops.scatter(block, packed_row, candidates.data(), candidates.data() + candidates.size(), code, g);
      }
    }
  });
  unpack_x(packed, grad_x, d, num_threads);
}

}  // namespace

void affine_warp_forward_cpu(std::uintptr_t x, std::uintptr_t theta, std::uintptr_t mask, std::uintptr_t out,
                             std::uintptr_t argmax, std::uintptr_t packed, int64_t B, int64_t C, int64_t H, int64_t W,
                             int64_t K, int64_t Ho, int64_t Wo, bool identity, int dtype, int num_threads) {
  affine_warp_check_args(B, C, H, W, K, Ho, Wo, identity);
  for (auto [p, name] : {std::pair{x, "x"}, {theta, "theta"}, {out, "out"}, {argmax, "argmax"}, {packed, "packed"}})
    check_pointer(p, name);
  const Dims d{B, C, H, W, K, Ho, Wo};
  dispatch_cpu(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    forward_tiles<T>(reinterpret_cast<const T*>(x), reinterpret_cast<const T*>(theta),
                     reinterpret_cast<const T*>(mask), reinterpret_cast<T*>(out), reinterpret_cast<uint8_t*>(argmax),
                     reinterpret_cast<T*>(packed), d, identity, num_threads);
  });
}

void affine_warp_backward_cpu(std::uintptr_t grad_out, std::uintptr_t x, std::uintptr_t theta, std::uintptr_t mask,
                              std::uintptr_t argmax, std::uintptr_t grad_x, std::uintptr_t grad_theta,
                              std::uintptr_t grad_mask, std::uintptr_t theta_partials, std::uintptr_t packed,
                              int64_t B, int64_t C, int64_t H, int64_t W, int64_t K, int64_t Ho, int64_t Wo,
                              bool identity, int64_t P, int dtype, int num_threads) {
  affine_warp_check_args(B, C, H, W, K, Ho, Wo, identity);
  for (auto [p, name] : {std::pair{grad_out, "grad_out"}, {x, "x"}, {theta, "theta"}, {argmax, "argmax"}})
    check_pointer(p, name);
  check_arg(!grad_mask || mask, "grad_mask needs mask");
  check_arg(!grad_theta || (theta_partials && P == affine_warp_cpu_tiles(Ho, Wo)),
            "grad_theta needs theta_partials with affine_warp_cpu_tiles(Ho, Wo) partitions");
  check_arg(!(grad_x || grad_theta || grad_mask) || packed, "the CPU backward needs the packed workspace");
  const Dims d{B, C, H, W, K, Ho, Wo};
  dispatch_cpu(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const auto* go = reinterpret_cast<const T*>(grad_out);
    const auto* th = reinterpret_cast<const T*>(theta);
    const auto* mk = reinterpret_cast<const T*>(mask);
    const auto* am = reinterpret_cast<const uint8_t*>(argmax);
    if (grad_theta || grad_mask) {
      theta_mask_grad_tiles<T>(go, reinterpret_cast<const T*>(x), th, mk, am, reinterpret_cast<T*>(grad_theta),
                               reinterpret_cast<T*>(grad_mask), reinterpret_cast<acc_t<T>*>(theta_partials),
                               reinterpret_cast<T*>(packed), d, identity, num_threads);
    }
    if (grad_x) {
      x_grad_groups<T>(go, th, mk, am, reinterpret_cast<T*>(grad_x), reinterpret_cast<T*>(packed), d, identity,
                       num_threads);
    }
  });
}

}  // namespace pydeform
