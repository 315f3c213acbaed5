// Per-node manifold graph metrics of DESIGN §3, from points and their directed NNK graph.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/string_view.h>

#include <tuple>

namespace torch_geometry {
namespace ops {

// Local geometry of every node's NNK polytope.
//
// Node i's support is S_i = { neighbors[i, j] : weights[i, j] > 0 } and its polytope
// matrix V_i = [x_j - x_i]_{j in S_i} (D x |S_i|), taken on unit-normalised rows for the
// cosine kernel (all-zero rows stay zero: such nodes have no edges).
//
// Args:
//   x (float32/float64 [N, D], any strides): the points the graph was built on.
//   neighbors (int64 [N, k]): candidate indices in [0, N), -1 = padding.
//   weights (floating [N, k]): NNK weights theta_ij >= 0; 0 off the support.
//   kernel ("cosine" | "gaussian"): selects the distance, 1 - cos(x, y) (on the unit
//     sphere, in [0, 2]) or ||x - y||.
//   alpha (float in (0, 1)): Fukunaga-Olsen threshold of local_dim.
//
// Returns, each [N] (computed in float64, returned in x's dtype unless noted):
//   degree (int64): |S_i|.
//   diameter: max distance between two points of S_i union {i}.
//   local_dim (int64): number of squared singular values of V_i above alpha times the
//     largest.
//   log_volume: sum over r <= local_dim of log(s_r / sqrt(|S_i|)).
//   curvature: theta-weighted mean over j in S_i of
//     c_ij = 1 - ||T_i^T T_j||_F^2 / m, m = min(local_dim_i, local_dim_j), T the top-m
//     left singular vectors of V; in [0, 1], 0 on a flat piece. An edge with m = 0 (an
//     endpoint whose neighbours all coincide with it, so V = 0) has no subspace to
//     compare: it is left out of the mean, weight included; with no edge left,
//     curvature_i = 0.
//   Isolated nodes (degree 0) get diameter = local_dim = log_volume = curvature = 0; a
//   node whose neighbours all coincide with it gets the same (diameter 0 by definition).
//   No output is ever NaN.
//
// Cost: O(D (|S|^2 + local_dim (|S| + |Q|))) per node, Q = i's neighbours and theirs;
// extra memory O(N k^2), independent of D (no D-dimensional basis is stored per node).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
manifold_metrics(
    const at::Tensor& x,
    const at::Tensor& neighbors,
    const at::Tensor& weights,
    c10::string_view kernel,
    double alpha);

} // namespace ops
} // namespace torch_geometry
