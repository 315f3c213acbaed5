#include <ATen/ATen.h>
#include <torch/library.h>

#include "../common.h"
#include "../knn_graph.h"
#include "knn_search.h"

namespace torch_geometry {
namespace ops {

namespace {

std::tuple<at::Tensor, at::Tensor> knn_graph_kernel(
    const at::Tensor& x,
    int64_t k,
    c10::string_view kernel_name,
    c10::optional<double> sigma,
    c10::string_view sigma_mode,
    c10::string_view candidate_metric) {
  const char* op = "knn_graph";
  const Kernel kernel = parse_kernel(kernel_name, op);
  const CandidateMetric metric = parse_candidate_metric(candidate_metric, op);
  const SigmaMode mode = parse_sigma(kernel, sigma, sigma_mode, op);
  check_points(x, op);
  check_k(k, x.size(0), op);

  const cpu::PreparedPoints pts = cpu::prepare_points(x, kernel);
  at::Tensor index, score;
  if (metric == CandidateMetric::Euclidean && kernel == Kernel::Cosine) {
    index = cpu::euclidean_candidates(x, pts.valid, k);
    score = cpu::candidate_scores(pts, kernel, index);
  } else {
    // The Gaussian kernel ranks by L2 distance already: both metrics are this search.
    std::tie(index, score) = cpu::knn_search(pts, kernel, k);
  }

  const int64_t n = x.size(0);
  at::Tensor sim = at::zeros({n, k}, score.options());
  const int64_t* id = index.data_ptr<int64_t>();
  const double* sc = score.data_ptr<double>();
  double* out = sim.data_ptr<double>();
  std::vector<double> sig(n, 1.0);
  if (kernel == Kernel::Gaussian) {
    std::vector<double> far_sq(n, -1.0);
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t l = k - 1; l >= 0; --l) {
        if (id[i * k + l] >= 0) {
          far_sq[i] = sc[i * k + l];
          break;
        }
      }
    }
    sig = cpu::resolve_sigma(mode, sigma.value_or(0.0) / pts.scale, far_sq);
  }
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t l = 0; l < k; ++l) {
      if (id[i * k + l] >= 0) {
        out[i * k + l] = cpu::kernel_value(kernel, sc[i * k + l], sig[i]);
      }
    }
  }
  return std::make_tuple(index, sim.to(x.scalar_type()));
}

} // namespace

TORCH_LIBRARY_IMPL(torch_geometry, CPU, m) {
  m.impl("knn_graph", &knn_graph_kernel);
}

} // namespace ops
} // namespace torch_geometry
