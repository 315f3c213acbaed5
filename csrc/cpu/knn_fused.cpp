#include "knn_fused.h"

#include "simd_dot.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define TG_HAVE_FUSED_PATH 1
#else
#define TG_HAVE_FUSED_PATH 0
#endif

namespace torch_geometry {
namespace cpu {

#if TG_HAVE_FUSED_PATH

namespace {

// Bytes of candidate panels one pass over a task's rows reads: they stay in L2 while every
// query block of the task is tested against them.
constexpr int64_t kChunkBytes = 256 * 1024;

// A row's best candidates are kept as 64-bit keys
//   key = (order-preserving bits of the float score) << 32 | (0xffffffff - j),
// so "larger score, then smaller index" is one integer comparison. Key 0 is an empty slot,
// below every real key.
inline uint32_t ordered_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

inline float score_of(uint64_t key) {
  uint32_t u = static_cast<uint32_t>(key >> 32);
  u = (u & 0x80000000u) ? (u & 0x7fffffffu) : ~u;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline uint64_t make_key(float score, int64_t j) {
  return (static_cast<uint64_t>(ordered_bits(score)) << 32) |
         (0xffffffffu - static_cast<uint32_t>(j));
}

inline int64_t index_of(uint64_t key) {
  return key == 0 ? -1 : static_cast<int64_t>(0xffffffffu - static_cast<uint32_t>(key));
}

// A row's keys: `cap` slots (kk rounded up to a multiple of 8) sorted ascending, worst
// first, then one sentinel slot holding the largest key; rows are `stride` = cap + 8 apart.
// The row's kk best are the last kk slots; the ones below them are spare. Inserting a key
// better than slot cap - kk moves the worse keys down one slot and drops slot 0: with the
// sentinel, slot p becomes max(h[p], min(h[p + 1], key)) for every p, which needs no
// branch (the AVX-512 path does 8 slots per instruction). The sorted array replaced a
// binary heap whose sift-down mispredicted at nearly every level: the pushes, not the
// products, were the larger cost.
struct Rows {
  int64_t kk, cap, stride;
  explicit Rows(int64_t kk_) : kk(kk_), cap((kk_ + 7) / 8 * 8), stride(cap + 8) {}
  // The score a candidate must beat to be worth an insertion (-inf while slots are free).
  float threshold(const uint64_t* h) const {
    const uint64_t worst = h[cap - kk];
    return worst == 0 ? -std::numeric_limits<float>::infinity() : score_of(worst);
  }
};

inline void insert_scalar(uint64_t* h, int64_t cap, uint64_t key) {
  int64_t pos = 0;
  while (pos + 1 < cap && h[pos + 1] < key) {
    h[pos] = h[pos + 1];
    ++pos;
  }
  h[pos] = key;
}

__attribute__((target("avx512f"))) inline void insert_avx512(uint64_t* h, int64_t cap,
                                                             uint64_t key) {
  const __m512i kv = _mm512_set1_epi64(static_cast<long long>(key));
  // Slots [8v, 8v + 8) are written after every load that reads them (the loads of vector v
  // reach slot 8v + 8, stored by vector v + 1 later).
  for (int64_t v = 0; v < cap; v += 8) {
    const __m512i a = _mm512_loadu_si512(h + v);
    const __m512i up = _mm512_loadu_si512(h + v + 1);
    _mm512_storeu_si512(h + v, _mm512_maskz_max_epu64(0xff, a, _mm512_maskz_min_epu64(0xff, up, kv)));
  }
}

// What one block of R query rows needs to scan panels.
struct Block {
  const float* q;      // R x d query rows, row-major (zero rows past the end)
  int64_t i0;          // index of the first row
  int rows;            // real rows (<= R)
  float* thr;          // R thresholds (+inf: invalid or padding row, never takes a candidate)
  uint64_t* keys;      // the block's rows (Rows layout)
  const Rows* layout;
  int64_t n;
  const char* valid;
};

// The lanes of mask `m` (bit l: lane l of candidates j0 + l passed row r's threshold) go
// into the row's keys; the threshold follows.
template <void (*Insert)(uint64_t*, int64_t, uint64_t)>
inline void take(const Block& b, int r, uint32_t m, const float* v, int64_t j0) {
  const int64_t i = b.i0 + r;
  const Rows& L = *b.layout;
  uint64_t* h = b.keys + r * L.stride;
  while (m) {
    const int l = __builtin_ctz(m);
    m &= m - 1;
    const int64_t j = j0 + l;
    if (j == i || j >= b.n || !b.valid[j]) continue;
    const uint64_t key = make_key(v[l], j);
    if (key > h[L.cap - L.kk]) Insert(h, L.cap, key);
  }
  b.thr[r] = L.threshold(h);
}

// Every row of a micro-tile with lanes past its threshold (scores out: R x W).
template <void (*Insert)(uint64_t*, int64_t, uint64_t), int W>
inline void take_all(const Block& b, const uint32_t* mask, const float* out, int64_t j0) {
  for (int r = 0; r < b.rows; ++r) {
    if (mask[r]) take<Insert>(b, r, mask[r], out + r * W, j0);
  }
}

// The micro-kernels: R query rows against panels [p0, p1) of W candidates each (P: d x W
// per panel, candidate-minor; C: W offsets per panel). Scores stay in registers; a lane
// group is stored and taken only when some lane reaches its row's threshold.
//
// AVX2 + FMA: W = 16 (two 8-float vectors), R = 6; 12 accumulators, two panel vectors and
// one broadcast fill 15 of the 16 registers.
struct Avx2Tile {
  static constexpr void (*Insert)(uint64_t*, int64_t, uint64_t) = insert_scalar;
  static constexpr int W = 16;
  static constexpr int R = 6;
  __attribute__((target("avx2,fma"))) static void scan(const Block& b, const float* P,
                                                       const float* C, int64_t d, int64_t p0,
                                                       int64_t p1) {
    alignas(32) float out[R * W];
    for (int64_t p = p0; p < p1; ++p) {
      const float* pp = P + p * d * W;
      __m256 acc0[R], acc1[R];
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        acc0[r] = _mm256_setzero_ps();
        acc1[r] = _mm256_setzero_ps();
      }
      for (int64_t t = 0; t < d; ++t) {
        const __m256 b0 = _mm256_loadu_ps(pp + t * W);
        const __m256 b1 = _mm256_loadu_ps(pp + t * W + 8);
#pragma GCC unroll 16
        for (int r = 0; r < R; ++r) {
          const __m256 av = _mm256_broadcast_ss(b.q + r * d + t);
          acc0[r] = _mm256_fmadd_ps(av, b0, acc0[r]);
          acc1[r] = _mm256_fmadd_ps(av, b1, acc1[r]);
        }
      }
      const __m256 c0 = _mm256_loadu_ps(C + p * W);
      const __m256 c1 = _mm256_loadu_ps(C + p * W + 8);
      uint32_t mask[R], any = 0;
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        const __m256 v0 = _mm256_add_ps(acc0[r], c0);
        const __m256 v1 = _mm256_add_ps(acc1[r], c1);
        const __m256 th = _mm256_set1_ps(b.thr[r]);
        mask[r] =
            static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(v0, th, _CMP_GE_OQ))) |
            (static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(v1, th, _CMP_GE_OQ)))
             << 8);
        any |= mask[r];
        _mm256_store_ps(out + r * W, v0);
        _mm256_store_ps(out + r * W + 8, v1);
      }
      if (any) take_all<Insert, W>(b, mask, out, p * W);
    }
  }
};

