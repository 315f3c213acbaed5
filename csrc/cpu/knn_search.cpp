#include "knn_search.h"

#include "blas_threads.h"
#include "knn_fused.h"
#include "simd_dot.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <limits>

namespace torch_geometry {
namespace cpu {

namespace {

// Tile edge: a 2048 x 2048 float tile is 16 MiB, large enough for GEMM to run near peak,
// small enough to stay far from N x N.
constexpr int64_t kBlock = 2048;
// Columns (queries) one task handles in the transposed pass: it reads that many consecutive
// floats of every tile row (contiguous, prefetchable) and keeps those queries' thresholds
// in a local array. Up to kMaxColumnChunk, fewer when there are many threads to feed. (A
// chunk of 16 columns, one cache line per 8 KiB row, crossed a page per read and left the
// pass waiting on memory.)
constexpr int64_t kMaxColumnChunk = 256;
// Scores formed and tested together before any heap is touched.
constexpr int64_t kLane = 16;

template <typename scalar_t>
void rescore_and_emit(const PreparedPoints& pts, Kernel kernel, int64_t k, int64_t kk,
                      const std::vector<int64_t>& heap_i, at::Tensor& index, at::Tensor& score);

template <typename scalar_t>
void knn_search_impl(const PreparedPoints& pts, Kernel kernel, int64_t k, SearchEngine engine,
                     at::Tensor& index, at::Tensor& score) {
  const at::Tensor& x = pts.x;
  const int64_t n = x.size(0);
  const char* valid = pts.valid.data();
  const bool cosine = kernel == Kernel::Cosine;
  // Per candidate j, the score of the pair is  a[j] * dot + c[j]  up to terms that depend
  // only on the query (which do not change its ranking):
  //   cosine:   dot / ||x_j||              (the 1 / ||x_i|| factor is applied at the end)
  //   gaussian: 2 dot - ||x_j||^2          (= ||x_i||^2 - ||x_i - x_j||^2)
  std::vector<double> a(n), c(n);
  for (int64_t j = 0; j < n; ++j) {
    a[j] = cosine ? pts.inv_norm[j] : 2.0;
    c[j] = cosine ? 0.0 : -pts.sq_norm[j];
  }
  // The tiles keep kk = k + kMargin candidates per row; the final k are chosen after
  // rescoring those exactly (see the end).
  const int64_t kk = std::min(k + kMargin, n - 1);
  std::vector<double> heap_s(static_cast<size_t>(n) * kk,
                             -std::numeric_limits<double>::infinity());
  std::vector<int64_t> heap_i(static_cast<size_t>(n) * kk, -1);
  auto heap = [&](int64_t i) { return RowHeap{&heap_s[i * kk], &heap_i[i * kk], kk}; };

  if constexpr (std::is_same<scalar_t, float>::value) {
    if (engine != SearchEngine::Tiled) {
      std::vector<float> af(n), cf(n);
      for (int64_t j = 0; j < n; ++j) {
        af[j] = static_cast<float>(a[j]);
        cf[j] = static_cast<float>(c[j]);
      }
      fused_select(x.data_ptr<float>(), n, x.size(1), af.data(), cf.data(), valid, kk,
                   heap_s.data(), heap_i.data(),
                   engine == SearchEngine::FusedAvx2 ? FusedIsa::Avx2 : FusedIsa::Best);
      rescore_and_emit<scalar_t>(pts, kernel, k, kk, heap_i, index, score);
      return;
    }
  }
  // One tile buffer for the whole search, written in place by mm_out: a fresh tensor per
  // tile (tiles of three shapes) fragmented the heap and cost ~130 MiB of RSS at N = 60,000.
  const int64_t blk = std::min(kBlock, n);
  const int64_t col_chunk = std::max<int64_t>(
      kLane, std::min<int64_t>(kMaxColumnChunk, blk / (4 * at::get_num_threads())) / kLane * kLane);
  at::Tensor tile_buf = at::empty({blk * blk}, x.options());
  for (int64_t a0 = 0; a0 < n; a0 += kBlock) {
    const int64_t na = std::min(kBlock, n - a0);
    const at::Tensor xa = x.narrow(0, a0, na);
    for (int64_t b0 = a0; b0 < n; b0 += kBlock) {
      const int64_t nb = std::min(kBlock, n - b0);
      at::Tensor tile = tile_buf.narrow(0, 0, na * nb).view({na, nb});
      at::mm_out(tile, xa, x.narrow(0, b0, nb).t());
      const scalar_t* t = tile.data_ptr<scalar_t>();
      // Rows of block a against candidates of block b. Scores are formed kLane at a time
      // and compared with the row's current k-th best in a branch-free loop (vectorised);
      // only a lane group holding a score that may enter the heap goes through push().
      at::parallel_for(0, na, 16, [&](int64_t r0, int64_t r1) {
        double v[kLane];
        for (int64_t r = r0; r < r1; ++r) {
          const int64_t i = a0 + r;
          if (!valid[i]) continue;
          RowHeap h = heap(i);
          const scalar_t* row = t + r * nb;
          for (int64_t q0 = 0; q0 < nb; q0 += kLane) {
            const int64_t len = std::min(kLane, nb - q0);
            const double* aj = &a[b0 + q0];
            const double* cj = &c[b0 + q0];
            const double thr = h.s[0];
            int any = 0;
            for (int64_t l = 0; l < len; ++l) {
              v[l] = aj[l] * static_cast<double>(row[q0 + l]) + cj[l];
              any |= v[l] >= thr;
            }
            if (!any) continue;
            for (int64_t l = 0; l < len; ++l) {
              const int64_t j = b0 + q0 + l;
              if (j != i && valid[j]) h.push(v[l], j);
            }
          }
        }
      });
      if (b0 == a0) {
        continue;  // a diagonal tile holds both directions of each pair already
      }
      // Rows of block b against candidates of block a: the same tile, transposed. Each
      // task owns col_chunk columns (queries), keeps their k-th best scores in a local
      // array, and walks the tile row by row so reads stay contiguous within a row.
      const int64_t chunks = (nb + col_chunk - 1) / col_chunk;
      at::parallel_for(0, chunks, 1, [&](int64_t ch0, int64_t ch1) {
        std::vector<double> thr(col_chunk);
        double v[kLane];
        for (int64_t ch = ch0; ch < ch1; ++ch) {
          const int64_t q0 = ch * col_chunk, w = std::min(nb - q0, col_chunk);
          for (int64_t l = 0; l < w; ++l) {
            // An invalid query never takes a candidate: its threshold is +inf.
            thr[l] = valid[b0 + q0 + l] ? heap_s[(b0 + q0 + l) * kk]
                                         : std::numeric_limits<double>::infinity();
          }
          for (int64_t r = 0; r < na; ++r) {
            const int64_t j = a0 + r;
            if (!valid[j]) continue;
            const double aj = a[j], cj = c[j];
            const scalar_t* row = t + r * nb + q0;
            for (int64_t l0 = 0; l0 < w; l0 += kLane) {
              const int64_t len = std::min(kLane, w - l0);
              int any = 0;
              for (int64_t l = 0; l < len; ++l) {
                v[l] = aj * static_cast<double>(row[l0 + l]) + cj;
                any |= v[l] >= thr[l0 + l];
              }
              if (!any) continue;
              for (int64_t l = 0; l < len; ++l) {
                if (v[l] >= thr[l0 + l]) {
                  RowHeap h = heap(b0 + q0 + l0 + l);
                  h.push(v[l], j);
                  thr[l0 + l] = h.s[0];
                }
              }
            }
          }
        }
      });
    }
  }
  rescore_and_emit<scalar_t>(pts, kernel, k, kk, heap_i, index, score);
}

template <typename scalar_t>
void rescore_and_emit(const PreparedPoints& pts, Kernel kernel, int64_t k, int64_t kk,
                      const std::vector<int64_t>& heap_i, at::Tensor& index, at::Tensor& score) {
  const at::Tensor& x = pts.x;
  const int64_t n = x.size(0);
  const bool cosine = kernel == Kernel::Cosine;
  // Exact rescoring: the GEMM's float rounding depends on the BLAS, its thread count and a
  // point's position in its tile, so its scores only select candidates. Each row's kk
  // candidates are rescored by simd_dot (the same bits as the NNK solve's kernel entries,
  // independent of threads and BLAS), and the best k of those are returned. Only a true
  // neighbour that GEMM rounding pushed below kMargin others could be lost.
  const scalar_t* X = x.data_ptr<scalar_t>();
  const int64_t d = x.size(1);
  int64_t* out_i = index.data_ptr<int64_t>();
  double* out_s = score.data_ptr<double>();
  at::parallel_for(0, n, 64, [&](int64_t i0, int64_t i1) {
    std::vector<const scalar_t*> rows(kk);
    std::vector<scalar_t> raw(kk);
    std::vector<std::pair<double, int64_t>> cand(kk);
    for (int64_t i = i0; i < i1; ++i) {
      int64_t m = 0;
      for (int64_t l = 0; l < kk; ++l) {
        const int64_t j = heap_i[i * kk + l];
        if (j >= 0) {
          cand[m].second = j;
          rows[m++] = X + j * d;
        }
      }
      const int cnt = static_cast<int>(m);
      if (cosine) {
        dot_many(X + i * d, rows.data(), cnt, d, raw.data());
      } else {
        sqdist_many(X + i * d, rows.data(), cnt, d, raw.data());
      }
      for (int64_t l = 0; l < m; ++l) {
        const int64_t j = cand[l].second;
        // The ranking score: cos (clamped) or minus the squared distance.
        cand[l].first = cosine ? std::min(1.0, std::max(-1.0, static_cast<double>(raw[l]) *
                                                                   (pts.inv_norm[i] * pts.inv_norm[j])))
                               : -static_cast<double>(raw[l]);
      }
      std::sort(cand.begin(), cand.begin() + m, [](const auto& p, const auto& q) {
        return RowHeap::better(p.first, p.second, q.first, q.second);
      });
      for (int64_t l = 0; l < k; ++l) {
        const bool have = l < m;
        out_i[i * k + l] = have ? cand[l].second : -1;
        out_s[i * k + l] = !have ? 0.0 : cosine ? cand[l].first : -cand[l].first;
      }
    }
  });
}

// The power of two 2^e with 2^e <= v < 2^(e+1) (1 for v = 0): dividing by it is exact.
double pow2_below(double v) {
  return v > 0 ? std::ldexp(1.0, std::ilogb(v)) : 1.0;
}

// The rescaled copy of PreparedPoints (see knn_search.h).
at::Tensor rescaled(const at::Tensor& x, Kernel kernel, double* scale) {
  const at::Tensor xc = x.contiguous();
  const int64_t n = xc.size(0);
  const int64_t d = xc.size(1);
  at::Tensor out = at::empty_like(xc);
  AT_DISPATCH_FLOATING_TYPES(xc.scalar_type(), "rescaled", [&] {
    const scalar_t* X = xc.data_ptr<scalar_t>();
    scalar_t* O = out.data_ptr<scalar_t>();
    if (kernel == Kernel::Cosine) {
      at::parallel_for(0, n, 256, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
          double top = 0.0;
          for (int64_t j = 0; j < d; ++j) {
            top = std::max(top, std::abs(static_cast<double>(X[i * d + j])));
          }
          const double inv = 1.0 / pow2_below(top);
          for (int64_t j = 0; j < d; ++j) {
            O[i * d + j] = static_cast<scalar_t>(static_cast<double>(X[i * d + j]) * inv);
          }
        }
      });
      return;
    }
    // Column means in double, each summed relative to its first value (no overflow at
    // |x| ~ DBL_MAX / N, exact for a column of equal values).
    std::vector<double> mean(static_cast<size_t>(d), 0.0);
    at::parallel_for(0, d, 16, [&](int64_t j0, int64_t j1) {
      for (int64_t j = j0; j < j1; ++j) {
        const double ref = static_cast<double>(X[j]);
        double acc = 0.0;
        for (int64_t i = 0; i < n; ++i) {
          acc += (static_cast<double>(X[i * d + j]) - ref) / static_cast<double>(n);
        }
        mean[j] = ref + acc;
      }
    });
    std::vector<double> row_top(static_cast<size_t>(n), 0.0);
    at::parallel_for(0, n, 256, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        for (int64_t j = 0; j < d; ++j) {
          row_top[i] = std::max(row_top[i], std::abs(static_cast<double>(X[i * d + j]) - mean[j]));
        }
      }
    });
    const double s = pow2_below(*std::max_element(row_top.begin(), row_top.end()));
    *scale = s;
    at::parallel_for(0, n, 256, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        for (int64_t j = 0; j < d; ++j) {
          O[i * d + j] = static_cast<scalar_t>((static_cast<double>(X[i * d + j]) - mean[j]) / s);
        }
      }
    });
  });
  return out;
}

} // namespace

