// CPU launcher of homography_sample.
//
// Row segments: the work goes by segments of up to kSegment output pixels of one row. A
// segment's sample points and bilinear taps are computed together, as arrays: the projection
// and the tap geometry then vectorise (no per-pixel branches: an undefined point is a point
// whose taps are all unread, with zero weights), and every channel reuses them in plain loops
// over the segment.
//
// Forward: one task per output row, handed out as threads finish. Backward: one task per
// (x image, channel block), a partition fixed by the sizes; the task zero-fills and owns its
// grad_x planes (plain adds, no races) and keeps one grad_h partial per batch item it reads,
// so the results are bit-identical whatever the number of threads.
#include <algorithm>
#include <type_traits>
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#endif

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

constexpr int64_t kSegment = 64;  // output pixels whose taps are computed together
constexpr int64_t kLanes = 8;      // floats per AVX2 vector; kSegment is a multiple
constexpr int64_t kChannelGroup = 4;  // channels whose backward loops are interleaved
inline int64_t padded_size(int64_t n) { return (n + kLanes - 1) / kLanes * kLanes; }

// 0/1 flags as wide as A, so that selects on them vectorise with A.
template <typename A> using Flag = std::conditional_t<sizeof(A) == 4, int32_t, int64_t>;

// The sample points and taps of output pixels (i, j0 .. j0 + n - 1), tap k as in BilinearTaps.
// Offsets in index type I: int32_t where a plane has at most 2^30 elements (so that the loops
// over them vectorise: AVX2 has no vector int64 <-> float), int64_t otherwise.
template <typename A, typename I> struct Segment {
  int64_t i, j0, n;
  A py;                         // the row's output point in h's coordinates
  I offset[4][kSegment];        // y * W + x of tap k; 0 where it is not read
  Flag<A> read[4][kSegment];    // ~0 (a vector mask) where tap k is inside the image (and the point defined), else 0
  A weight[4][kSegment];        // 0 where not read
  Flag<A> defined[kSegment];
  // For the coordinate and homography gradients only (filled by the backward, not the forward):
  A fx[kSegment], fy[kSegment], dsx[kSegment], dsy[kSegment];  // as in BilinearTaps
  A px[kSegment], su[kSegment], sv[kSegment], inv_w[kSegment];  // as in HomographySample (0 if undefined)
};

// The integer part of the taps of a segment's first `count` pixels, from their clamped sample
// points (sx, sy). floor() is a truncation, one lower where that rounded up (sx lies in
// [-2, W + 1], well inside I). (GCC vectorises this loop for AVX-512 but not for AVX2, where
// Avx2SegmentMath does it by hand.)
template <bool Gradients, typename A, typename I>
PYDEFORM_ALWAYS_INLINE void fill_taps(const A* sx, const A* sy, int64_t H, int64_t W, int64_t count, Segment<A, I>& s) {
  const I h = static_cast<I>(H), w = static_cast<I>(W);
  for (int64_t p = 0; p < count; ++p) {
    I x0 = static_cast<I>(sx[p]), y0 = static_cast<I>(sy[p]);
    x0 -= static_cast<I>(A(x0) > sx[p]);
    y0 -= static_cast<I>(A(y0) > sy[p]);
    const A fx = sx[p] - A(x0), fy = sy[p] - A(y0);
    if constexpr (Gradients) {
      s.fx[p] = fx;
      s.fy[p] = fy;
    }
    const bool defined = s.defined[p] != 0;
    const bool in_x[2] = {bool((x0 >= 0) & (x0 < w)), bool((x0 + 1 >= 0) & (x0 + 1 < w))};
    const bool in_y[2] = {bool(defined & (y0 >= 0) & (y0 < h)), bool(defined & (y0 + 1 >= 0) & (y0 + 1 < h))};
    const A wx[2] = {A(1) - fx, fx}, wy[2] = {A(1) - fy, fy};
    for (int k = 0; k < 4; ++k) {
      const bool read = in_x[k & 1] & in_y[k >> 1];
      s.read[k][p] = read ? ~Flag<A>(0) : Flag<A>(0);
      s.offset[k][p] = read ? (y0 + (k >> 1)) * w + x0 + (k & 1) : I(0);
      s.weight[k][p] = read ? wx[k & 1] * wy[k >> 1] : A(0);
    }
  }
}

