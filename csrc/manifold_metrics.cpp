#include "manifold_metrics.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace torch_geometry {
namespace ops {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
manifold_metrics(
    const at::Tensor& x,
    const at::Tensor& neighbors,
    const at::Tensor& weights,
    c10::string_view kernel,
    double alpha) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torch_geometry::manifold_metrics", "")
                       .typed<decltype(manifold_metrics)>();
  return op.call(x, neighbors, weights, kernel, alpha);
}

TORCH_LIBRARY_FRAGMENT(torch_geometry, m) {
  m.def(
      "manifold_metrics(Tensor x, Tensor neighbors, Tensor weights, "
      "str kernel_name=\"cosine\", float alpha=0.05) -> (Tensor degree, "
      "Tensor diameter, Tensor local_dim, Tensor log_volume, Tensor curvature)");
}

} // namespace ops
} // namespace torch_geometry
