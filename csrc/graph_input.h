// Input checks shared by the operators that read a directed NNK graph
// (docs/CONVENTIONS.md: neighbors int64 [N, k], -1 padded; weights [N, k], 0 off support).
#pragma once

#include <ATen/ATen.h>

namespace torch_geometry {

// Checks one directed graph: neighbors 2-D int64 with values in [-1, N), weights floating of
// the same shape, every weight finite and >= 0, and no weight > 0 on a -1 padding slot.
// `n` is the number of nodes the caller expects (neighbors.size(0) when < 0); `op` names the
// operator and `name` the graph ("" or e.g. "_a") in the error messages.
void check_directed_graph(
    const at::Tensor& neighbors,
    const at::Tensor& weights,
    int64_t n,
    const char* op,
    const char* name = "");

} // namespace torch_geometry
