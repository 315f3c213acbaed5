// Device-generic knn_graph: registered for CUDA tensors and, as _generic_knn_graph, for
// any device (the tests run it on CPU against the CPU kernel).
#include <torch/library.h>

#include <algorithm>

#include "generic_common.h"

namespace torch_geometry {
namespace generic {

namespace {

std::tuple<at::Tensor, at::Tensor> knn_graph_generic(
    const at::Tensor& x,
    int64_t k,
    c10::string_view kernel_name,
    optional<double> sigma,
    c10::string_view sigma_mode,
    c10::string_view candidate_metric) {
  const char* op = "knn_graph";
  const Kernel kernel = parse_kernel(kernel_name, op);
  const CandidateMetric metric = parse_candidate_metric(candidate_metric, op);
  const SigmaMode mode = parse_sigma(kernel, sigma, sigma_mode, op);
  check_points(x, op);
  check_k(k, x.size(0), op);

  const PreparedPoints pts = prepare_points(x, kernel);
  at::Tensor index, score;
  if (metric == CandidateMetric::Euclidean && kernel == Kernel::Cosine) {
    index = euclidean_candidates(x, pts.valid, k);
    score = at::empty({x.size(0), k}, pts.sq_norm.options());
    const int64_t rows = rows_for_budget(k * x.size(1) * 8 * 2 + 1, x.size(0));
    for (int64_t r0 = 0; r0 < x.size(0); r0 += rows) {
      const int64_t nr = std::min(rows, x.size(0) - r0);
      score.narrow(0, r0, nr).copy_(raw_scores(pts, kernel, r0, index.narrow(0, r0, nr)));
    }
  } else {
    // The Gaussian kernel ranks by L2 distance already: both metrics are this search.
    std::tie(index, score) = knn_search(pts, kernel, k);
  }
  const at::Tensor present = index >= 0;
  at::Tensor sig = at::ones({x.size(0), 1}, score.options());
  if (kernel == Kernel::Gaussian) {
    // The k-th neighbour's squared distance (candidates are packed at the front).
    const at::Tensor count = present.sum(1, /*keepdim=*/true);
    const at::Tensor last = score.gather(1, (count - 1).clamp_min(0));
    const at::Tensor far_sq = at::where(count > 0, last, at::full_like(last, -1.0)).squeeze(1);
    sig = resolve_sigma(mode, sigma.value_or(0.0), far_sq).unsqueeze(1);
  }
  const at::Tensor sim =
      kernel_value(kernel, score, sig).masked_fill(at::logical_not(present), 0.0);
  return std::make_tuple(index, sim.to(x.scalar_type()));
}

} // namespace

TORCH_LIBRARY_FRAGMENT(torch_geometry, m) {
  m.def(
      "_generic_knn_graph(Tensor x, int k, str kernel_name=\"cosine\", float? sigma=None, "
      "str sigma_mode=\"mean\", str candidate_metric=\"kernel\") "
      "-> (Tensor neighbors, Tensor similarities)");
}

TORCH_LIBRARY_IMPL(torch_geometry, CompositeExplicitAutograd, m) {
  m.impl("_generic_knn_graph", &knn_graph_generic);
}

TORCH_LIBRARY_IMPL(torch_geometry, CUDA, m) {
  m.impl("knn_graph", &knn_graph_generic);
}

} // namespace generic
} // namespace torch_geometry
