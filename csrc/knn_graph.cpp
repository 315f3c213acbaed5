#include "knn_graph.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace torch_geometry {
namespace ops {

std::tuple<at::Tensor, at::Tensor> knn_graph(
    const at::Tensor& x,
    int64_t k,
    c10::string_view kernel,
    c10::optional<double> sigma,
    c10::string_view sigma_mode) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torch_geometry::knn_graph", "")
                       .typed<decltype(knn_graph)>();
  return op.call(x, k, kernel, sigma, sigma_mode);
}

TORCH_LIBRARY_FRAGMENT(torch_geometry, m) {
  m.def(
      "knn_graph(Tensor x, int k, str kernel=\"cosine\", float? sigma=None, "
      "str sigma_mode=\"mean\") -> (Tensor neighbors, Tensor similarities)");
}

} // namespace ops
} // namespace torch_geometry
