// Device-generic nnk_neighbors and nnk_interpolate (ATen operations only): the CPU
// kernels' rules (csrc/cpu/nnk_neighbors_kernel.cpp) with the search in tiles of at::mm and
// the solve by the generic nnk_graph.
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "../knn_graph.h"
#include "../nnk_neighbors.h"
#include "generic_common.h"

namespace torch_geometry {
namespace generic {

namespace {

constexpr int64_t kMargin = 8;  // candidates rescored beyond k (the CPU kernel's margin)
constexpr int64_t kMinTileColumns = 256;
constexpr int64_t kMaxTileColumns = 4096;

// The exact k best reference rows of each query: tiles of at::mm select k + 8 candidates
// per query (ties to the smaller index), which are rescored in float64 and the best k
// kept, ties to the smaller index. ref_ok / qry_ok: the rows that take part.
at::Tensor search(const at::Tensor& qry, const at::Tensor& ref, bool cosine,
                  const at::Tensor& qry_ok, const at::Tensor& ref_ok, int64_t k) {
  const int64_t q = qry.size(0), n = ref.size(0), d = ref.size(1);
  const int64_t kk = std::min(k + kMargin, n);
  const auto dopt = qry.options().dtype(at::kDouble);
  const auto lopt = qry.options().dtype(at::kLong);
  const double ninf = -std::numeric_limits<double>::infinity();
  const at::Tensor ref_sq = ref.to(at::kDouble).square().sum(1);
  const at::Tensor qry_sq = qry.to(at::kDouble).square().sum(1);
  const at::Tensor ref_inv = at::where(ref_sq > 0, ref_sq.rsqrt(), at::zeros_like(ref_sq));
  const at::Tensor qry_inv = at::where(qry_sq > 0, qry_sq.rsqrt(), at::zeros_like(qry_sq));
  // Score a[j] * dot + c[j], up to a term of the query alone (as the CPU kernel).
  const at::Tensor a = cosine ? ref_inv : at::full_like(ref_sq, 2.0);
  const at::Tensor c = cosine ? at::zeros_like(ref_sq) : -ref_sq;
  const int64_t elem = static_cast<int64_t>(qry.element_size());
  const int64_t per_score = elem + 8 + 1 + 8 * 5;
  // About square tiles sized by the memory budget, as the generic knn_search's.
  const int64_t side = static_cast<int64_t>(
      std::sqrt(static_cast<double>(rows_for_budget(per_score, std::max<int64_t>(1, n * q)))));
  const int64_t tile_cols =
      std::min(n, std::max<int64_t>(kMinTileColumns, std::min<int64_t>(kMaxTileColumns, side)));
  const int64_t rows = std::min(rows_for_budget((tile_cols + kk) * per_score, q),
                                rows_for_budget(kk * d * 8 * 2 + 1, q));
  at::Tensor index = at::full({q, k}, -1, lopt);
  for (int64_t r0 = 0; r0 < q; r0 += rows) {
    const int64_t nr = std::min(rows, q - r0);
    const at::Tensor xq = qry.narrow(0, r0, nr);
    const at::Tensor row_ok = qry_ok.narrow(0, r0, nr).unsqueeze(1);
    at::Tensor best_s = at::full({nr, kk}, ninf, dopt);
    at::Tensor best_i = at::full({nr, kk}, -1, lopt);
    for (int64_t c0 = 0; c0 < n; c0 += tile_cols) {
      const int64_t nc = std::min(tile_cols, n - c0);
      at::Tensor v = at::mm(xq, ref.narrow(0, c0, nc).t()).to(at::kDouble);
      v.mul_(a.narrow(0, c0, nc)).add_(c.narrow(0, c0, nc));
      v.masked_fill_(at::logical_not(row_ok & ref_ok.narrow(0, c0, nc).unsqueeze(0)), ninf);
      // Earlier tiles hold smaller indices and come first: a stable sort keeps ties in
      // index order.
      const at::Tensor all_s = at::cat({best_s, v}, 1);
      const at::Tensor all_i =
          at::cat({best_i, at::arange(c0, c0 + nc, lopt).unsqueeze(0).expand({nr, nc})}, 1);
      const at::Tensor order = std::get<1>(stable_sort(all_s, /*descending=*/true)).narrow(1, 0, kk);
      best_s = all_s.gather(1, order);
      best_i = all_i.gather(1, order);
    }
    const at::Tensor cand = best_i.masked_fill(best_s == ninf, -1);
    const at::Tensor present = cand >= 0;
    // Exact rescoring in float64.
    const at::Tensor xc = ref.index_select(0, cand.clamp_min(0).reshape({-1})).to(at::kDouble).view({nr, kk, d});
    const at::Tensor xd = xq.to(at::kDouble);
    at::Tensor rank;
    if (cosine) {
      const at::Tensor dots = at::bmm(xc, xd.unsqueeze(2)).squeeze(2);
      rank = (dots * qry_inv.narrow(0, r0, nr).unsqueeze(1) *
              ref_inv.index_select(0, cand.clamp_min(0).reshape({-1})).view({nr, kk}))
                 .clamp(-1.0, 1.0);
    } else {
      rank = -(xc - xd.unsqueeze(1)).square().sum(2);
    }
    rank = rank.masked_fill(at::logical_not(present), ninf);
    // Best k by (score descending, index ascending): order by index, then a stable sort.
    const at::Tensor by_index = std::get<1>(stable_sort(cand.masked_fill(at::logical_not(present), n), false));
    const at::Tensor order =
        by_index.gather(1, std::get<1>(stable_sort(rank.gather(1, by_index), true))).narrow(1, 0, k);
    index.narrow(0, r0, nr).copy_(
        cand.gather(1, order).masked_fill(at::logical_not(present.gather(1, order)), -1));
  }
  return index;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> nnk_neighbors_generic(
    const at::Tensor& queries,
    const at::Tensor& reference,
    int64_t k,
    c10::string_view kernel_name,
    optional<double> sigma,
    c10::string_view sigma_mode,
    c10::string_view candidate_metric,
    const optional<at::Tensor>& candidates,
    double threshold) {
  ops::detail::check_neighbors_inputs(queries, reference, k, kernel_name, sigma, sigma_mode,
                                      candidate_metric, candidates, threshold);
  const Kernel kernel = parse_kernel(kernel_name, "nnk_neighbors");
  const bool euclidean =
      parse_candidate_metric(candidate_metric, "nnk_neighbors") == CandidateMetric::Euclidean;
  at::Tensor cand;
  if (candidates.has_value() && candidates->defined()) {
    cand = *candidates;
  } else {
    const bool cosine_rank = kernel == Kernel::Cosine && !euclidean;
    at::Tensor qry = queries, ref = reference;
    if (!cosine_rank) {
      // Distances do not change under translation; centring keeps |a|^2 - 2 a.b from
      // cancelling on data far from the origin.
      const at::Tensor mean = reference.mean(0, /*keepdim=*/true);
      qry = queries - mean;
      ref = reference - mean;
    }
    const bool cosine = kernel == Kernel::Cosine;
    const at::Tensor qry_ok = cosine ? queries.ne(0).any(1) : at::ones({queries.size(0)}, queries.options().dtype(at::kBool));
    const at::Tensor ref_ok = cosine ? reference.ne(0).any(1) : at::ones({reference.size(0)}, reference.options().dtype(at::kBool));
    cand = search(qry, ref, cosine_rank, qry_ok, ref_ok, k);
  }
  auto solve = [](const at::Tensor& x, int64_t kk, c10::string_view kern, optional<double> s,
                  c10::string_view mode, const optional<at::Tensor>& c, double thr) {
    return nnk_graph(x, kk, kern, s, mode, c, thr);
  };
  return ops::detail::solve_on_candidates(queries, reference, cand, kernel_name, sigma,
                                          sigma_mode, threshold, solve);
}

at::Tensor nnk_interpolate_generic(
    const at::Tensor& neighbors,
    const at::Tensor& weights,
    const at::Tensor& values) {
  ops::detail::check_interpolate_inputs(neighbors, weights, values);
  const int64_t q = neighbors.size(0), k = neighbors.size(1), c = values.size(1);
  const at::Tensor present = neighbors >= 0;
  const at::Tensor w = weights.to(at::kDouble).masked_fill(at::logical_not(present), 0.0);
  const at::Tensor total = w.sum(1, /*keepdim=*/true);
  at::Tensor out = at::zeros({q, c}, values.options().dtype(at::kDouble));
  // Blocks of queries bound the gathered [rows, k, C] values.
  const int64_t rows = rows_for_budget(k * c * 8 * 2 + 1, q);
  for (int64_t r0 = 0; r0 < q; r0 += rows) {
    const int64_t nr = std::min(rows, q - r0);
    const at::Tensor idx = neighbors.narrow(0, r0, nr).clamp_min(0).reshape({-1});
    const at::Tensor v = values.index_select(0, idx).to(at::kDouble).view({nr, k, c});
    const at::Tensor sum = at::bmm(w.narrow(0, r0, nr).unsqueeze(1), v).squeeze(1);
    const at::Tensor t = total.narrow(0, r0, nr);
    out.narrow(0, r0, nr).copy_(at::where(t > 0, sum / t.clamp_min(1e-300), at::zeros_like(sum)));
  }
  return out.to(at::promote_types(weights.scalar_type(), values.scalar_type()));
}

} // namespace

TORCH_LIBRARY_FRAGMENT(torch_geometry, m) {
  m.def(
      "_generic_nnk_neighbors(Tensor queries, Tensor reference, int k, str kernel_name=\"cosine\", "
      "float? sigma=None, str sigma_mode=\"mean\", str candidate_metric=\"kernel\", "
      "Tensor? candidates=None, float threshold=1e-10) "
      "-> (Tensor neighbors, Tensor weights, Tensor error)");
  m.def("_generic_nnk_interpolate(Tensor neighbors, Tensor weights, Tensor values) -> Tensor");
}

TORCH_LIBRARY_IMPL(torch_geometry, CompositeExplicitAutograd, m) {
  m.impl("_generic_nnk_neighbors", &nnk_neighbors_generic);
  m.impl("_generic_nnk_interpolate", &nnk_interpolate_generic);
}

TORCH_LIBRARY_IMPL(torch_geometry, CUDA, m) {
  m.impl("nnk_neighbors", &nnk_neighbors_generic);
  m.impl("nnk_interpolate", &nnk_interpolate_generic);
}

} // namespace generic
} // namespace torch_geometry
