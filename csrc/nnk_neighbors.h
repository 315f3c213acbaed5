#pragma once

#include <ATen/ATen.h>
#include <c10/util/Optional.h>
#include <c10/util/string_view.h>

#include <functional>
#include <tuple>

namespace torch_geometry {
namespace ops {

// NNK neighbourhoods of new points (queries) among a reference set (DESIGN §2, out of
// sample).
//
// Each query q gets the NNK polytope of its candidates S among the reference points only
// (never other queries): theta_q = argmin_{theta >= 0} 1/2 theta^T K_SS theta - k_S^T theta,
// solved by the same exact solver and under the same rules as nnk_graph (KKT-optimal; a
// reference point that duplicates the query, kappa = 1, gets weight 1 and the others 0; an
// all-zero query or reference row under the cosine kernel takes no part).
//
// Args:
//   queries    [Q, D] float32 or float64, finite, any strides (Q >= 0).
//   reference  [N, D] the dtype and device of queries, finite.
//   k          candidates per query, 1 <= k < N; must equal candidates.size(1) if given.
//   kernel     "cosine" or "gaussian".
//   sigma, sigma_mode  Gaussian bandwidth: a fixed number (the same for every batch of
//              queries), else "mean" (mean over the queries of the distance to their k-th
//              candidate / 3: it depends on the batch) or "local" (per query).
//   candidate_metric  "kernel" (the k most similar reference points under the kernel) or
//              "euclidean" (the k nearest by L2 distance on the raw features, then weighed
//              by the kernel). Unused when candidates are given.
//   candidates [Q, k] int64 or None: indices into reference from any engine (-1 = padding;
//              repeats are dropped). None = exact search: tiles of queries x reference (no
//              Q x N matrix), k + 8 candidates per query rescored exactly and the best k
//              kept, ties to the smaller index (nnk_graph's kNN rule).
//   threshold  weights <= threshold are set to 0 (>= 0).
// Returns:
//   neighbors [Q, k] int64 into reference, by weight descending, then similarity
//             descending, then index; zero-weight candidates kept, -1 pads at the end.
//   weights   [Q, k] the queries' dtype: theta (0 off the support and on padding).
//   error     [Q] the queries' dtype: 1 - 2 theta^T k_S + theta^T K_SS theta in [0, 1];
//             1 for a query without candidates.
std::tuple<at::Tensor, at::Tensor, at::Tensor> nnk_neighbors(
    const at::Tensor& queries,
    const at::Tensor& reference,
    int64_t k,
    c10::string_view kernel,
    c10::optional<double> sigma,
    c10::string_view sigma_mode,
    c10::string_view candidate_metric,
    const c10::optional<at::Tensor>& candidates,
    double threshold);

// NNK interpolation of reference values at the queries:
//   out[q] = sum_j weights[q, j] values[neighbors[q, j]] / sum_j weights[q, j].
// A query whose weights sum to 0 (no candidate, e.g. an all-zero row under the cosine
// kernel) gets a row of zeros: there is nothing to interpolate from, and a row of NaN would
// spread through any later sum.
//
// Args:
//   neighbors [Q, k] int64, values in [0, N) or -1 (padding).
//   weights   [Q, k] float32 or float64, finite, >= 0, 0 on padding.
//   values    [N, C] float32 or float64 (labels as one-hot, or real vectors), finite; on
//             the device of neighbors and weights.
// Returns [Q, C] in the promoted dtype of weights and values, computed in float64.
at::Tensor nnk_interpolate(
    const at::Tensor& neighbors,
    const at::Tensor& weights,
    const at::Tensor& values);

namespace detail {

// Shared by the CPU and device-generic kernels of nnk_neighbors.

// Every argument check of nnk_neighbors (messages name the operator).
void check_neighbors_inputs(
    const at::Tensor& queries,
    const at::Tensor& reference,
    int64_t k,
    c10::string_view kernel,
    c10::optional<double> sigma,
    c10::string_view sigma_mode,
    c10::string_view candidate_metric,
    const c10::optional<at::Tensor>& candidates,
    double threshold);

// The nnk_graph function that solves a point set with given candidates (the dispatcher's,
// or the device-generic one).
using GraphSolver = std::function<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor& x,
    int64_t k,
    c10::string_view kernel,
    c10::optional<double> sigma,
    c10::string_view sigma_mode,
    const c10::optional<at::Tensor>& candidates,
    double threshold)>;

// Solves the queries' NNK problems on their candidates cand [Q, k] (int64 into reference,
// -1 padded) with `solve`, so that the solver, its duplicate and zero-row rules and its
// output order are nnk_graph's own: the point set is the reference rows that some query
// uses (in index order, so ties by index keep their order) followed by the queries, whose
// candidate lists are given and whose reference rows get none. Returns nnk_neighbors's
// results.
std::tuple<at::Tensor, at::Tensor, at::Tensor> solve_on_candidates(
    const at::Tensor& queries,
    const at::Tensor& reference,
    const at::Tensor& cand,
    c10::string_view kernel,
    c10::optional<double> sigma,
    c10::string_view sigma_mode,
    double threshold,
    const GraphSolver& solve);

// Checks of nnk_interpolate's arguments (messages name the operator).
void check_interpolate_inputs(
    const at::Tensor& neighbors,
    const at::Tensor& weights,
    const at::Tensor& values);

} // namespace detail

} // namespace ops
} // namespace torch_geometry
