#pragma once

#include <ATen/ATen.h>
#include <c10/util/Optional.h>
#include <c10/util/string_view.h>

#include <tuple>

namespace torch_geometry {

// How the k candidates of a node are chosen (DESIGN §2):
//   Kernel    the k most similar under the graph's kernel;
//   Euclidean the k nearest by L2 distance on the raw features (the published DeepNNK and
//             CW-DeepNNK code), weighed by the kernel afterwards. For the Gaussian kernel the
//             two rankings are the same; for the cosine kernel they differ when norms vary.
enum class CandidateMetric {
  Kernel,
  Euclidean,
};

constexpr const char* kDefaultCandidateMetric = "kernel";

// "kernel" or "euclidean"; anything else is refused with a message naming `op`.
CandidateMetric parse_candidate_metric(c10::string_view name, const char* op);

namespace ops {

// Exact k nearest neighbours of every point among the *other* points (self excluded).
//
// Args:
//   x          [N, D] float32 or float64, CPU, any strides; finite values.
//   k          1 <= k < N (refused, not clamped, otherwise).
//   kernel     "cosine" (rows are unit-normalised; all-zero rows get no neighbours and are
//              nobody's neighbour) or "gaussian".
//   sigma      Gaussian kernel only: a fixed bandwidth > 0; when absent, `sigma_mode`.
//   sigma_mode "mean" (mean over nodes of the k-th neighbour distance / 3) or "local"
//              (per node, its k-th neighbour distance / 3).
//   candidate_metric "kernel" (the k most similar under the kernel) or "euclidean" (the k
//              nearest by L2 distance on the raw x; under the cosine kernel all-zero rows
//              stay excluded). The same exact search serves both.
// Returns:
//   neighbors    [N, k] int64, best first under candidate_metric; -1 pads rows with fewer
//                than k others.
//   similarities [N, k] x's dtype, kernel values in [0, 1] (0 where padded).
// The search runs in tiles (no N x N matrix); ties go to the smaller index.
std::tuple<at::Tensor, at::Tensor> knn_graph(
    const at::Tensor& x,
    int64_t k,
    c10::string_view kernel,
    c10::optional<double> sigma,
    c10::string_view sigma_mode,
    c10::string_view candidate_metric = kDefaultCandidateMetric);

} // namespace ops
} // namespace torch_geometry
