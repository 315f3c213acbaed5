#include "channel_nnk.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace torch_geometry {
namespace ops {

std::tuple<at::Tensor, at::Tensor, at::Tensor> channel_nnk_graph(
    const at::Tensor& activations,
    int64_t k,
    c10::string_view kernel,
    double threshold) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torch_geometry::channel_nnk_graph", "")
                       .typed<decltype(channel_nnk_graph)>();
  return op.call(activations, k, kernel, threshold);
}

at::Tensor channel_overlap(const at::Tensor& neighbors, const at::Tensor& weights) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torch_geometry::channel_overlap", "")
                       .typed<decltype(channel_overlap)>();
  return op.call(neighbors, weights);
}

TORCH_LIBRARY_FRAGMENT(torch_geometry, m) {
  m.def(
      "channel_nnk_graph(Tensor activations, int k, str kernel=\"cosine\", "
      "float threshold=1e-10) -> (Tensor neighbors, Tensor weights, Tensor error)");
  m.def("channel_overlap(Tensor neighbors, Tensor weights) -> Tensor");
}

} // namespace ops
} // namespace torch_geometry
