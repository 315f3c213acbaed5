#include "nnk_symmetrize.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace torch_geometry {
namespace ops {

std::tuple<at::Tensor, at::Tensor> nnk_symmetrize(
    const at::Tensor& neighbors,
    const at::Tensor& weights,
    const at::Tensor& error,
    c10::string_view mode) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torch_geometry::nnk_symmetrize", "")
                       .typed<decltype(nnk_symmetrize)>();
  return op.call(neighbors, weights, error, mode);
}

TORCH_LIBRARY_FRAGMENT(torch_geometry, m) {
  m.def(
      "nnk_symmetrize(Tensor neighbors, Tensor weights, Tensor error, "
      "str mode=\"min_error\") -> (Tensor edge_index, Tensor edge_weight)");
}

} // namespace ops
} // namespace torch_geometry
