#include "graph_overlap.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace torch_geometry {
namespace ops {

std::tuple<at::Tensor, at::Tensor> neighborhood_overlap(
    const at::Tensor& neighbors_a,
    const at::Tensor& weights_a,
    const at::Tensor& neighbors_b,
    const at::Tensor& weights_b) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torch_geometry::neighborhood_overlap", "")
                       .typed<decltype(neighborhood_overlap)>();
  return op.call(neighbors_a, weights_a, neighbors_b, weights_b);
}

TORCH_LIBRARY_FRAGMENT(torch_geometry, m) {
  m.def(
      "neighborhood_overlap(Tensor neighbors_a, Tensor weights_a, "
      "Tensor neighbors_b, Tensor weights_b) -> (Tensor jaccard, Tensor weighted)");
}

} // namespace ops
} // namespace torch_geometry
