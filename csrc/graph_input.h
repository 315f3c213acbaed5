// Input checks shared by the operators that read a directed NNK graph
// (docs/CONVENTIONS.md: neighbors int64 [N, k], -1 padded; weights [N, k], 0 off support).
#pragma once

#include <ATen/ATen.h>

namespace torch_geometry {

// The one checker of a user-given directed graph, for every operator that reads one
// (nnk_symmetrize, the metrics ops, channel_overlap): neighbors 2-D int64 [N, k] with values
// in [0, N) or -1 (padding), weights floating of the same shape, every weight finite and
// >= 0, no weight > 0 on a padding slot, no node listed as its own neighbour (the label
// metrics are leave-one-out only because the graph never holds i itself), and neither
// tensor requiring grad. `n` is the number of nodes the caller expects (neighbors.size(0)
// when < 0); `op` names the operator and `name` the graph ("" or e.g. "_a") in the errors.
void check_directed_graph(
    const at::Tensor& neighbors,
    const at::Tensor& weights,
    int64_t n,
    const char* op,
    const char* name = "");

// Two graphs on the same N nodes (e.g. neighborhood_overlap's A and B), each checked as above
// with names "_a" and "_b".
void check_graph_pair(
    const at::Tensor& neighbors_a,
    const at::Tensor& weights_a,
    const at::Tensor& neighbors_b,
    const at::Tensor& weights_b,
    const char* op);

// The same, with the per-node reconstruction error [N] (floating, finite) of nnk_graph.
void check_directed_graph(
    const at::Tensor& neighbors,
    const at::Tensor& weights,
    const at::Tensor& error,
    const char* op);

} // namespace torch_geometry
