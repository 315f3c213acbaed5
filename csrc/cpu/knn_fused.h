// Candidate selection of the exact kNN search for low-dimensional float32 points, fused:
// scores are formed in registers, a few query rows against a panel of candidates at a time,
// and compared there with each row's current k-th best; nothing of the N x N score matrix
// is ever written to memory.
//
// Why: with D ~ 50 (a channel's 7 x 7 map) a GEMM tile costs as much to write, read back
// and read again transposed as it costs to compute, and the selection, not the product,
// dominates the tiled search of knn_search.cpp. Fused, every score costs D fused
// multiply-adds and one comparison. The tiled search computes each pair's product once
// (both directions from one tile); this one computes it twice and still runs several times
// faster at small D. Above fused_max_dim() the tiled GEMM search wins and is used.
#pragma once

#include <cstdint>

namespace torch_geometry {
namespace cpu {

// Which vector instructions the fused selection uses. Best: AVX-512 where the CPU has it,
// else AVX2 + FMA. Avx2 forces the AVX2 kernel (tests compare the two on one machine).
enum class FusedIsa { Best, Avx2 };

// Whether this CPU runs the fused selection (x86-64 with AVX2 and FMA). The environment
// variable ATEN_CPU_CAPABILITY, read once at load as ATen reads it, caps the choice:
// "default" turns the fused selection off, "avx2" keeps it to the AVX2 kernel.
bool fused_select_available();

// The largest D at which knn_search picks the fused selection (float32 points only):
// 256 with AVX-512, 128 with AVX2. benchmarks/bench_knn_dims.py measures both against the
// tiled search: the AVX-512 kernel wins up to 256 over OpenBLAS and MKL; the AVX2 kernel
// wins up to 128 over OpenBLAS, but over MKL at D = 49 only (slower at 128)
// (benchmarks/results/knn_dims.md).
int64_t fused_max_dim();

// For every row i with valid[i]: the kk best candidates j != i with valid[j], by
//   score(i, j) = <x_i, y_j> + c_j,
// larger first, ties to the smaller j, written to heap_s / heap_i (kk slots per row, in no
// particular order; index -1 and score -inf fill the slots of a row with fewer candidates,
// and of an invalid row). x is [n, d] row-major; y is x with row j multiplied by a_j (the
// caller's per-candidate factor: 1 / ||x_j|| for the cosine ranking, 2 for the L2 ranking,
// whose c_j = -||x_j||^2). Scores are float32: they only select candidates, which the
// caller rescores exactly. Rows are independent and every score is formed by the same
// operations wherever its row and column sit, so the result does not depend on the thread
// count. isa = Avx2 runs the AVX2 kernel even on a CPU with AVX-512.
// Scores are kept with their index in 32 bits: n must be below 2^32 - 1.
void fused_select(const float* x, int64_t n, int64_t d, const float* a, const float* c,
                  const char* valid, int64_t kk, double* heap_s, int64_t* heap_i,
                  FusedIsa isa = FusedIsa::Best);

} // namespace cpu
} // namespace torch_geometry
