// Device-generic nnk_loo_error and label_smoothness (rules of
// csrc/cpu/label_metrics_kernel.cpp): class masses by scatter_add over the support.
#include <torch/library.h>

#include "../common.h"
#include "generic_common.h"

namespace torch_geometry {
namespace generic {

namespace {

std::tuple<at::Tensor, at::Tensor> nnk_loo_error_generic(
    const at::Tensor& neighbors,
    const at::Tensor& weights,
    const at::Tensor& labels_in,
    c10::optional<int64_t> num_classes_in) {
  constexpr const char* op = "nnk_loo_error";
  check_directed_graph(neighbors, weights, -1, op);
  const int64_t n = neighbors.size(0);
  // The one label check of the operators (csrc/common.h); it reads the labels on the host.
  const Labels lab = check_labels(labels_in, n, op, num_classes_in.value_or(-1));
  // Classes renumbered in order among those present (at most N), so that the class masses
  // take [N, present] whatever the label ids (up to kMaxClasses); the order keeps the
  // "ties go to the lowest class" rule.
  const auto compact = at::_unique(lab.y.to(neighbors.device()), /*sorted=*/true,
                                   /*return_inverse=*/true);
  const at::Tensor labels = std::get<1>(compact);
  const int64_t num_classes = std::get<0>(compact).size(0);

  const at::Tensor on = (neighbors >= 0) & (weights > 0);
  const at::Tensor w = weights.to(at::kDouble).masked_fill(at::logical_not(on), 0.0);
  const at::Tensor y_nb = labels.index_select(0, neighbors.clamp_min(0).reshape({-1})).view(neighbors.sizes());
  const at::Tensor mass = at::zeros({n, num_classes}, w.options()).scatter_add_(1, y_nb, w);
  const at::Tensor total = w.sum(1);
  // argmax returns the first maximum: ties go to the lowest class.
  const at::Tensor best = mass.argmax(1);
  const at::Tensor own = mass.gather(1, labels.unsqueeze(1)).squeeze(1);
  const at::Tensor isolated = total <= 0;
  at::Tensor hard = (best != labels).to(at::kDouble);
  at::Tensor soft = (1.0 - own / total.clamp_min(1e-300)).clamp_min(0.0);
  hard = hard.masked_fill(isolated, 1.0);
  soft = soft.masked_fill(isolated, 1.0);
  const auto dtype = weights.scalar_type();
  return std::make_tuple(hard.to(dtype), soft.to(dtype));
}

double label_smoothness_generic(
    const at::Tensor& neighbors,
    const at::Tensor& weights,
    const at::Tensor& labels_in) {
  constexpr const char* op = "label_smoothness";
  check_directed_graph(neighbors, weights, -1, op);
  const int64_t n = neighbors.size(0);
  const at::Tensor labels = check_labels(labels_in, n, op).y.to(neighbors.device());
  if (neighbors.numel() == 0) {
    return 0.0;
  }
  const at::Tensor on = (neighbors >= 0) & (weights > 0);
  const at::Tensor w = weights.to(at::kDouble).masked_fill(at::logical_not(on), 0.0);
  const at::Tensor y_nb = labels.index_select(0, neighbors.clamp_min(0).reshape({-1})).view(neighbors.sizes());
  const at::Tensor cross = (w * (y_nb != labels.unsqueeze(1)).to(at::kDouble)).sum();
  const at::Tensor sums = at::stack({cross, w.sum()}).cpu();
  const double c = sums.data_ptr<double>()[0], total = sums.data_ptr<double>()[1];
  return total > 0 ? c / total : 0.0;
}

} // namespace

TORCH_LIBRARY_FRAGMENT(torch_geometry, m) {
  m.def(
      "_generic_nnk_loo_error(Tensor neighbors, Tensor weights, Tensor labels, int? num_classes=None) "
      "-> (Tensor hard, Tensor soft)");
  m.def("_generic_label_smoothness(Tensor neighbors, Tensor weights, Tensor labels) -> float");
}

TORCH_LIBRARY_IMPL(torch_geometry, CompositeExplicitAutograd, m) {
  m.impl("_generic_nnk_loo_error", &nnk_loo_error_generic);
  m.impl("_generic_label_smoothness", &label_smoothness_generic);
}

TORCH_LIBRARY_IMPL(torch_geometry, CUDA, m) {
  m.impl("nnk_loo_error", &nnk_loo_error_generic);
  m.impl("label_smoothness", &label_smoothness_generic);
}

} // namespace generic
} // namespace torch_geometry
