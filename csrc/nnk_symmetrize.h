#pragma once

#include <ATen/ATen.h>
#include <c10/util/string_view.h>

#include <tuple>

namespace torch_geometry {
namespace ops {

// Turns the directed NNK form into an edge list (PyTorch Geometric's convention).
//
// Args:
//   neighbors [N, k] int64: candidates per node (-1 = padding), as nnk_graph returns them.
//   weights   [N, k] float32/float64 >= 0: theta per candidate (0 = no directed edge).
//   error     [N] reconstruction errors (used by "min_error").
//   mode      "none":  directed edges i -> j with theta_ij > 0, as they are.
//             "max":   W = max(W, W^T).   "mean": W = (W + W^T) / 2.
//             "min_error" (default): a pair (i, j) where each is a candidate of the other
//             gets the weight chosen by the endpoint with the smaller error (theta_ij if
//             e_i < e_j, theta_ji if e_j < e_i, the larger on a tie); a pair that is a
//             candidate on one side only gets no edge.
// Returns:
//   edge_index  [2, E] int64, rows (source, target), sorted by source then target;
//               undirected modes list both directions of every edge.
//   edge_weight [E] weights' dtype, > 0.
std::tuple<at::Tensor, at::Tensor> nnk_symmetrize(
    const at::Tensor& neighbors,
    const at::Tensor& weights,
    const at::Tensor& error,
    c10::string_view mode);

} // namespace ops
} // namespace torch_geometry
