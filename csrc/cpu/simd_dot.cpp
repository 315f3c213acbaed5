#include "simd_dot.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define TG_HAVE_AVX2_PATH 1
#else
#define TG_HAVE_AVX2_PATH 0
#endif

namespace torch_geometry {
namespace cpu {

namespace {

// ---- portable version: 8 independent lanes per row (vectorisable without reassociation),
// summed in a fixed order.
template <typename T, bool Dist>
void many_portable(const T* x, const T* const* rows, int m, int64_t d, T* out) {
  for (int a = 0; a < m; ++a) {
    const T* y = rows[a];
    T acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t j = 0;
    for (; j + 8 <= d; j += 8) {
      for (int l = 0; l < 8; ++l) {
        const T v = Dist ? x[j + l] - y[j + l] : x[j + l];
        acc[l] += v * (Dist ? v : y[j + l]);
      }
    }
    T s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; j < d; ++j) {
      const T v = Dist ? x[j] - y[j] : x[j];
      s += v * (Dist ? v : y[j]);
    }
    out[a] = s;
  }
}

#if TG_HAVE_AVX2_PATH

// ---- AVX2 + FMA: R rows at a time against x (loaded once per chunk), two accumulators per
// row. The instantiations for R = 4 and R = 1 run the same operations per row.
template <int R, bool Dist>
__attribute__((target("avx2,fma"))) inline void block_f32(const float* x, const float* const* rows,
                                                          int64_t d, float* out) {
  __m256 acc0[R], acc1[R];
  for (int r = 0; r < R; ++r) {
    acc0[r] = _mm256_setzero_ps();
    acc1[r] = _mm256_setzero_ps();
  }
  int64_t j = 0;
  for (; j + 16 <= d; j += 16) {
    const __m256 x0 = _mm256_loadu_ps(x + j);
    const __m256 x1 = _mm256_loadu_ps(x + j + 8);
    for (int r = 0; r < R; ++r) {
      __m256 y0 = _mm256_loadu_ps(rows[r] + j);
      __m256 y1 = _mm256_loadu_ps(rows[r] + j + 8);
      if (Dist) {
        y0 = _mm256_sub_ps(x0, y0);
        y1 = _mm256_sub_ps(x1, y1);
        acc0[r] = _mm256_fmadd_ps(y0, y0, acc0[r]);
        acc1[r] = _mm256_fmadd_ps(y1, y1, acc1[r]);
      } else {
        acc0[r] = _mm256_fmadd_ps(x0, y0, acc0[r]);
        acc1[r] = _mm256_fmadd_ps(x1, y1, acc1[r]);
      }
    }
  }
  if (j + 8 <= d) {
    const __m256 x0 = _mm256_loadu_ps(x + j);
    for (int r = 0; r < R; ++r) {
      __m256 y0 = _mm256_loadu_ps(rows[r] + j);
      if (Dist) {
        y0 = _mm256_sub_ps(x0, y0);
        acc0[r] = _mm256_fmadd_ps(y0, y0, acc0[r]);
      } else {
        acc0[r] = _mm256_fmadd_ps(x0, y0, acc0[r]);
      }
    }
    j += 8;
  }
  for (int r = 0; r < R; ++r) {
    const __m256 s8 = _mm256_add_ps(acc0[r], acc1[r]);
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    s4 = _mm_add_ss(s4, _mm_shuffle_ps(s4, s4, 1));
    float s = _mm_cvtss_f32(s4);
    const float* y = rows[r];
    for (int64_t t = j; t < d; ++t) {
      const float v = Dist ? x[t] - y[t] : x[t];
      s += v * (Dist ? v : y[t]);
    }
    out[r] = s;
  }
}

template <int R, bool Dist>
__attribute__((target("avx2,fma"))) inline void block_f64(const double* x, const double* const* rows,
                                                          int64_t d, double* out) {
  __m256d acc0[R], acc1[R];
  for (int r = 0; r < R; ++r) {
    acc0[r] = _mm256_setzero_pd();
    acc1[r] = _mm256_setzero_pd();
  }
  int64_t j = 0;
  for (; j + 8 <= d; j += 8) {
    const __m256d x0 = _mm256_loadu_pd(x + j);
    const __m256d x1 = _mm256_loadu_pd(x + j + 4);
    for (int r = 0; r < R; ++r) {
      __m256d y0 = _mm256_loadu_pd(rows[r] + j);
      __m256d y1 = _mm256_loadu_pd(rows[r] + j + 4);
      if (Dist) {
        y0 = _mm256_sub_pd(x0, y0);
        y1 = _mm256_sub_pd(x1, y1);
        acc0[r] = _mm256_fmadd_pd(y0, y0, acc0[r]);
        acc1[r] = _mm256_fmadd_pd(y1, y1, acc1[r]);
      } else {
        acc0[r] = _mm256_fmadd_pd(x0, y0, acc0[r]);
        acc1[r] = _mm256_fmadd_pd(x1, y1, acc1[r]);
      }
    }
  }
  if (j + 4 <= d) {
    const __m256d x0 = _mm256_loadu_pd(x + j);
    for (int r = 0; r < R; ++r) {
      __m256d y0 = _mm256_loadu_pd(rows[r] + j);
      if (Dist) {
        y0 = _mm256_sub_pd(x0, y0);
        acc0[r] = _mm256_fmadd_pd(y0, y0, acc0[r]);
      } else {
        acc0[r] = _mm256_fmadd_pd(x0, y0, acc0[r]);
      }
    }
    j += 4;
  }
  for (int r = 0; r < R; ++r) {
    const __m256d s4 = _mm256_add_pd(acc0[r], acc1[r]);
    __m128d s2 = _mm_add_pd(_mm256_castpd256_pd128(s4), _mm256_extractf128_pd(s4, 1));
    s2 = _mm_add_sd(s2, _mm_unpackhi_pd(s2, s2));
    double s = _mm_cvtsd_f64(s2);
    const double* y = rows[r];
    for (int64_t t = j; t < d; ++t) {
      const double v = Dist ? x[t] - y[t] : x[t];
      s += v * (Dist ? v : y[t]);
    }
    out[r] = s;
  }
}

template <bool Dist>
__attribute__((target("avx2,fma"))) void many_avx2(const float* x, const float* const* rows, int m,
                                                   int64_t d, float* out) {
  int a = 0;
  for (; a + 4 <= m; a += 4) {
    block_f32<4, Dist>(x, rows + a, d, out + a);
  }
  for (; a < m; ++a) {
    block_f32<1, Dist>(x, rows + a, d, out + a);
  }
}

template <bool Dist>
__attribute__((target("avx2,fma"))) void many_avx2(const double* x, const double* const* rows, int m,
                                                   int64_t d, double* out) {
  int a = 0;
  for (; a + 4 <= m; a += 4) {
    block_f64<4, Dist>(x, rows + a, d, out + a);
  }
  for (; a < m; ++a) {
    block_f64<1, Dist>(x, rows + a, d, out + a);
  }
}

bool detect_avx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

const bool kUseAvx2 = detect_avx2();

#endif

template <bool Dist, typename T>
inline void many(const T* x, const T* const* rows, int m, int64_t d, T* out) {
#if TG_HAVE_AVX2_PATH
  if (kUseAvx2) {
    many_avx2<Dist>(x, rows, m, d, out);
    return;
  }
#endif
  many_portable<T, Dist>(x, rows, m, d, out);
}

} // namespace

void dot_many(const float* x, const float* const* rows, int m, int64_t d, float* out) {
  many<false>(x, rows, m, d, out);
}
void dot_many(const double* x, const double* const* rows, int m, int64_t d, double* out) {
  many<false>(x, rows, m, d, out);
}
void sqdist_many(const float* x, const float* const* rows, int m, int64_t d, float* out) {
  many<true>(x, rows, m, d, out);
}
void sqdist_many(const double* x, const double* const* rows, int m, int64_t d, double* out) {
  many<true>(x, rows, m, d, out);
}

bool simd_dot_uses_avx2() {
#if TG_HAVE_AVX2_PATH
  return kUseAvx2;
#else
  return false;
#endif
}

} // namespace cpu
} // namespace torch_geometry
