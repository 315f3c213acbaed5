#pragma once

#include <ATen/ATen.h>
#include <c10/util/string_view.h>

#include <tuple>

#include "knn_graph.h"

namespace torch_geometry {
namespace ops {

// Channel-wise NNK graphs (DESIGN §4): one graph per channel, whose points are the N
// inputs with features activations[:, c].flatten() (H*W dims).
//
// Args:
//   activations [N, C, ...] float32/float64, CPU, any strides, finite; N > k.
//   k          candidates per node, 1 <= k < N.
//   kernel     "cosine" (default) or "gaussian" (sigma "mean", per channel).
//   threshold  weights <= threshold are set to 0.
//   candidate_metric "kernel" or "euclidean": how each channel's candidates are ranked (see
//              nnk_graph; the published CW-DeepNNK code uses "euclidean").
// Low-dimensional maps (H*W < k) and all-zero maps (after a ReLU) are normal here: the
// solver handles singular kernels, and under the cosine kernel an all-zero map is an
// isolated node of that channel's graph. Nothing is printed.
// Returns, in the directed form of nnk_graph, per channel:
//   neighbors [C, N, k] int64, weights [C, N, k] activations' dtype, error [C, N].
std::tuple<at::Tensor, at::Tensor, at::Tensor> channel_nnk_graph(
    const at::Tensor& activations,
    int64_t k,
    c10::string_view kernel,
    double threshold,
    c10::string_view candidate_metric = kDefaultCandidateMetric);

// Channel overlap matrix O[a, b] = mean over nodes of Jaccard(S_i^a, S_i^b), the NNK
// supports of node i in channels a and b (a node isolated in both counts 1, in one 0).
// High overlap = channels that see the same neighbourhoods (redundant channels).
//
// Args: neighbors [C, N, k] int64, weights [C, N, k] floating (channel_nnk_graph's output).
// Returns: [C, C] float64, symmetric, 1 on the diagonal.
at::Tensor channel_overlap(const at::Tensor& neighbors, const at::Tensor& weights);

} // namespace ops
} // namespace torch_geometry
