#pragma once

#include <ATen/ATen.h>
#include <c10/util/Optional.h>
#include <c10/util/string_view.h>

#include <tuple>

#include "knn_graph.h"

namespace torch_geometry {
namespace ops {

// NNK (non-negative kernel regression) graph, directed form.
//
// For every node i with candidate set S (its k nearest other points, or the given
// candidates), solves exactly (KKT-optimal, active set)
//   theta_i = argmin_{theta >= 0} 1/2 theta^T K_SS theta - k_S^T theta
// where K_SS is the kernel among the candidates and k_S the kernel from i to them.
// Singular K_SS (duplicates, D < k) is handled by a 1e-12 relative ridge plus skipping
// entering candidates that are numerically dependent on the active ones. A candidate that
// is an exact duplicate of x_i (kappa = 1) gets weight 1, the others 0, and error 0.
//
// Args:
//   x          [N, D] float32 or float64, CPU, any strides, finite.
//   k          candidates per node, 1 <= k < N; must equal candidates.size(1) if given.
//   kernel     "cosine" or "gaussian" (see knn_graph).
//   sigma, sigma_mode  Gaussian bandwidth (see knn_graph); "local" uses each node's own.
//   candidates [N, k] int64 or None: candidate indices from any engine (-1 = padding);
//              self and repeats are dropped. None = exact k nearest neighbours.
//   candidate_metric  without `candidates`: "kernel" (the k most similar under the kernel)
//              or "euclidean" (the k nearest by L2 distance on the raw x, then weighed by
//              the kernel, as the published DeepNNK code does). Checked but unused when
//              candidates are given.
//   threshold  weights <= threshold are set to 0 (>= 0).
// Returns:
//   neighbors [N, k] int64: node i's candidates by weight descending, then similarity
//             descending; zero-weight candidates are kept, -1 pads at the end.
//   weights   [N, k] x's dtype: theta (0 off the NNK support and on padding).
//   error     [N] x's dtype: 1 - 2 theta^T k_S + theta^T K_SS theta, in [0, 1]; 1 for a
//             node without candidates (e.g. an all-zero row under the cosine kernel).
std::tuple<at::Tensor, at::Tensor, at::Tensor> nnk_graph(
    const at::Tensor& x,
    int64_t k,
    c10::string_view kernel,
    c10::optional<double> sigma,
    c10::string_view sigma_mode,
    const c10::optional<at::Tensor>& candidates,
    double threshold,
    c10::string_view candidate_metric = kDefaultCandidateMetric);

} // namespace ops
} // namespace torch_geometry