// Fills s for output pixels (i, j0 .. j0 + n - 1), and up to the next multiple of kLanes with
// pixels that read no tap (undefined), so that vector loops may run over whole vectors. The
// members only the gradients read are filled where Gradients is set.
template <typename Math, bool Gradients, typename A, typename I>
PYDEFORM_ALWAYS_INLINE void fill_segment(const A m[9], const HomographyGeometry<A>& g, int64_t i, int64_t j0, int64_t n,
                                         Segment<A, I>& s) {
  s.i = i;
  s.j0 = j0;
  s.n = n;
  s.py = A(i) * g.out_scale_y + g.out_offset_y;
  const A py = s.py;
  const BilinearClamp<A> box = bilinear_clamp<A>(g.H, g.W, g.border);
  const int64_t padded = padded_size(n);
  A column[kSegment], sx[kSegment], sy[kSegment];
  // A(j0 + p), through int32 where that is exact and fits (AVX2 has no vector int64 -> float)
  if (j0 + padded <= (int64_t(1) << 24)) {
    const int32_t first = static_cast<int32_t>(j0);
    for (int32_t p = 0; p < static_cast<int32_t>(padded); ++p) column[p] = A(first + p);
  } else {
    for (int64_t p = 0; p < padded; ++p) column[p] = A(j0 + p);
  }
  // The floating-point part, vectorised: homography_sample_at without its early returns.
  for (int64_t p = 0; p < padded; ++p) {
    const A px = column[p] * g.out_scale_x + g.out_offset_x;
    A su, sv, inv_w, dsx, dsy;
    const bool projected = homography_project(m, px, py, su, sv, inv_w);
    // Finite where projected: |su|, |sv| <= kHomographyFar = 1e18 and the scales are at most
    // 2^62, so |x|, |y| < 5e36.
    A x = su * g.in_scale_x + g.in_offset_x, y = sv * g.in_scale_y + g.in_offset_y;
    const bool defined = projected & (p < n);
    x = defined ? x : A(0);
    y = defined ? y : A(0);
    bilinear_clamp_point(x, y, box, dsx, dsy);
    sx[p] = x;
    sy[p] = y;
    s.defined[p] = defined;
    if constexpr (Gradients) {
      s.dsx[p] = dsx;
      s.dsy[p] = dsy;
      s.px[p] = px;
      s.su[p] = su;
      s.sv[p] = sv;
      s.inv_w[p] = inv_w;
    }
  }
  Math::template fill_taps<Gradients>(sx, sy, g.H, g.W, padded, s);
}

// The four tap values of pixel p in one channel plane (0 for taps not read).
// (The load is unconditional: offset is 0 for a tap not read, so it is always in bounds.)
template <typename T, typename A, typename I>
PYDEFORM_ALWAYS_INLINE void segment_gather(const T* plane, const Segment<A, I>& s, int64_t p, A v[4]) {
  for (int k = 0; k < 4; ++k) {
    const A value = A(plane[s.offset[k][p]]);
    v[k] = s.read[k][p] ? value : A(0);
  }
}

// The per-channel loops over a segment's taps, in plain C++ (any CPU, any type). A launcher
// body takes them as a template argument, so that Avx2SegmentMath can replace them.
struct PortableSegmentMath {
  template <bool Gradients, typename A, typename I>
  static PYDEFORM_ALWAYS_INLINE void fill_taps(const A* sx, const A* sy, int64_t H, int64_t W, int64_t count,
                                               Segment<A, I>& s) {
    pydeform::fill_taps<Gradients>(sx, sy, H, W, count, s);
  }
  // Output pixels of segment s in channels [0, C): dst points at channel 0's first one.
  template <typename T, typename A, typename I>
  static PYDEFORM_ALWAYS_INLINE void interpolate(const T* x_image, int64_t in_plane, int64_t C,
                                                 const Segment<A, I>& s, T* dst, int64_t out_plane) {
    for (int64_t c = 0; c < C; ++c) {
      const T* __restrict__ plane = x_image + c * in_plane;
      T* __restrict__ out = dst + c * out_plane;
      for (int64_t q = 0; q < s.n; ++q) {
        A v[4];
        segment_gather(plane, s, q, v);
        store(out + q, s.weight[0][q] * v[0] + s.weight[1][q] * v[1] + s.weight[2][q] * v[2] + s.weight[3][q] * v[3]);
      }
    }
  }
  // gsx[q], gsy[q] += g[u][q] * d value / d (sx, sy) of pixel q in the plane of channel u, for
  // q < s.n and channels u = 0 .. channels - 1 (<= kChannelGroup, in_plane apart) in order.
  template <typename T, typename A, typename I>
  static PYDEFORM_ALWAYS_INLINE void add_coord_grad(const T* planes, int64_t in_plane, int64_t channels,
                                                    const Segment<A, I>& s, const A (*g)[kSegment], A* gsx, A* gsy) {
    for (int64_t u = 0; u < channels; ++u) {
      const T* plane = planes + u * in_plane;
      for (int64_t q = 0; q < s.n; ++q) {
        A v[4], gx, gy;
        segment_gather(plane, s, q, v);
        bilinear_coord_grad(s.fx[q], s.fy[q], s.dsx[q], s.dsy[q], v, gx, gy);
        gsx[q] += g[u][q] * gx;
        gsy[q] += g[u][q] * gy;
      }
    }
  }
};

