#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "../common.h"
#include "../graph_input.h"
#include "../label_metrics.h"

namespace torch_geometry {
namespace ops {

namespace {

std::tuple<at::Tensor, at::Tensor> nnk_loo_error_kernel(
    const at::Tensor& neighbors,
    const at::Tensor& weights,
    const at::Tensor& labels,
    c10::optional<int64_t> num_classes) {
  constexpr const char* op = "nnk_loo_error";
  check_directed_graph(neighbors, weights, -1, op);
  const int64_t n = neighbors.size(0);
  const int64_t k = neighbors.size(1);
  const Labels lab = check_labels(labels, n, op, num_classes.value_or(-1));

  const at::Tensor nb_t = neighbors.contiguous();
  const at::Tensor w_t = weights.to(at::kDouble).contiguous();
  const int64_t* nb = nb_t.data_ptr<int64_t>();
  const double* w = w_t.data_ptr<double>();
  const int64_t* y = lab.y.data_ptr<int64_t>();

  at::Tensor hard = at::empty({n}, at::kDouble);
  at::Tensor soft = at::empty({n}, at::kDouble);
  double* hard_p = hard.data_ptr<double>();
  double* soft_p = soft.data_ptr<double>();

  parallel_chunks(n, 16, [&](int64_t i0, int64_t i1) {
    // (class, mass) of the classes among a node's <= k neighbours: the work and memory do
    // not depend on num_classes. Masses accumulate in row order, so the sums are the same
    // on any thread count.
    std::vector<std::pair<int64_t, double>> mass;
    mass.reserve(static_cast<size_t>(k));
    for (int64_t i = i0; i < i1; ++i) {
      mass.clear();
      // Weights relative to the row's largest: only ratios matter, and sums of weights
      // near DBL_MAX would overflow.
      double top = 0.0;
      for (int64_t c = 0; c < k; ++c) {
        top = std::max(top, nb[i * k + c] >= 0 ? w[i * k + c] : 0.0);
      }
      double total = 0.0;
      for (int64_t c = 0; c < k; ++c) {
        const int64_t j = nb[i * k + c];
        const double t = top > 0 ? w[i * k + c] / top : 0.0;
        if (j < 0 || !(t > 0)) {
          continue;
        }
        auto it = std::find_if(mass.begin(), mass.end(), [&](const auto& e) {
          return e.first == y[j];
        });
        if (it == mass.end()) {
          mass.emplace_back(y[j], t);
        } else {
          it->second += t;
        }
        total += t;
      }
      if (total <= 0) {
        hard_p[i] = 1.0;
        soft_p[i] = 1.0;
        continue;
      }
      // argmax over classes, ties to the lowest class.
      int64_t best = -1;
      double best_mass = 0.0;
      double own = 0.0;
      for (const auto& e : mass) {
        if (e.second > best_mass || (e.second == best_mass && e.first < best)) {
          best = e.first;
          best_mass = e.second;
        }
        if (e.first == y[i]) {
          own = e.second;
        }
      }
      hard_p[i] = best == y[i] ? 0.0 : 1.0;
      soft_p[i] = std::max(0.0, 1.0 - own / total);
    }
  });
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
  const Labels lab = check_labels(labels, n, op);

  const at::Tensor nb_t = neighbors.contiguous();
  const at::Tensor w_t = weights.to(at::kDouble).contiguous();
  const int64_t* nb = nb_t.data_ptr<int64_t>();
  const double* w = w_t.data_ptr<double>();
  const int64_t* y = lab.y.data_ptr<int64_t>();

  // Weights relative to the largest (the ratio does not change): sums of weights near
  // DBL_MAX would overflow to inf / inf.
  double top = 0.0;
  for (int64_t e = 0; e < n * k; ++e) {
    top = std::max(top, nb[e] >= 0 ? w[e] : 0.0);
  }
  const double unit = top > 0 ? top : 1.0;
  // Per-node partial sums, then one ordered reduction: independent of the thread count.
  std::vector<double> cross(static_cast<size_t>(n), 0.0);
  std::vector<double> all(static_cast<size_t>(n), 0.0);
  parallel_chunks(n, 256, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      for (int64_t c = 0; c < k; ++c) {
        const int64_t j = nb[i * k + c];
        const double t = w[i * k + c] / unit;
        if (j >= 0 && t > 0) {
          all[i] += t;
          if (y[j] != y[i]) {
            cross[i] += t;
          }
        }
      }
    }
  });
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
