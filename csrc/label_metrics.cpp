#include "label_metrics.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace torch_geometry {
namespace ops {

std::tuple<at::Tensor, at::Tensor> nnk_loo_error(
    const at::Tensor& neighbors,
    const at::Tensor& weights,
    const at::Tensor& labels,
    c10::optional<int64_t> num_classes) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torch_geometry::nnk_loo_error", "")
                       .typed<decltype(nnk_loo_error)>();
  return op.call(neighbors, weights, labels, num_classes);
}

double label_smoothness(
    const at::Tensor& neighbors,
    const at::Tensor& weights,
    const at::Tensor& labels) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torch_geometry::label_smoothness", "")
                       .typed<decltype(label_smoothness)>();
  return op.call(neighbors, weights, labels);
}

TORCH_LIBRARY_FRAGMENT(torch_geometry, m) {
  m.def(
      "nnk_loo_error(Tensor neighbors, Tensor weights, Tensor labels, "
      "int? num_classes=None) -> (Tensor hard, Tensor soft)");
  m.def(
      "label_smoothness(Tensor neighbors, Tensor weights, Tensor labels) "
      "-> float");
}

} // namespace ops
} // namespace torch_geometry
