#include "nnk_graph.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace torch_geometry {
namespace ops {

std::tuple<at::Tensor, at::Tensor, at::Tensor> nnk_graph(
    const at::Tensor& x,
    int64_t k,
    c10::string_view kernel,
    c10::optional<double> sigma,
    c10::string_view sigma_mode,
    const c10::optional<at::Tensor>& candidates,
    double threshold,
    c10::string_view candidate_metric) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torch_geometry::nnk_graph", "")
                       .typed<decltype(nnk_graph)>();
  return op.call(x, k, kernel, sigma, sigma_mode, candidates, threshold, candidate_metric);
}

TORCH_LIBRARY_FRAGMENT(torch_geometry, m) {
  m.def(
      "nnk_graph(Tensor x, int k, str kernel_name=\"cosine\", float? sigma=None, "
      "str sigma_mode=\"mean\", Tensor? candidates=None, float threshold=1e-10, "
      "str candidate_metric=\"kernel\") "
      "-> (Tensor neighbors, Tensor weights, Tensor error)");
}

} // namespace ops
} // namespace torch_geometry
