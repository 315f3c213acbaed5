#include "nnk_neighbors.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <cmath>
#include <utility>

#include "common.h"
#include "knn_graph.h"

namespace torch_geometry {
namespace ops {

namespace {
constexpr const char* kOp = "nnk_neighbors";
constexpr const char* kInterpOp = "nnk_interpolate";
} // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> nnk_neighbors(
    const at::Tensor& queries,
    const at::Tensor& reference,
    int64_t k,
    c10::string_view kernel,
    c10::optional<double> sigma,
    c10::string_view sigma_mode,
    c10::string_view candidate_metric,
    const c10::optional<at::Tensor>& candidates,
    double threshold) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torch_geometry::nnk_neighbors", "")
                       .typed<decltype(nnk_neighbors)>();
  return op.call(queries, reference, k, kernel, sigma, sigma_mode, candidate_metric,
                 candidates, threshold);
}

at::Tensor nnk_interpolate(
    const at::Tensor& neighbors,
    const at::Tensor& weights,
    const at::Tensor& values) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torch_geometry::nnk_interpolate", "")
                       .typed<decltype(nnk_interpolate)>();
  return op.call(neighbors, weights, values);
}

namespace detail {

void check_neighbors_inputs(
    const at::Tensor& queries,
    const at::Tensor& reference,
    int64_t k,
    c10::string_view kernel_name,
    c10::optional<double> sigma,
    c10::string_view sigma_mode,
    c10::string_view candidate_metric,
    const c10::optional<at::Tensor>& candidates,
    double threshold) {
  const Kernel kernel = parse_kernel(kernel_name, kOp);
  parse_sigma(kernel, sigma, sigma_mode, kOp);
  parse_candidate_metric(candidate_metric, kOp);
  TORCH_CHECK(queries.dim() == 2, kOp, ": queries should be a 2-D tensor [Q, D], got ",
              queries.dim(), " dims");
  TORCH_CHECK(reference.dim() == 2, kOp, ": reference should be a 2-D tensor [N, D], got ",
              reference.dim(), " dims");
  TORCH_CHECK(queries.size(1) == reference.size(1), kOp,
              ": queries and reference should have the same dimension D, got queries [",
              queries.size(0), ", ", queries.size(1), "] and reference [", reference.size(0),
              ", ", reference.size(1), "]");
  TORCH_CHECK(queries.scalar_type() == reference.scalar_type(), kOp,
              ": queries and reference should have the same dtype, got ",
              queries.scalar_type(), " and ", reference.scalar_type());
  TORCH_CHECK(queries.device() == reference.device(), kOp,
              ": queries and reference should be on the same device, got ", queries.device(),
              " and ", reference.device());
  for (const auto& named : {std::make_pair(&queries, "queries"), std::make_pair(&reference, "reference")}) {
    const at::Tensor& t = *named.first;
    TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, kOp, ": ",
                named.second, " should be float32 or float64, got ", t.scalar_type());
    check_no_grad(t, kOp, named.second);
    TORCH_CHECK(t.size(1) >= 1, kOp, ": ", named.second, " has no features (D = 0)");
    TORCH_CHECK(all_finite(t), kOp, ": ", named.second,
                " should hold finite values, got NaN or Inf");
  }
  TORCH_CHECK(k >= 1, kOp, ": k should be >= 1, got ", k);
  TORCH_CHECK(k < reference.size(0), kOp,
              ": k should be smaller than the number of reference points N = ",
              reference.size(0), ", got k=", k);
  TORCH_CHECK(std::isfinite(threshold) && threshold >= 0, kOp,
              ": threshold should be a finite number >= 0, got ", threshold);
  if (candidates.has_value() && candidates->defined()) {
    const at::Tensor& c = *candidates;
    const int64_t q = queries.size(0), n = reference.size(0);
    TORCH_CHECK(c.scalar_type() == at::kLong, kOp,
                ": candidates should be int64 indices into reference, got ", c.scalar_type());
    TORCH_CHECK(c.dim() == 2 && c.size(0) == q && c.size(1) == k, kOp,
                ": candidates should have shape [Q, k] = [", q, ", ", k, "], got ", c.sizes());
    TORCH_CHECK(c.device() == queries.device(), kOp,
                ": candidates should be on the device of queries (", queries.device(),
                "), got ", c.device());
    if (c.numel() > 0) {
      const at::Tensor range = at::stack({c.min(), c.max()}).cpu();
      const int64_t lo = range.data_ptr<int64_t>()[0], hi = range.data_ptr<int64_t>()[1];
      TORCH_CHECK(lo >= -1 && hi < n, kOp,
                  ": candidates should be indices into reference in [0, N) = [0, ", n,
                  ") or -1 for padding, got values in [", lo, ", ", hi, "]");
    }
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> solve_on_candidates(
    const at::Tensor& queries,
    const at::Tensor& reference,
    const at::Tensor& cand,
    c10::string_view kernel,
    c10::optional<double> sigma,
    c10::string_view sigma_mode,
    double threshold,
    const GraphSolver& solve) {
  const int64_t q = queries.size(0), n = reference.size(0), k = cand.size(1);
  const auto lopt = cand.options();
  if (q == 0) {
    return std::make_tuple(at::empty({0, k}, lopt), at::empty({0, k}, queries.options()),
                           at::empty({0}, queries.options()));
  }
  // The reference rows some query uses, plus the first k + 1 (so that nnk_graph's k < N
  // holds even when no query has a candidate), sorted: the subset keeps index order.
  const at::Tensor used = at::cat({cand.reshape({-1}), at::arange(k + 1, lopt)});
  const at::Tensor subset = std::get<0>(at::_unique(used.masked_select(used >= 0), /*sorted=*/true));
  const int64_t u = subset.size(0);
  at::Tensor position = at::full({n}, -1, lopt);
  position.index_copy_(0, subset, at::arange(u, lopt));
  const at::Tensor local = at::where(cand >= 0, position.index_select(0, cand.clamp_min(0).reshape({-1})).view({q, k}),
                                     at::full_like(cand, -1));
  const at::Tensor x = at::cat({reference.index_select(0, subset), queries}, 0);
  const at::Tensor all_cand = at::cat({at::full({u, k}, -1, lopt), local}, 0);
  at::Tensor nbr, w, err;
  std::tie(nbr, w, err) = solve(x, k, kernel, sigma, sigma_mode, all_cand, threshold);
  nbr = nbr.narrow(0, u, q);
  const at::Tensor present = nbr >= 0;
  nbr = at::where(present, subset.index_select(0, nbr.clamp_min(0).reshape({-1})).view({q, k}),
                  at::full_like(nbr, -1));
  return std::make_tuple(nbr.contiguous(), w.narrow(0, u, q).contiguous(),
                         err.narrow(0, u, q).contiguous());
}

void check_interpolate_inputs(
    const at::Tensor& neighbors,
    const at::Tensor& weights,
    const at::Tensor& values) {
  TORCH_CHECK(neighbors.scalar_type() == at::kLong, kInterpOp,
              ": neighbors should be int64 indices into the rows of values, got ",
              neighbors.scalar_type());
  TORCH_CHECK(neighbors.dim() == 2, kInterpOp, ": neighbors should be [Q, k], got ",
              neighbors.dim(), " dims");
  TORCH_CHECK(weights.sizes() == neighbors.sizes(), kInterpOp,
              ": weights should have the shape of neighbors ", neighbors.sizes(), ", got ",
              weights.sizes());
  TORCH_CHECK(weights.scalar_type() == at::kFloat || weights.scalar_type() == at::kDouble,
              kInterpOp, ": weights should be float32 or float64, got ", weights.scalar_type());
  TORCH_CHECK(values.dim() == 2, kInterpOp,
              ": values should be a 2-D tensor [N, C] (one row per reference point), got ",
              values.dim(), " dims");
  TORCH_CHECK(values.scalar_type() == at::kFloat || values.scalar_type() == at::kDouble,
              kInterpOp, ": values should be float32 or float64, got ", values.scalar_type());
  TORCH_CHECK(weights.device() == neighbors.device() && values.device() == neighbors.device(),
              kInterpOp, ": neighbors, weights and values should be on one device, got ",
              neighbors.device(), ", ", weights.device(), " and ", values.device());
  check_no_grad(weights, kInterpOp, "weights");
  check_no_grad(values, kInterpOp, "values");
  const int64_t n = values.size(0);
  if (neighbors.numel() > 0) {
    const at::Tensor range = at::stack({neighbors.min(), neighbors.max()}).cpu();
    const int64_t lo = range.data_ptr<int64_t>()[0], hi = range.data_ptr<int64_t>()[1];
    TORCH_CHECK(lo >= -1 && hi < n, kInterpOp,
                ": neighbors should be indices into values in [0, N) = [0, ", n,
                ") or -1 for padding, got values in [", lo, ", ", hi, "]");
    TORCH_CHECK(all_finite(weights), kInterpOp, ": weights should be finite");
    TORCH_CHECK(weights.min().item<double>() >= 0, kInterpOp,
                ": weights should be >= 0, got ", weights.min().item<double>());
    TORCH_CHECK(!(weights.masked_select(neighbors < 0) != 0).any().item<bool>(), kInterpOp,
                ": weights should be 0 on padding (neighbors == -1)");
  }
  TORCH_CHECK(values.numel() == 0 || all_finite(values), kInterpOp,
              ": values should be finite");
}

} // namespace detail

TORCH_LIBRARY_FRAGMENT(torch_geometry, m) {
  m.def(
      "nnk_neighbors(Tensor queries, Tensor reference, int k, str kernel_name=\"cosine\", "
      "float? sigma=None, str sigma_mode=\"mean\", str candidate_metric=\"kernel\", "
      "Tensor? candidates=None, float threshold=1e-10) "
      "-> (Tensor neighbors, Tensor weights, Tensor error)");
  m.def("nnk_interpolate(Tensor neighbors, Tensor weights, Tensor values) -> Tensor");
}

} // namespace ops
} // namespace torch_geometry