// AVX-512: W = 32 (two 16-float vectors), R = 12; 24 accumulators of the 32 registers.
struct Avx512Tile {
  static constexpr void (*Insert)(uint64_t*, int64_t, uint64_t) = insert_avx512;
  static constexpr int W = 32;
  static constexpr int R = 12;
  __attribute__((target("avx512f"))) static void scan(const Block& b, const float* P,
                                                      const float* C, int64_t d, int64_t p0,
                                                      int64_t p1) {
    alignas(64) float out[R * W];
    for (int64_t p = p0; p < p1; ++p) {
      const float* pp = P + p * d * W;
      __m512 acc0[R], acc1[R];
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        acc0[r] = _mm512_setzero_ps();
        acc1[r] = _mm512_setzero_ps();
      }
      for (int64_t t = 0; t < d; ++t) {
        const __m512 b0 = _mm512_loadu_ps(pp + t * W);
        const __m512 b1 = _mm512_loadu_ps(pp + t * W + 16);
#pragma GCC unroll 16
        for (int r = 0; r < R; ++r) {
          const __m512 av = _mm512_set1_ps(b.q[r * d + t]);
          acc0[r] = _mm512_fmadd_ps(av, b0, acc0[r]);
          acc1[r] = _mm512_fmadd_ps(av, b1, acc1[r]);
        }
      }
      const __m512 c0 = _mm512_loadu_ps(C + p * W);
      const __m512 c1 = _mm512_loadu_ps(C + p * W + 16);
      uint32_t mask[R], any = 0;
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        const __m512 v0 = _mm512_add_ps(acc0[r], c0);
        const __m512 v1 = _mm512_add_ps(acc1[r], c1);
        const __m512 th = _mm512_set1_ps(b.thr[r]);
        mask[r] = static_cast<uint32_t>(_mm512_cmp_ps_mask(v0, th, _CMP_GE_OQ)) |
                  (static_cast<uint32_t>(_mm512_cmp_ps_mask(v1, th, _CMP_GE_OQ)) << 16);
        any |= mask[r];
        _mm512_store_ps(out + r * W, v0);
        _mm512_store_ps(out + r * W + 16, v1);
      }
      if (any) take_all<Insert, W>(b, mask, out, p * W);
    }
  }
};

