#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace torch_geometry {
namespace ops {

// Registered as torch.ops.torch_geometry._knn_merge: an internal building block of
// torch_geometry.distributed (the leading underscore keeps it out of the traced, public ops).
//
// Exact rescoring of a shortlist of cosine-kernel candidates, for kNN searches
// whose points are split over several tensors (shards of a distributed search,
// approximate engines).
//
// For each query q_i, the candidates points[rows[i, l]] (l < L, -1 = padding)
// are scored by cos(q_i, p) with the same arithmetic as the exact search of
// knn_graph / nnk_graph (each row rescaled by a power of two, dot products of
// simd_dot.h, cos clamped to [-1, 1]), and the best k are kept, ties broken by
// the smaller id. The result is therefore the exact kNN of the full point set,
// bit for bit, whenever the shortlist holds the true k nearest.
//
// Args:
//   queries    [M, D] float32 or float64, CPU: the query points (unscaled, as
//   the caller
//              holds them).
//   query_ids  [M] int64: global id of each query (a candidate with the same id
//   is self
//              and skipped).
//   points     [C, D] same dtype as queries: the candidate points.
//   point_ids  [C] int64: global id of each candidate point, distinct.
//   rows       [M, L] int64: indices into points, -1 = padding; repeats are
//   skipped. k          neighbours kept per query, k >= 1.
// Returns:
//   index [M, k] int64: global ids, best first, -1 pads (a zero query row has
//   no
//         direction and gets none; a zero candidate row is nobody's neighbour).
//   score [M, k] float64: cos(q_i, p), 0 where padded.
std::tuple<at::Tensor, at::Tensor> knn_merge(const at::Tensor& queries, const at::Tensor& query_ids,
                                             const at::Tensor& points, const at::Tensor& point_ids,
                                             const at::Tensor& rows, int64_t k);

}  // namespace ops
}  // namespace torch_geometry