PreparedPoints prepare_points(const at::Tensor& x, Kernel kernel) {
  PreparedPoints pts;
  pts.x = rescaled(x, kernel, &pts.scale);
  const int64_t n = x.size(0);
  const int64_t d = x.size(1);
  // Squared norms accumulated in double, row by row: no double copy of x (that copy and
  // its square were 2 N D doubles, ~750 MiB at N = 60,000, D = 784).
  pts.sq_norm.assign(n, 0.0);
  AT_DISPATCH_FLOATING_TYPES(pts.x.scalar_type(), "prepare_points", [&] {
    const scalar_t* X = pts.x.data_ptr<scalar_t>();
    at::parallel_for(0, n, 256, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const scalar_t* r = X + i * d;
        double acc[4] = {0.0, 0.0, 0.0, 0.0};
        int64_t j = 0;
        for (; j + 4 <= d; j += 4) {
          for (int l = 0; l < 4; ++l) {
            const double v = static_cast<double>(r[j + l]);
            acc[l] += v * v;
          }
        }
        double sum = (acc[0] + acc[1]) + (acc[2] + acc[3]);
        for (; j < d; ++j) {
          const double v = static_cast<double>(r[j]);
          sum += v * v;
        }
        pts.sq_norm[i] = sum;
      }
    });
  });
  const double* s = pts.sq_norm.data();
  pts.valid.assign(n, 1);
  pts.inv_norm.assign(n, 0.0);
  for (int64_t i = 0; i < n; ++i) {
    if (s[i] > 0) {
      pts.inv_norm[i] = 1.0 / std::sqrt(s[i]);
    } else if (kernel == Kernel::Cosine) {
      pts.valid[i] = 0;
      ++pts.num_invalid;
    }
  }
  return pts;
}

