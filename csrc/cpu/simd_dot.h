// The one dot-product engine of the operators: many dot products (or squared distances) of
// one vector against a list of rows. The inner loop of the NNK solve (a column of K_SS is
// one such call), the kNN search's exact rescoring, and the Gram matrices and projections
// of manifold_metrics (in double there).
//
// x86-64 builds carry an AVX2 + FMA version next to the portable one and pick it at run
// time (__builtin_cpu_supports), so the library still runs on any x86-64 CPU. Each output
// is computed by the same sequence of operations whatever its position in the list, and
// dot(x, y) == dot(y, x) bitwise (the products commute, the order of the sum is fixed), so
// results depend neither on how a caller groups its rows nor on the thread count; they may
// differ in the last bits between a CPU with AVX2 and one without.
#pragma once

#include <cstdint>

namespace torch_geometry {
namespace cpu {

// out[a] = <x, rows[a]>, a in [0, m), vectors of length d.
void dot_many(const float* x, const float* const* rows, int m, int64_t d, float* out);
void dot_many(const double* x, const double* const* rows, int m, int64_t d, double* out);

// out[a] = ||x - rows[a]||^2.
void sqdist_many(const float* x, const float* const* rows, int m, int64_t d, float* out);
void sqdist_many(const double* x, const double* const* rows, int m, int64_t d, double* out);

// Whether the AVX2 + FMA versions are in use on this CPU.
bool simd_dot_uses_avx2();

} // namespace cpu
} // namespace torch_geometry