template <typename Tile>
void select_impl(const float* x, int64_t n, int64_t d, const float* a, const float* c,
                 const char* valid, int64_t kk, double* heap_s, int64_t* heap_i) {
  constexpr int W = Tile::W;
  constexpr int R = Tile::R;
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  constexpr float kPosInf = std::numeric_limits<float>::infinity();
  // Panels of W candidates, candidate-minor: panel p holds y_j = a_j x_j for
  // j in [p W, p W + W), value t of lane l at P[(p d + t) W + l]. Lanes past n, and invalid
  // candidates, score -inf (take() refuses them should a row's threshold be -inf).
  const int64_t panels = (n + W - 1) / W;
  std::vector<float> P(static_cast<size_t>(panels * d * W), 0.0f);
  std::vector<float> C(static_cast<size_t>(panels * W), kNegInf);
  at::parallel_for(0, panels, 16, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      for (int l = 0; l < W; ++l) {
        const int64_t j = p * W + l;
        if (j >= n || !valid[j]) continue;
        C[p * W + l] = c[j];
        for (int64_t t = 0; t < d; ++t) {
          P[(p * d + t) * W + l] = a[j] * x[j * d + t];
        }
      }
    }
  });
  const Rows layout(kk);
  std::vector<uint64_t> keys(static_cast<size_t>(n * layout.stride), 0);
  at::parallel_for(0, n, 1024, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      std::fill_n(keys.data() + i * layout.stride + layout.cap, 8,
                  std::numeric_limits<uint64_t>::max());
    }
  });
  const int64_t chunk = std::max<int64_t>(1, kChunkBytes / (d * W * 4));
  const int64_t blocks = (n + R - 1) / R;
  at::parallel_for(0, blocks, 4, [&](int64_t b0, int64_t b1) {
    std::vector<float> q(static_cast<size_t>(R * d));
    float thr[R];
    for (int64_t p0 = 0; p0 < panels; p0 += chunk) {
      const int64_t p1 = std::min(panels, p0 + chunk);
      for (int64_t blk = b0; blk < b1; ++blk) {
        Block b{q.data(), blk * R, static_cast<int>(std::min<int64_t>(R, n - blk * R)), thr,
                keys.data() + blk * R * layout.stride, &layout, n, valid};
        std::fill(q.begin(), q.end(), 0.0f);
        std::copy(x + b.i0 * d, x + (b.i0 + b.rows) * d, q.begin());
        for (int r = 0; r < R; ++r) {
          thr[r] = r < b.rows && valid[b.i0 + r] ? layout.threshold(b.keys + r * layout.stride)
                                                 : kPosInf;
        }
        Tile::scan(b, P.data(), C.data(), d, p0, p1);
      }
    }
  });
  // The kk best of each row, as RowHeap slots (any order: the caller rescores them all).
  at::parallel_for(0, n, 256, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const uint64_t* h = keys.data() + i * layout.stride + layout.cap - kk;
      for (int64_t l = 0; l < kk; ++l) {
        heap_i[i * kk + l] = index_of(h[l]);
        heap_s[i * kk + l] = h[l] == 0 ? -std::numeric_limits<double>::infinity()
                                       : static_cast<double>(score_of(h[l]));
      }
    }
  });
}