#if PYDEFORM_X86_DISPATCH
#define PYDEFORM_AVX2_INLINE inline __attribute__((target("avx2,fma")))

// The same loops in AVX2 intrinsics, kLanes pixels at a time, for float with 32-bit offsets
// (GCC vectorises neither the tap geometry nor the forward's tap loads); other types fall back
// to the portable loops. Taps are read by pair loads where all are inside the image, else by
// masked gathers, which read only the taps whose read mask is set: no load leaves the plane and
// a NaN or Inf outside the taps cannot reach a result (a tap not read is 0, not 0 * value).
// Only for functions compiled for AVX2 + FMA.
struct Avx2SegmentMath : PortableSegmentMath {
  using PortableSegmentMath::add_coord_grad;
  using PortableSegmentMath::fill_taps;
  using PortableSegmentMath::interpolate;

  // 0 <= v < n, as a mask
  static PYDEFORM_AVX2_INLINE __m256i in_range(__m256i v, __m256i n) {
    return _mm256_and_si256(_mm256_cmpgt_epi32(v, _mm256_set1_epi32(-1)), _mm256_cmpgt_epi32(n, v));
  }

  // fill_taps, kLanes pixels at a time (count is a multiple of kLanes); the same values.
  template <bool Gradients>
  static PYDEFORM_AVX2_INLINE void fill_taps(const float* sx, const float* sy, int64_t H, int64_t W, int64_t count,
                                             Segment<float, int32_t>& s) {
    const __m256i h = _mm256_set1_epi32(static_cast<int32_t>(H)), w = _mm256_set1_epi32(static_cast<int32_t>(W));
    const __m256i minus_one = _mm256_set1_epi32(-1), one_i = _mm256_set1_epi32(1), zero_i = _mm256_setzero_si256();
    const __m256 one = _mm256_set1_ps(1.0f);
    for (int64_t p = 0; p < count; p += kLanes) {
      const __m256 x = _mm256_loadu_ps(sx + p), y = _mm256_loadu_ps(sy + p);
      __m256i x0 = _mm256_cvttps_epi32(x), y0 = _mm256_cvttps_epi32(y);
      // floor: one lower where the truncation rounded up (the mask is -1 there)
      x0 = _mm256_add_epi32(x0, _mm256_castps_si256(_mm256_cmp_ps(_mm256_cvtepi32_ps(x0), x, _CMP_GT_OQ)));
      y0 = _mm256_add_epi32(y0, _mm256_castps_si256(_mm256_cmp_ps(_mm256_cvtepi32_ps(y0), y, _CMP_GT_OQ)));
      const __m256 fx = _mm256_sub_ps(x, _mm256_cvtepi32_ps(x0)), fy = _mm256_sub_ps(y, _mm256_cvtepi32_ps(y0));
      if constexpr (Gradients) {
        _mm256_storeu_ps(s.fx + p, fx);
        _mm256_storeu_ps(s.fy + p, fy);
      }
      const __m256i defined = _mm256_xor_si256(
          _mm256_cmpeq_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s.defined + p)), zero_i), minus_one);
      const __m256i x1 = _mm256_add_epi32(x0, one_i), y1 = _mm256_add_epi32(y0, one_i);
      const __m256i in_x[2] = {in_range(x0, w), in_range(x1, w)};
      const __m256i in_y[2] = {_mm256_and_si256(defined, in_range(y0, h)), _mm256_and_si256(defined, in_range(y1, h))};
      const __m256i row[2] = {_mm256_mullo_epi32(y0, w), _mm256_mullo_epi32(y1, w)};
      const __m256i column[2] = {x0, x1};
      const __m256 wx[2] = {_mm256_sub_ps(one, fx), fx}, wy[2] = {_mm256_sub_ps(one, fy), fy};
      for (int k = 0; k < 4; ++k) {
        const __m256i read = _mm256_and_si256(in_x[k & 1], in_y[k >> 1]);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(s.read[k] + p), read);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(s.offset[k] + p),
                            _mm256_and_si256(_mm256_add_epi32(row[k >> 1], column[k & 1]), read));
        _mm256_storeu_ps(s.weight[k] + p,
                         _mm256_and_ps(_mm256_mul_ps(wx[k & 1], wy[k >> 1]), _mm256_castsi256_ps(read)));
      }
    }
  }

  // The four taps of pixels q .. q + kLanes - 1 in a plane (0 where not read).
  static PYDEFORM_AVX2_INLINE void gather(const float* plane, const __m256i offset[4], const __m256 read[4],
                                          __m256 v[4]) {
    for (int k = 0; k < 4; ++k) v[k] = _mm256_mask_i32gather_ps(_mm256_setzero_ps(), plane, offset[k], read[k], 4);
  }
  // Where every tap of the kLanes pixels is read (the image's interior, nearly all of a warp),
  // taps 0 and 1 (and 2 and 3) are neighbours in memory: one 8-byte load per pixel and row of
  // taps, and two shuffles, replace the gathers, which are slow on some CPUs (AMD). The loads
  // stay inside the plane since both taps of each pair are inside it.
  static PYDEFORM_AVX2_INLINE void load_pairs(const float* plane, const int32_t* offset, __m256& left, __m256& right) {
    __m128 pair[4];  // (left, right) of pixels 2l and 2l + 1
    for (int l = 0; l < 4; ++l) {
      const __m128 low = _mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(plane + offset[2 * l])));
      pair[l] = _mm_loadh_pi(low, reinterpret_cast<const __m64*>(plane + offset[2 * l + 1]));
    }
    const __m256 even = _mm256_set_m128(pair[2], pair[0]), odd = _mm256_set_m128(pair[3], pair[1]);
    left = _mm256_shuffle_ps(even, odd, _MM_SHUFFLE(2, 0, 2, 0));
    right = _mm256_shuffle_ps(even, odd, _MM_SHUFFLE(3, 1, 3, 1));
  }
  static PYDEFORM_AVX2_INLINE bool all_read(const __m256 read[4]) {
    const __m256 all = _mm256_and_ps(_mm256_and_ps(read[0], read[1]), _mm256_and_ps(read[2], read[3]));
    return _mm256_movemask_ps(all) == 0xFF;
  }
  // The four taps of pixels q .. q + kLanes - 1 in a plane (0 where not read).
  static PYDEFORM_AVX2_INLINE void taps(const float* plane, const Segment<float, int32_t>& s, int64_t q,
                                        bool interior, const __m256i offset[4], const __m256 read[4], __m256 v[4]) {
    if (interior) {
      load_pairs(plane, s.offset[0] + q, v[0], v[1]);
      load_pairs(plane, s.offset[2] + q, v[2], v[3]);
    } else {
      gather(plane, offset, read, v);
    }
  }

  static PYDEFORM_AVX2_INLINE void load_taps(const Segment<float, int32_t>& s, int64_t q, __m256i offset[4],
                                             __m256 read[4]) {
    for (int k = 0; k < 4; ++k) {
      offset[k] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s.offset[k] + q));
      read[k] = _mm256_castsi256_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s.read[k] + q)));
    }
  }

  // Pixel-major: the taps' offsets, masks and weights are loaded once for every channel.
  static PYDEFORM_AVX2_INLINE void interpolate(const float* x_image, int64_t in_plane, int64_t C,
                                               const Segment<float, int32_t>& s, float* dst, int64_t out_plane) {
    for (int64_t q = 0; q < s.n; q += kLanes) {
      __m256i offset[4];
      __m256 read[4], weight[4];
      load_taps(s, q, offset, read);
      for (int k = 0; k < 4; ++k) weight[k] = _mm256_loadu_ps(s.weight[k] + q);
      const bool interior = all_read(read);
      const int64_t lanes = std::min(kLanes, s.n - q);
      const __m256i store_mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(lanes)),
                                                    _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
      for (int64_t c = 0; c < C; ++c) {
        __m256 v[4];
        taps(x_image + c * in_plane, s, q, interior, offset, read, v);
        // The portable loop's sum in the order its AVX2 build contracts it, so both give the same bits.
        __m256 value = _mm256_mul_ps(weight[1], v[1]);
        value = _mm256_fmadd_ps(weight[0], v[0], value);
        value = _mm256_fmadd_ps(weight[2], v[2], value);
        value = _mm256_fmadd_ps(weight[3], v[3], value);
        float* out = dst + c * out_plane + q;
        if (lanes == kLanes) {
          _mm256_storeu_ps(out, value);
        } else {
          _mm256_maskstore_ps(out, store_mask, value);
        }
      }
    }
  }

  // Runs over whole vectors: g, gsx and gsy hold kLanes-padded segments (pixels past s.n read
  // no tap; what lands in their lanes is never used). Pixel-major: the taps' offsets and masks
  // are loaded once for the channels, and the planes' loads overlap.
  static PYDEFORM_AVX2_INLINE void add_coord_grad(const float* planes, int64_t in_plane, int64_t channels,
                                                  const Segment<float, int32_t>& s, const float (*g)[kSegment],
                                                  float* gsx, float* gsy) {
    const __m256 one = _mm256_set1_ps(1.0f);
    for (int64_t q = 0; q < s.n; q += kLanes) {
      __m256i offset[4];
      __m256 read[4];
      load_taps(s, q, offset, read);
      const bool interior = all_read(read);
      const __m256 fx = _mm256_loadu_ps(s.fx + q), fy = _mm256_loadu_ps(s.fy + q);
      const __m256 dsx = _mm256_loadu_ps(s.dsx + q), dsy = _mm256_loadu_ps(s.dsy + q);
      __m256 sum_x = _mm256_loadu_ps(gsx + q), sum_y = _mm256_loadu_ps(gsy + q);
      for (int64_t u = 0; u < channels; ++u) {
        __m256 v[4];
        taps(planes + u * in_plane, s, q, interior, offset, read, v);
        // bilinear_coord_grad
        const __m256 gx = _mm256_mul_ps(
            _mm256_fmadd_ps(fy, _mm256_sub_ps(v[3], v[2]), _mm256_mul_ps(_mm256_sub_ps(one, fy), _mm256_sub_ps(v[1], v[0]))),
            dsx);
        const __m256 gy = _mm256_mul_ps(
            _mm256_fmadd_ps(fx, _mm256_sub_ps(v[3], v[1]), _mm256_mul_ps(_mm256_sub_ps(one, fx), _mm256_sub_ps(v[2], v[0]))),
            dsy);
        const __m256 gq = _mm256_loadu_ps(g[u] + q);
        sum_x = _mm256_fmadd_ps(gq, gx, sum_x);
        sum_y = _mm256_fmadd_ps(gq, gy, sum_y);
      }
      _mm256_storeu_ps(gsx + q, sum_x);
      _mm256_storeu_ps(gsy + q, sum_y);
    }
  }
};
// For AVX-512 functions: the compiler vectorises the portable tap geometry 16 floats wide.
struct Avx512SegmentMath : Avx2SegmentMath {
  using PortableSegmentMath::fill_taps;
};
#endif

