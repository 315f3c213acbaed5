// Building blocks of the device-generic kernels: ATen operations only, so they run on any
// device torch runs on (CUDA in practice; tested on CPU against the CPU kernels). They
// follow the rules of the CPU kernels (csrc/cpu/) exactly: same checks and messages, same
// candidate order and ties, same duplicate, zero-row and singular-block handling.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

#include "../common.h"
#include "../knn_graph.h"
#include "aten_compat.h"

namespace torch_geometry {
namespace generic {

// Rows of a work buffer that fit the memory budget, at least 1 and at most max_rows.
// The budget (bytes, default 256 MiB) bounds every temporary of a block: kNN score tiles,
// gathered candidate rows, kernel blocks. TORCH_GEOMETRY_GENERIC_BUDGET (bytes) overrides it.
int64_t rows_for_budget(int64_t bytes_per_row, int64_t max_rows);

// csrc/graph_input.h's check_directed_graph, for tensors on any device.
void check_directed_graph(
    const at::Tensor& neighbors,
    const at::Tensor& weights,
    int64_t n,
    const char* op,
    const char* name = "");

// Points ready for a kernel, on x's device.
struct PreparedPoints {
  at::Tensor x;         // [N, D] x's dtype (as given, any strides)
  at::Tensor sq_norm;   // [N] float64, ||x_i||^2
  at::Tensor inv_norm;  // [N] float64, 1 / ||x_i|| (0 for an all-zero row)
  at::Tensor valid;     // [N] bool: false for an all-zero row under the cosine kernel
};

PreparedPoints prepare_points(const at::Tensor& x, Kernel kernel);

// Exact k nearest other valid points of every valid point (csrc/cpu/knn_search.h's rule):
// tiles of at::mm + a running top-(k + 8) per row (ties to the smaller index), then the
// k + 8 candidates are rescored in float64 and the best k kept, ties to the smaller index.
// Returns index [N, k] int64 (-1 pads) and score [N, k] float64: cos(x_i, x_j) clamped to
// [-1, 1] (cosine) or ||x_i - x_j||^2 (gaussian); 0 where padded.
std::tuple<at::Tensor, at::Tensor> knn_search(const PreparedPoints& pts, Kernel kernel, int64_t k);

// The "euclidean" candidate metric (csrc/cpu/knn_search.h's euclidean_candidates): the k
// nearest other points by L2 distance on the raw x, among the points `valid` (the graph
// kernel's), found by knn_search under the Gaussian preparation. Returns index [N, k] int64.
at::Tensor euclidean_candidates(const at::Tensor& x, const at::Tensor& valid, int64_t k);

// Exact raw kernel arguments in float64 from rows [r0, r0 + cand.size(0)) to their
// candidates cand [nr, m] (int64, -1 = none): cos(x_i, x_j) clamped to [-1, 1] (cosine) or
// ||x_i - x_j||^2 (gaussian); 0 where cand < 0.
at::Tensor raw_scores(const PreparedPoints& pts, Kernel kernel, int64_t r0, const at::Tensor& cand);

// Per-node sigma [N] float64 from far_sq [N] (squared distance to the farthest candidate,
// < 0 for a node without any), as csrc/cpu/knn_search.h's resolve_sigma.
at::Tensor resolve_sigma(SigmaMode mode, double sigma, const at::Tensor& far_sq);

// Kernel value from raw scores (cosine: cos; gaussian: squared distance), float64;
// sigma broadcasts against raw (ignored for cosine).
at::Tensor kernel_value(Kernel kernel, const at::Tensor& raw, const at::Tensor& sigma);

// The generic nnk_graph, also used per channel by channel_nnk_graph. Arguments and results
// as torch_geometry::ops::nnk_graph (csrc/nnk_graph.h), on x's device.
std::tuple<at::Tensor, at::Tensor, at::Tensor> nnk_graph(
    const at::Tensor& x,
    int64_t k,
    c10::string_view kernel,
    optional<double> sigma,
    c10::string_view sigma_mode,
    const optional<at::Tensor>& candidates,
    double threshold,
    c10::string_view candidate_metric = kDefaultCandidateMetric);

} // namespace generic
} // namespace torch_geometry
