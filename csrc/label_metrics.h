// Label signals on a directed NNK graph (DESIGN §3): how well the graph predicts the labels.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Optional.h>

#include <tuple>

namespace torch_geometry {
namespace ops {

// Leave-one-out NNK interpolation of the labels. Node i's prediction is
// yhat_i = sum_j theta_ij onehot(y_j) / sum_j theta_ij over its support (weights > 0);
// the graph never holds i itself, so this is leave-one-out by construction.
//
// Args:
//   neighbors (int64 [N, k]): candidate indices in [0, N), -1 = padding.
//   weights (floating [N, k]): NNK weights theta_ij >= 0.
//   labels (integer [N], not bool): classes in [0, num_classes), < kMaxClasses (common.h).
//   num_classes (int >= 1, optional): default max(labels) + 1. Memory and time do not
//     depend on it (each node accumulates over its <= k neighbours only).
//
// Returns, each [N] in weights' dtype:
//   hard: 1 where argmax yhat_i != y_i (ties go to the lowest class), else 0.
//   soft: 1 - yhat_i[y_i], in [0, 1].
//   A node without edges (sum theta = 0) predicts nothing: hard = soft = 1.
std::tuple<at::Tensor, at::Tensor> nnk_loo_error(
    const at::Tensor& neighbors,
    const at::Tensor& weights,
    const at::Tensor& labels,
    c10::optional<int64_t> num_classes = c10::nullopt);

// Share of the directed edge weight that crosses classes:
// sum_ij theta_ij [y_i != y_j] / sum_ij theta_ij over the directed graph. It equals the
// same ratio on the undirected graph W = (Theta + Theta^T) / 2 (symmetrize="mean").
// 0 when the graph has no edges.
//
// Args: neighbors (int64 [N, k]), weights (floating [N, k]), labels (integer [N]).
// Returns: a float in [0, 1].
double label_smoothness(
    const at::Tensor& neighbors,
    const at::Tensor& weights,
    const at::Tensor& labels);

} // namespace ops
} // namespace torch_geometry