// ATEN_CPU_CAPABILITY caps the instructions as it caps ATen's own kernels: "default" turns
// the fused selection off (the tiled search runs), "avx2" keeps it to its AVX2 kernel.
std::string capability_cap() {
  const char* v = std::getenv("ATEN_CPU_CAPABILITY");
  std::string s = v == nullptr ? "" : v;
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char ch) { return std::tolower(ch); });
  return s;
}

// The kernels this process may run, decided on first use (not at load: simd_dot's own
// detection, which decides AVX2 + FMA for both, is another file's static): AVX-512F only
// where the AVX2 kernel runs too, each capped by ATEN_CPU_CAPABILITY.
struct Kernels {
  bool avx2;
  bool avx512;
};

const Kernels& kernels() {
  static const Kernels k = [] {
    const std::string cap = capability_cap();
    const bool avx2 = simd_dot_uses_avx2() && cap != "default";
    __builtin_cpu_init();
    return Kernels{avx2, avx2 && __builtin_cpu_supports("avx512f") && cap != "avx2"};
  }();
  return k;
}

} // namespace

bool fused_select_available() {
  return kernels().avx2;
}

int64_t fused_max_dim() {
  return kernels().avx512 ? 256 : 128;
}

void fused_select(const float* x, int64_t n, int64_t d, const float* a, const float* c,
                  const char* valid, int64_t kk, double* heap_s, int64_t* heap_i, FusedIsa isa) {
  TORCH_CHECK(kernels().avx2, "fused_select: this CPU lacks AVX2 + FMA");
  TORCH_CHECK(n < 0xffffffffLL, "fused_select: ", n, " points, at most 2^32 - 2 fit a key");
  if (kernels().avx512 && isa == FusedIsa::Best) {
    select_impl<Avx512Tile>(x, n, d, a, c, valid, kk, heap_s, heap_i);
  } else {
    select_impl<Avx2Tile>(x, n, d, a, c, valid, kk, heap_s, heap_i);
  }
}

#else  // not x86-64: knn_search keeps its tiled GEMM search

bool fused_select_available() {
  return false;
}

int64_t fused_max_dim() {
  return 0;
}

void fused_select(const float*, int64_t, int64_t, const float*, const float*, const char*,
                  int64_t, double*, int64_t*, FusedIsa) {
  TORCH_CHECK(false, "fused_select: not built for this CPU");
}

#endif

} // namespace cpu
} // namespace torch_geometry