// Asks for the cache lines of a segment's taps in `planes` planes `plane` elements apart,
// before they are used. Neighbouring pixels share lines, so the loads of a loop over the
// segment would otherwise wait for one line after another (kLineStep pixels apart are at most
// a line apart when the warp does not magnify more than 2x; others are fetched on use).
constexpr int64_t kLineStep = 8;
template <typename T, typename A, typename I>
PYDEFORM_ALWAYS_INLINE void prefetch_segment(const T* first_plane, int64_t plane, int64_t planes, const Segment<A, I>& s,
                                             bool for_write) {
#if defined(__GNUC__)
  for (int64_t c = 0; c < planes; ++c) {
    const T* base = first_plane + c * plane;
    for (int64_t q = 0; q < s.n; q += kLineStep) {
      for (int k = 0; k < 4; k += 2) {  // the top and bottom rows of taps
        if (for_write) {
          __builtin_prefetch(base + s.offset[k][q], 1, 3);
        } else {
          __builtin_prefetch(base + s.offset[k][q], 0, 3);
        }
      }
    }
    const int64_t last = s.n - 1;
    __builtin_prefetch(base + s.offset[1][last], for_write ? 1 : 0, 3);
    __builtin_prefetch(base + s.offset[3][last], for_write ? 1 : 0, 3);
  }
#else
  (void)first_plane, (void)plane, (void)planes, (void)s, (void)for_write;
#endif
}

