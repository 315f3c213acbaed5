// CPU kernels of nnk_neighbors (exact search of queries among a reference set, then
// nnk_graph's solver on those candidates) and nnk_interpolate.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../common.h"
#include "../nnk_graph.h"
#include "../knn_graph.h"
#include "../nnk_neighbors.h"
#include "blas_threads.h"
#include "knn_search.h"
#include "simd_dot.h"

namespace torch_geometry {
namespace ops {

namespace {

// Tile edges: queries x reference tiles of at most 1024 x 2048 (8 MiB in float32).
constexpr int64_t kQueryBlock = 1024;
constexpr int64_t kReferenceBlock = 2048;
using cpu::kMargin;
using cpu::RowHeap;

// Exact k best reference points of each query. `pts` holds the reference rows [0, n)
// followed by the query rows [n, n + q), prepared together (one translation and scale for
// both under the Gaussian preparation). `valid[j]` says whether row j takes part. Returns
// [q, k] int64 indices into the reference, best first, -1 padded.
template <typename scalar_t>
at::Tensor search(const cpu::PreparedPoints& pts, bool cosine, const std::vector<char>& valid,
                  int64_t n, int64_t k) {
  const at::Tensor& x = pts.x;
  const int64_t q = x.size(0) - n, d = x.size(1);
  const int64_t kk = std::min(k + kMargin, n);
  // Per reference point j the score is a[j] * dot + c[j], up to a term of the query alone:
  // cosine dot / ||x_j||, Euclidean 2 dot - ||x_j||^2.
  std::vector<double> a(n), c(n);
  for (int64_t j = 0; j < n; ++j) {
    a[j] = cosine ? pts.inv_norm[j] : 2.0;
    c[j] = cosine ? 0.0 : -pts.sq_norm[j];
  }
  std::vector<double> heap_s(static_cast<size_t>(q) * kk, -std::numeric_limits<double>::infinity());
  std::vector<int64_t> heap_i(static_cast<size_t>(q) * kk, -1);
  const at::Tensor ref = x.narrow(0, 0, n);
  const at::Tensor qry = x.narrow(0, n, q);
  const int64_t bq = std::min(kQueryBlock, q), br = std::min(kReferenceBlock, n);
  at::Tensor tile_buf = at::empty({bq * br}, x.options());
  for (int64_t q0 = 0; q0 < q; q0 += kQueryBlock) {
    const int64_t nq = std::min(kQueryBlock, q - q0);
    const at::Tensor xq = qry.narrow(0, q0, nq);
    for (int64_t r0 = 0; r0 < n; r0 += kReferenceBlock) {
      const int64_t nr = std::min(kReferenceBlock, n - r0);
      at::Tensor tile = tile_buf.narrow(0, 0, nq * nr).view({nq, nr});
      at::mm_out(tile, xq, ref.narrow(0, r0, nr).t());
      const scalar_t* t = tile.data_ptr<scalar_t>();
      at::parallel_for(0, nq, 16, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
          if (!valid[n + q0 + i]) continue;
          double* s = &heap_s[(q0 + i) * kk];
          int64_t* id = &heap_i[(q0 + i) * kk];
          const scalar_t* row = t + i * nr;
          for (int64_t l = 0; l < nr; ++l) {
            const int64_t j = r0 + l;
            const double v = a[j] * static_cast<double>(row[l]) + c[j];
            // Most scores lose to the current worst: test before anything else.
            if (v >= s[0] && valid[j]) {
              RowHeap{s, id, kk}.push(v, j);
            }
          }
        }
      });
    }
  }
  // Exact rescoring by simd_dot (the solver's own products; independent of the BLAS and
  // the thread count), then the best k by (score, smaller index).
  at::Tensor index = at::empty({q, k}, x.options().dtype(at::kLong));
  int64_t* out = index.data_ptr<int64_t>();
  const scalar_t* X = x.data_ptr<scalar_t>();
  at::parallel_for(0, q, 64, [&](int64_t i0, int64_t i1) {
    std::vector<const scalar_t*> rows(kk);
    std::vector<scalar_t> raw(kk);
    std::vector<std::pair<double, int64_t>> cand(kk);
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t qi = n + i;
      int64_t m = 0;
      for (int64_t l = 0; l < kk; ++l) {
        const int64_t j = heap_i[i * kk + l];
        if (j >= 0) {
          cand[m].second = j;
          rows[m++] = X + j * d;
        }
      }
      if (cosine) {
        cpu::dot_many(X + qi * d, rows.data(), static_cast<int>(m), d, raw.data());
      } else {
        cpu::sqdist_many(X + qi * d, rows.data(), static_cast<int>(m), d, raw.data());
      }
      for (int64_t l = 0; l < m; ++l) {
        const double r = static_cast<double>(raw[l]);
        cand[l].first = cosine
            ? std::min(1.0, std::max(-1.0, r * (pts.inv_norm[qi] * pts.inv_norm[cand[l].second])))
            : -r;
      }
      std::sort(cand.begin(), cand.begin() + m, [](const auto& u, const auto& v) {
        return RowHeap::better(u.first, u.second, v.first, v.second);
      });
      for (int64_t l = 0; l < k; ++l) {
        out[i * k + l] = l < m ? cand[l].second : -1;
      }
    }
  });
  return index;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> nnk_neighbors_kernel(
    const at::Tensor& queries,
    const at::Tensor& reference,
    int64_t k,
    c10::string_view kernel_name,
    c10::optional<double> sigma,
    c10::string_view sigma_mode,
    c10::string_view candidate_metric,
    const c10::optional<at::Tensor>& candidates,
    double threshold) {
  detail::check_neighbors_inputs(queries, reference, k, kernel_name, sigma, sigma_mode,
                                 candidate_metric, candidates, threshold);
  const Kernel kernel = parse_kernel(kernel_name, "nnk_neighbors");
  const bool euclidean =
      parse_candidate_metric(candidate_metric, "nnk_neighbors") == CandidateMetric::Euclidean;
  const int64_t n = reference.size(0), q = queries.size(0);
  at::Tensor cand;
  if (candidates.has_value() && candidates->defined()) {
    cand = candidates->contiguous();
  } else if (q == 0) {
    cand = at::empty({0, k}, queries.options().dtype(at::kLong));
  } else {
    // Ranking under the kernel, or by L2 distance (the Gaussian preparation ranks by it).
    const bool cosine_rank = kernel == Kernel::Cosine && !euclidean;
    const cpu::PreparedPoints pts = cpu::prepare_points(
        at::cat({reference, queries}, 0), cosine_rank ? Kernel::Cosine : Kernel::Gaussian);
    // All-zero rows take no part under the cosine kernel, whatever ranks the candidates.
    std::vector<char> valid(n + q, 1);
    if (kernel == Kernel::Cosine) {
      const at::Tensor nonzero = at::cat({reference, queries}, 0).ne(0).any(1).contiguous();
      const bool* nz = nonzero.data_ptr<bool>();
      for (int64_t i = 0; i < n + q; ++i) {
        valid[i] = nz[i];
      }
    }
    const cpu::BlasThreadsGuard blas_threads;
    AT_DISPATCH_FLOATING_TYPES(queries.scalar_type(), "nnk_neighbors", [&] {
      cand = search<scalar_t>(pts, cosine_rank, valid, n, k);
    });
  }
  // The CPU nnk_graph solves the candidates: one solver, one set of rules.
  auto solve = [](const at::Tensor& x, int64_t kk, c10::string_view kern,
                  c10::optional<double> s, c10::string_view mode,
                  const c10::optional<at::Tensor>& c, double thr) {
    return ops::nnk_graph(x, kk, kern, s, mode, c, thr);
  };
  return detail::solve_on_candidates(queries, reference, cand, kernel_name, sigma, sigma_mode,
                                     threshold, solve);
}

template <typename scalar_t, typename value_t>
void interpolate_impl(const at::Tensor& nbr, const at::Tensor& w, const at::Tensor& v,
                      at::Tensor& out) {
  const int64_t q = nbr.size(0), k = nbr.size(1), c = v.size(1);
  const int64_t* NB = nbr.data_ptr<int64_t>();
  const scalar_t* W = w.data_ptr<scalar_t>();
  const value_t* V = v.data_ptr<value_t>();
  at::parallel_for(0, q, 64, [&](int64_t i0, int64_t i1) {
    std::vector<double> acc(c);
    for (int64_t i = i0; i < i1; ++i) {
      std::fill(acc.begin(), acc.end(), 0.0);
      double total = 0.0;
      for (int64_t l = 0; l < k; ++l) {
        const int64_t j = NB[i * k + l];
        const double wt = static_cast<double>(W[i * k + l]);
        if (j < 0 || wt == 0.0) continue;
        total += wt;
        for (int64_t a = 0; a < c; ++a) {
          acc[a] += wt * static_cast<double>(V[j * c + a]);
        }
      }
      double* o = out.data_ptr<double>() + i * c;
      for (int64_t a = 0; a < c; ++a) {
        o[a] = total > 0 ? acc[a] / total : 0.0;
      }
    }
  });
}

at::Tensor nnk_interpolate_kernel(
    const at::Tensor& neighbors,
    const at::Tensor& weights,
    const at::Tensor& values) {
  detail::check_interpolate_inputs(neighbors, weights, values);
  const at::Tensor nbr = neighbors.contiguous(), w = weights.contiguous(), v = values.contiguous();
  at::Tensor out = at::empty({nbr.size(0), v.size(1)}, v.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "nnk_interpolate", [&] {
    using weight_t = scalar_t;
    AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "nnk_interpolate", [&] {
      interpolate_impl<weight_t, scalar_t>(nbr, w, v, out);
    });
  });
  return out.to(at::promote_types(w.scalar_type(), v.scalar_type()));
}

} // namespace

TORCH_LIBRARY_IMPL(torch_geometry, CPU, m) {
  m.impl("nnk_neighbors", &nnk_neighbors_kernel);
  m.impl("nnk_interpolate", &nnk_interpolate_kernel);
}

} // namespace ops
} // namespace torch_geometry