std::tuple<at::Tensor, at::Tensor> knn_search(const PreparedPoints& pts, Kernel kernel,
                                              int64_t k, SearchEngine engine) {
  const int64_t n = pts.x.size(0);
  const bool is_float = pts.x.scalar_type() == at::kFloat;
  if (engine == SearchEngine::Auto) {
    engine = is_float && fused_select_available() && pts.x.size(1) <= fused_max_dim() &&
                     n < 0xffffffffLL
                 ? SearchEngine::Fused
                 : SearchEngine::Tiled;
  }
  TORCH_CHECK(engine == SearchEngine::Tiled || (is_float && fused_select_available()),
              "knn_search: the fused selection needs float32 points and a CPU with AVX2 + FMA");
  at::Tensor index = at::empty({n, k}, pts.x.options().dtype(at::kLong));
  at::Tensor score = at::empty({n, k}, pts.x.options().dtype(at::kDouble));
  const BlasThreadsGuard blas_threads;  // the GEMM tiles run on torch's thread count
  AT_DISPATCH_FLOATING_TYPES(pts.x.scalar_type(), "knn_search", [&] {
    knn_search_impl<scalar_t>(pts, kernel, k, engine, index, score);
  });
  return std::make_tuple(index, score);
}

at::Tensor euclidean_candidates(const at::Tensor& x, const std::vector<char>& valid, int64_t k) {
  PreparedPoints pts = prepare_points(x, Kernel::Gaussian);
  pts.valid = valid;
  pts.num_invalid = std::count(valid.begin(), valid.end(), 0);
  return std::get<0>(knn_search(pts, Kernel::Gaussian, k));
}