// Calls body(segment) for the segments of output rows [i0, i1) in order, and end_row(i) after
// each row's last. Each segment's taps are computed, and their lines asked for (prefetch), one
// segment ahead, so that they arrive while the previous segment is being worked on.
template <typename Math, bool Gradients, typename I, typename A, typename Prefetch, typename Body, typename EndRow>
PYDEFORM_ALWAYS_INLINE void for_each_segment(const A m[9], const HomographyGeometry<A>& g, int64_t i0, int64_t i1,
                                             int64_t Wo, Prefetch&& prefetch, Body&& body, EndRow&& end_row) {
  Segment<A, I> buffers[2];
  const int64_t per_row = (Wo + kSegment - 1) / kSegment, count = (i1 - i0) * per_row;
  const auto fill = [&](int64_t t) {
    Segment<A, I>& s = buffers[t & 1];
    const int64_t j0 = t % per_row * kSegment;
    fill_segment<Math, Gradients>(m, g, i0 + t / per_row, j0, std::min(kSegment, Wo - j0), s);
    prefetch(s);
  };
  if (count > 0) fill(0);
  for (int64_t t = 0; t < count; ++t) {
    if (t + 1 < count) fill(t + 1);
    body(buffers[t & 1]);
    if (t % per_row == per_row - 1) end_row(i0 + t / per_row);
  }
}

