#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../graph_input.h"
#include "../label_metrics.h"

namespace torch_geometry {
namespace ops {

namespace {

// Checks labels: int64 [N] with values in [0, num_classes) (num_classes < 0: only >= 0).
void check_labels(
    const at::Tensor& labels,
    int64_t n,
    int64_t num_classes,
    const char* op) {
  TORCH_CHECK(
      labels.scalar_type() == at::kLong,
      op,
      ": labels should be int64 class indices, got ",
      labels.scalar_type());
  TORCH_CHECK(
      labels.dim() == 1 && labels.size(0) == n,
      op,
      ": labels should have shape [N] = [",
      n,
      "] (one per graph node), got ",
      labels.sizes());
  if (n == 0) {
    return;
  }
  const int64_t lo = labels.min().item<int64_t>();
  const int64_t hi = labels.max().item<int64_t>();
  TORCH_CHECK(lo >= 0, op, ": labels should be >= 0, got ", lo);
  TORCH_CHECK(
      num_classes < 0 || hi < num_classes,
      op,
      ": labels should be < num_classes = ",
      num_classes,
      ", got ",
      hi);
}

std::tuple<at::Tensor, at::Tensor> nnk_loo_error_kernel(
    const at::Tensor& neighbors,
    const at::Tensor& weights,
    const at::Tensor& labels,
    int64_t num_classes) {
  constexpr const char* op = "nnk_loo_error";
  check_directed_graph(neighbors, weights, -1, op);
  TORCH_CHECK(num_classes >= 1, op, ": num_classes should be >= 1, got ", num_classes);
  const int64_t n = neighbors.size(0);
  const int64_t k = neighbors.size(1);
  check_labels(labels, n, num_classes, op);

  const at::Tensor nb_t = neighbors.contiguous();
  const at::Tensor w_t = weights.to(at::kDouble).contiguous();
  const at::Tensor y_t = labels.contiguous();
  const int64_t* nb = nb_t.data_ptr<int64_t>();
  const double* w = w_t.data_ptr<double>();
  const int64_t* y = y_t.data_ptr<int64_t>();

  at::Tensor hard = at::empty({n}, at::kDouble);
  at::Tensor soft = at::empty({n}, at::kDouble);
  double* hard_p = hard.data_ptr<double>();
  double* soft_p = soft.data_ptr<double>();

#pragma omp parallel for num_threads(at::get_num_threads()) schedule(dynamic, 16)
  for (int64_t i = 0; i < n; ++i) {
    // Class mass, accumulated in row order: the sum is the same on any thread count.
    std::vector<double> mass(static_cast<size_t>(num_classes), 0.0);
    double total = 0.0;
    for (int64_t c = 0; c < k; ++c) {
      const int64_t j = nb[i * k + c];
      const double t = w[i * k + c];
      if (j >= 0 && t > 0) {
        mass[y[j]] += t;
        total += t;
      }
    }
    if (total <= 0) {
      hard_p[i] = 1.0;
      soft_p[i] = 1.0;
      continue;
    }
    int64_t best = 0;
    for (int64_t c = 1; c < num_classes; ++c) {
      if (mass[c] > mass[best]) {
        best = c;
      }
    }
    hard_p[i] = best == y[i] ? 0.0 : 1.0;
    soft_p[i] = std::max(0.0, 1.0 - mass[y[i]] / total);
  }
  const auto dtype = weights.scalar_type();
  return std::make_tuple(hard.to(dtype), soft.to(dtype));
}

double label_smoothness_kernel(
    const at::Tensor& neighbors,
    const at::Tensor& weights,
    const at::Tensor& labels) {
  constexpr const char* op = "label_smoothness";
  check_directed_graph(neighbors, weights, -1, op);
  const int64_t n = neighbors.size(0);
  const int64_t k = neighbors.size(1);
  check_labels(labels, n, -1, op);

  const at::Tensor nb_t = neighbors.contiguous();
  const at::Tensor w_t = weights.to(at::kDouble).contiguous();
  const at::Tensor y_t = labels.contiguous();
  const int64_t* nb = nb_t.data_ptr<int64_t>();
  const double* w = w_t.data_ptr<double>();
  const int64_t* y = y_t.data_ptr<int64_t>();

  // Per-node partial sums, then one ordered reduction: independent of the thread count.
  std::vector<double> cross(static_cast<size_t>(n), 0.0);
  std::vector<double> all(static_cast<size_t>(n), 0.0);
#pragma omp parallel for num_threads(at::get_num_threads()) schedule(dynamic, 16)
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t c = 0; c < k; ++c) {
      const int64_t j = nb[i * k + c];
      const double t = w[i * k + c];
      if (j >= 0 && t > 0) {
        all[i] += t;
        if (y[j] != y[i]) {
          cross[i] += t;
        }
      }
    }
  }
  double cross_sum = 0.0;
  double total = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    cross_sum += cross[i];
    total += all[i];
  }
  return total > 0 ? cross_sum / total : 0.0;
}

} // namespace

TORCH_LIBRARY_IMPL(torch_geometry, CPU, m) {
  m.impl("nnk_loo_error", &nnk_loo_error_kernel);
  m.impl("label_smoothness", &label_smoothness_kernel);
}

} // namespace ops
} // namespace torch_geometry
