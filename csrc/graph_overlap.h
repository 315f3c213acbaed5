// Comparing two NNK graphs on the same N points (two layers, epochs, seeds or models;
// the points may live in different dimensions), DESIGN §3.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace torch_geometry {
namespace ops {

// Per-node agreement of two directed NNK graphs A and B on the same N nodes.
//
// Args:
//   neighbors_a (int64 [N, k_a]), weights_a (floating [N, k_a]): graph A.
//   neighbors_b (int64 [N, k_b]), weights_b (floating [N, k_b]): graph B; k_b may differ.
//
// Returns, each [N] in float64:
//   jaccard: |S_i^A ∩ S_i^B| / |S_i^A ∪ S_i^B| over the supports (weights > 0).
//   weighted: sum_j min(p_ij^A, p_ij^B), p = theta divided by its row sum; in [0, 1].
//   A node isolated in both graphs counts as agreeing (1 for both); isolated in one only
//   gives 0.
std::tuple<at::Tensor, at::Tensor> neighborhood_overlap(
    const at::Tensor& neighbors_a,
    const at::Tensor& weights_a,
    const at::Tensor& neighbors_b,
    const at::Tensor& weights_b);

} // namespace ops
} // namespace torch_geometry