// Output rows per forward task: a few consecutive rows, which share input rows.
constexpr int64_t kForwardRows = 4;

// out[b, :, i0 .. i1 - 1, :], segment by segment.
template <typename Math, typename T, typename I>
PYDEFORM_ALWAYS_INLINE void forward_rows(const Problem<T>& problem, T* out, int64_t b, int64_t i0, int64_t i1) {
  using A = acc_t<T>;
  const Problem<T> p = problem;  // a local copy: stores to out cannot alias it, so it stays in registers
  A m[9];
  load_homography(p.homography(b), m);
  const int64_t in_plane = p.H * p.W, out_plane = p.Ho * p.Wo;
  const T* x_image = p.x_image(b);
  T* out_image = out + b * p.C * out_plane;
  for_each_segment<Math, false, I>(
      m, p.g, i0, i1, p.Wo, [&](const Segment<A, I>& s) { prefetch_segment(x_image, in_plane, p.C, s, false); },
      [&](const Segment<A, I>& s) {
        Math::interpolate(x_image, in_plane, p.C, s, out_image + s.i * p.Wo + s.j0, out_plane);
      },
      [](int64_t) {});
}

// add_homography_grad over a segment: adds the d loss / d h terms of its defined pixels to
// grad[9], given d loss / d (sx, sy) per pixel. The sums vectorise (omp simd: a fixed order,
// so still the same bits on every run).
template <typename A, typename I>
PYDEFORM_ALWAYS_INLINE void add_segment_homography_grad(const HomographyGeometry<A>& g, const Segment<A, I>& s,
                                                        const A* gsx, const A* gsy, A grad[9]) {
  A t0 = 0, t1 = 0, t2 = 0, t3 = 0, t4 = 0, t5 = 0, t6 = 0, t7 = 0, t8 = 0;
  const A py = s.py;
#pragma omp simd reduction(+ : t0, t1, t2, t3, t4, t5, t6, t7, t8)
  for (int64_t q = 0; q < s.n; ++q) {
    A gu, gv, gw;
    // An undefined pixel passes no gradient, even a NaN one.
    homography_uvw_grad(g, s.su[q], s.sv[q], s.inv_w[q], s.defined[q] ? gsx[q] : A(0),
                        s.defined[q] ? gsy[q] : A(0), gu, gv, gw);
    t0 += gu * s.px[q], t1 += gu * py, t2 += gu;
    t3 += gv * s.px[q], t4 += gv * py, t5 += gv;
    t6 += gw * s.px[q], t7 += gw * py, t8 += gw;
  }
  grad[0] += t0, grad[1] += t1, grad[2] += t2, grad[3] += t3, grad[4] += t4;
  grad[5] += t5, grad[6] += t6, grad[7] += t7, grad[8] += t8;
}

// dst[q] = row[q * stride], q < n. A contiguous row and an expanded one (stride 0, the gradient
// of out.sum()) take loops that vectorise; the strided loop does not.
template <typename T, typename A>
PYDEFORM_ALWAYS_INLINE void load_grad_row(const T* row, int64_t stride, int64_t n, A* dst) {
  if (stride == 1) {
    for (int64_t q = 0; q < n; ++q) dst[q] = A(load(row + q));
  } else if (stride == 0) {
    std::fill_n(dst, n, A(load(row)));
  } else {
    for (int64_t q = 0; q < n; ++q) dst[q] = A(load(row + q * stride));
  }
}