at::Tensor candidate_scores(const PreparedPoints& pts, Kernel kernel, const at::Tensor& index) {
  const int64_t n = index.size(0), k = index.size(1), d = pts.x.size(1);
  at::Tensor score = at::zeros({n, k}, pts.x.options().dtype(at::kDouble));
  const int64_t* id = index.data_ptr<int64_t>();
  double* out = score.data_ptr<double>();
  AT_DISPATCH_FLOATING_TYPES(pts.x.scalar_type(), "candidate_scores", [&] {
    const scalar_t* X = pts.x.data_ptr<scalar_t>();
    at::parallel_for(0, n, 64, [&](int64_t i0, int64_t i1) {
      std::vector<const scalar_t*> rows(k);
      std::vector<scalar_t> raw(k);
      for (int64_t i = i0; i < i1; ++i) {
        int m = 0;
        while (m < k && id[i * k + m] >= 0) {
          rows[m] = X + id[i * k + m] * d;
          ++m;
        }
        if (kernel == Kernel::Cosine) {
          dot_many(X + i * d, rows.data(), m, d, raw.data());
        } else {
          sqdist_many(X + i * d, rows.data(), m, d, raw.data());
        }
        for (int l = 0; l < m; ++l) {
          const double r = static_cast<double>(raw[l]);
          out[i * k + l] = kernel == Kernel::Cosine
              ? std::min(1.0, std::max(-1.0, r * (pts.inv_norm[i] * pts.inv_norm[id[i * k + l]])))
              : r;
        }
      }
    });
  });
  return score;
}

std::vector<double> resolve_sigma(SigmaMode mode, double sigma,
                                  const std::vector<double>& far_sq) {
  const size_t n = far_sq.size();
  // A sigma of 0 (every candidate a duplicate) would give 0/0; such nodes only ever use
  // the duplicate rule, so any positive floor works.
  const double floor = 1e-150;
  if (mode == SigmaMode::Fixed) {
    return std::vector<double>(n, sigma);
  }
  std::vector<double> out(n, floor);
  if (mode == SigmaMode::Local) {
    for (size_t i = 0; i < n; ++i) {
      out[i] = far_sq[i] > 0 ? std::max(floor, std::sqrt(far_sq[i]) / 3.0) : floor;
    }
    return out;
  }
  double sum = 0.0;
  int64_t count = 0;
  for (size_t i = 0; i < n; ++i) {
    if (far_sq[i] >= 0) {
      sum += std::sqrt(far_sq[i]);
      ++count;
    }
  }
  const double s = count > 0 ? std::max(floor, sum / count / 3.0) : 1.0;
  std::fill(out.begin(), out.end(), s);
  return out;
}

} // namespace cpu
} // namespace torch_geometry
