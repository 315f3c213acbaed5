#include "knn_graph.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <string>

namespace torch_geometry {

CandidateMetric parse_candidate_metric(c10::string_view name, const char* op) {
  if (name == "kernel") {
    return CandidateMetric::Kernel;
  }
  if (name == "euclidean") {
    return CandidateMetric::Euclidean;
  }
  TORCH_CHECK(false, op, ": candidate_metric should be \"kernel\" or \"euclidean\", got \"",
              std::string(name.data(), name.size()), "\"");
}

namespace ops {

std::tuple<at::Tensor, at::Tensor> knn_graph(
    const at::Tensor& x,
    int64_t k,
    c10::string_view kernel,
    c10::optional<double> sigma,
    c10::string_view sigma_mode,
    c10::string_view candidate_metric) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torch_geometry::knn_graph", "")
                       .typed<decltype(knn_graph)>();
  return op.call(x, k, kernel, sigma, sigma_mode, candidate_metric);
}

TORCH_LIBRARY_FRAGMENT(torch_geometry, m) {
  m.def(
      "knn_graph(Tensor x, int k, str kernel_name=\"cosine\", float? sigma=None, "
      "str sigma_mode=\"mean\", str candidate_metric=\"kernel\") "
      "-> (Tensor neighbors, Tensor similarities)");
}

} // namespace ops
} // namespace torch_geometry