// Backward task (x image bx, channel block `block` of `blocks`): zero-fills grad_x[bx, block's
// channels], then adds the gradients of every output pixel that reads image bx to them (the
// task owns those planes) and, when partials is given, writes partials[(b * blocks + block) * 9
// + q]: the grad_h terms of batch item b over the block's channels, summed over each row (in
// the accumulation type) and then over the rows (in double).
template <typename Math, typename T, typename I>
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
  if (grad_x_image) std::fill(grad_x_image + c0 * in_plane, grad_x_image + c1 * in_plane, A(0));
  // g[u]: the output gradient of channel c + u of the segment (padded: see add_coord_grad).
  A g[kChannelGroup][kSegment] = {}, gsx[kSegment], gsy[kSegment];
  for (int64_t k = 0; k < per_image; ++k) {
    const int64_t b = p.Bx == 1 ? k : bx;
    A m[9];
    load_homography(p.homography(b), m);
    double sum[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
    A row_sum[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
    const auto prefetch = [&](const Segment<A, I>& s) {
      if (partials) prefetch_segment(x_image + c0 * in_plane, in_plane, c1 - c0, s, false);
      if (grad_x_image) prefetch_segment(grad_x_image + c0 * in_plane, in_plane, c1 - c0, s, true);
    };
    const auto segment = [&](const Segment<A, I>& s) {
      std::fill_n(gsx, padded_size(s.n), A(0));
      std::fill_n(gsy, padded_size(s.n), A(0));
      for (int64_t c = c0; c < c1; c += kChannelGroup) {
        const int64_t group = std::min(kChannelGroup, c1 - c);
        for (int64_t u = 0; u < group; ++u)
          load_grad_row(grad_out.pixel(b, s.i, s.j0) + (c + u) * grad_out.stride_c, grad_out.stride_j, s.n, g[u]);
        // d loss / d (sx, sy), summed over the channels in order
        if (partials) Math::add_coord_grad(x_image + c * in_plane, in_plane, group, s, g, gsx, gsy);
        if (grad_x_image) {
          // The scatter, pixel by pixel and tap by tap in order in each plane. The channels of
          // the group are interleaved: neighbouring pixels add to the same taps, and the
          // read-modify-write chains of different planes then overlap instead of waiting.
          A* plane = grad_x_image + c * in_plane;
          for (int64_t q = 0; q < s.n; ++q) {
            for (int t = 0; t < 4; ++t) {
              if (!s.read[t][q]) continue;
              A* tap = plane + s.offset[t][q];
              const A weight = s.weight[t][q];
              for (int64_t u = 0; u < group; ++u) tap[u * in_plane] += g[u][q] * weight;
            }
          }
        }
      }
      if (partials) add_segment_homography_grad(p.g, s, gsx, gsy, row_sum);
    };
    const auto end_row = [&](int64_t) {
      for (int q = 0; q < 9; ++q) sum[q] += row_sum[q], row_sum[q] = A(0);
    };
    for_each_segment<Math, true, I>(m, p.g, int64_t(0), p.Ho, p.Wo, prefetch, segment, end_row);
    if (partials)
      for (int q = 0; q < 9; ++q) partials[(b * blocks + block) * 9 + q] = A(sum[q]);
  }
}

template <typename T, typename I>
void forward_rows_portable(const Problem<T>& p, T* out, int64_t b, int64_t i0, int64_t i1) {
  forward_rows<PortableSegmentMath, T, I>(p, out, b, i0, i1);
}
template <typename T, typename I>
void backward_task_portable(const Problem<T>& p, const StridedGrad<T>& grad, acc_t<T>* grad_x, acc_t<T>* partials,
                            int64_t bx, int64_t block, int64_t blocks) {
  backward_task<PortableSegmentMath, T, I>(p, grad, grad_x, partials, bx, block, blocks);
}

#if PYDEFORM_X86_DISPATCH
// The same bodies compiled for AVX2 + FMA, chosen at run time so one build still runs on any
// x86-64 CPU. flatten inlines the shared math, so that it is compiled for AVX2 too.
#define PYDEFORM_AVX2 __attribute__((target("avx2,fma"), flatten))
template <typename T, typename I>
PYDEFORM_AVX2 void forward_rows_avx2(const Problem<T>& p, T* out, int64_t b, int64_t i0, int64_t i1) {
  forward_rows<Avx2SegmentMath, T, I>(p, out, b, i0, i1);
}
template <typename T, typename I>
PYDEFORM_AVX2 void backward_task_avx2(const Problem<T>& p, const StridedGrad<T>& grad, acc_t<T>* grad_x,
                                      acc_t<T>* partials, int64_t bx, int64_t block, int64_t blocks) {
  backward_task<Avx2SegmentMath, T, I>(p, grad, grad_x, partials, bx, block, blocks);
}
// Once more for AVX-512, where the CPU has it: the same code, but the loops the compiler
// vectorises itself (the projection, the homography gradient sums) run 16 floats wide. The
// intrinsics stay AVX2. The same operations in the same order, so the same bits, except in
// grad_h, whose vector sums then add 16 partial sums instead of 8 (still the same bits on every
// run on one machine).
#define PYDEFORM_AVX512 \
  __attribute__((target("avx2,fma,avx512f,avx512vl,avx512dq,avx512bw,prefer-vector-width=512"), flatten))
template <typename T, typename I>
PYDEFORM_AVX512 void forward_rows_avx512(const Problem<T>& p, T* out, int64_t b, int64_t i0, int64_t i1) {
  forward_rows<Avx512SegmentMath, T, I>(p, out, b, i0, i1);
}
template <typename T, typename I>
PYDEFORM_AVX512 void backward_task_avx512(const Problem<T>& p, const StridedGrad<T>& grad, acc_t<T>* grad_x,
                                          acc_t<T>* partials, int64_t bx, int64_t block, int64_t blocks) {
  backward_task<Avx512SegmentMath, T, I>(p, grad, grad_x, partials, bx, block, blocks);
}
#endif

// 32-bit tap offsets where a plane has at most 2^30 elements (Segment).
inline bool small_planes(int64_t H, int64_t W) { return H * W <= (int64_t(1) << 30); }

template <typename T, typename I> auto pick_forward_rows() {
#if PYDEFORM_X86_DISPATCH
  if (cpu_isa() == CpuIsa::Avx512) return &forward_rows_avx512<T, I>;
  if (cpu_isa() >= CpuIsa::Avx2) return &forward_rows_avx2<T, I>;
#endif
  return &forward_rows_portable<T, I>;
}
template <typename T> auto pick_forward_rows(int64_t H, int64_t W) {
  return small_planes(H, W) ? pick_forward_rows<T, int32_t>() : pick_forward_rows<T, int64_t>();
}
template <typename T, typename I> auto pick_backward_task() {
#if PYDEFORM_X86_DISPATCH
  if (cpu_isa() == CpuIsa::Avx512) return &backward_task_avx512<T, I>;
  if (cpu_isa() >= CpuIsa::Avx2) return &backward_task_avx2<T, I>;
#endif
  return &backward_task_portable<T, I>;
}
template <typename T> auto pick_backward_task(int64_t H, int64_t W) {
  return small_planes(H, W) ? pick_backward_task<T, int32_t>() : pick_backward_task<T, int64_t>();
}

// Tasks of kForwardRows output rows, handed out as threads finish (the output does not depend on
// which thread computes it).
template <typename T> void forward_tasks(const Problem<T>& p, T* out, int num_threads) {
  const auto rows = pick_forward_rows<T>(p.H, p.W);
  const int64_t per_item = (p.Ho + kForwardRows - 1) / kForwardRows;
  parallel_for_dynamic(p.batch() * per_item, num_threads, [&](int64_t t) {
    const int64_t i0 = t % per_item * kForwardRows;
    rows(p, out, t / per_item, i0, std::min(i0 + kForwardRows, p.Ho));
  });
}

// One task per (x image, channel block), a partition fixed by the sizes: grad_x and grad_h are
// bit-identical on every run whatever the thread count, so the CPU backward is always
// deterministic. grad_h adds the tasks' partial sums in (batch item, block) order.
template <typename T>
void backward_tasks(const Problem<T>& p, const StridedGrad<T>& grad, acc_t<T>* grad_x, acc_t<T>* grad_h,
                    acc_t<T>* partials, int num_threads) {
  const int64_t B = p.batch(), blocks = homography_cpu_channel_blocks(p.Bx, p.C);
  const auto task = pick_backward_task<T>(p.H, p.W);
  parallel_for_dynamic(p.Bx * blocks, num_threads, [&](int64_t t) {
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
    forward_tasks(p, reinterpret_cast<T*>(out), num_threads);
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
