// Native CUDA kernels (nvcc, CUDA build only). Unverified until a run on a GPU has compared
// them with the CPU kernels: they are off by default (see csrc/generic/native_cuda.h).
// Each replaces one step of the device-generic path and takes the same inputs, so the
// rules around it (checks, rescoring, duplicates, thresholds, output order) stay the
// generic code's.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace torch_geometry {
namespace cuda {

// Candidate selection of the kNN search, fused into the GEMM tiles: for the query rows
// [r0, r0 + nr), the kk best candidates j != i with valid[j] by score a[j] * <x_q, x_j> +
// c[j] (larger first, ties to the smaller index), -1 where a row has fewer.
//   x [N, D] float32 contiguous CUDA; a, c [N] float32; valid [N] bool.
// Returns index [nr, kk] int64 (best first). The scores only select: the caller rescores.
at::Tensor knn_select(
    const at::Tensor& x,
    const at::Tensor& a,
    const at::Tensor& c,
    const at::Tensor& valid,
    int64_t r0,
    int64_t nr,
    int64_t kk);

// Exact NNK solve of a block of nodes, one warp per node (Lawson-Hanson active set, the
// rules of csrc/cpu/nnk_solver.h: entering by the largest gradient above tol, a ridge
// relative to the diagonal, skipping of numerically dependent candidates).
//   K [B, k, k] float64 (kernel among candidates, 1 on the diagonal), b [B, k] float64,
//   m [B] int32 (candidates of the node, packed at the front).
// Returns theta [B, k] float64 (0 beyond m).
at::Tensor nnk_solve(
    const at::Tensor& K,
    const at::Tensor& b,
    const at::Tensor& m,
    double tol,
    double ridge);

} // namespace cuda
} // namespace torch_geometry
