#include "knn_merge.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace torch_geometry {
namespace ops {

std::tuple<at::Tensor, at::Tensor> knn_merge(const at::Tensor& queries, const at::Tensor& query_ids,
                                             const at::Tensor& points, const at::Tensor& point_ids,
                                             const at::Tensor& rows, int64_t k) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torch_geometry::_knn_merge", "")
                       .typed<decltype(knn_merge)>();
  return op.call(queries, query_ids, points, point_ids, rows, k);
}

TORCH_LIBRARY_FRAGMENT(torch_geometry, m) {
  m.def(
      "_knn_merge(Tensor queries, Tensor query_ids, Tensor points, Tensor "
      "point_ids, "
      "Tensor rows, int k) -> (Tensor index, Tensor score)");
}

}  // namespace ops
}  // namespace torch_geometry
