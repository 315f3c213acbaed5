// Internal building blocks shared by the CPU kernels of knn_graph and nnk_graph.
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <tuple>
#include <vector>

#include "../common.h"

namespace torch_geometry {
namespace cpu {

// Points ready for a kernel. Products are taken on a rescaled copy of x (in x's dtype), so
// that no square over- or underflows and no difference cancels:
//   cosine:   row i divided by a power of two near its max |x_i| (cos does not change);
//   gaussian: x minus its mean (distances do not change under translation), divided by one
//             power of two near the largest |value| left; distances here are 1 / scale of
//             the caller's, so a fixed sigma is divided by `scale` too.
// Powers of two make the division exact: data of moderate magnitude gives the same bits
// as unscaled. `valid[i]` is 0 for an all-zero row under the cosine kernel (no direction:
// such a node gets no edges and is nobody's candidate), 1 otherwise.
struct PreparedPoints {
  at::Tensor x;                  // [N, D], x's dtype, contiguous, rescaled as above
  std::vector<double> inv_norm;  // cosine: 1 / ||x_i|| (0 for zero rows), of the copy
  std::vector<double> sq_norm;   // ||x_i||^2, of the copy
  std::vector<char> valid;       // [N]
  int64_t num_invalid = 0;
  double scale = 1.0;            // gaussian: caller distance = scale * distance here
};

PreparedPoints prepare_points(const at::Tensor& x, Kernel kernel);

// Candidates kept per row beyond k, for the exact rescoring at the end of a search
// (knn_search and the out-of-sample search of nnk_neighbors).
constexpr int64_t kMargin = 8;

// A bounded min-heap holding a row's best k (score, index), worst on top.
// "Better" = larger score, then smaller index.
struct RowHeap {
  double* s;
  int64_t* id;
  int64_t k;

  static bool better(double sa, int64_t ia, double sb, int64_t ib) {
    return sa > sb || (sa == sb && ia >= 0 && (ib < 0 || ia < ib));
  }
  // Cheap rejection first: most candidates of a row are worse than its current k-th.
  inline void push(double v, int64_t j) {
    if (v < s[0] || !better(v, j, s[0], id[0])) {
      return;
    }
    int64_t pos = 0;
    while (true) {
      int64_t l = 2 * pos + 1, r = l + 1, worst = pos;
      double ws = v;
      int64_t wi = j;
      if (l < k && better(ws, wi, s[l], id[l])) {
        worst = l;
        ws = s[l];
        wi = id[l];
      }
      if (r < k && better(ws, wi, s[r], id[r])) {
        worst = r;
      }
      if (worst == pos) {
        break;
      }
      s[pos] = s[worst];
      id[pos] = id[worst];
      pos = worst;
    }
    s[pos] = v;
    id[pos] = j;
  }
};

// How knn_search selects candidates:
//   Tiled:     the Gram matrix in square tiles through at::mm, only for tile pairs (a, b)
//              with b >= a: each tile updates the heaps of its rows and, transposed, of its
//              columns, so every dot product is computed once (half the flops of a plain
//              search) and no N x N matrix is ever held;
//   Fused:     scores formed and tested in registers (knn_fused.h): every product computed
//              twice but nothing written; float32 on x86-64 with AVX2 + FMA only;
//   FusedAvx2: Fused with its AVX2 kernel even where the CPU has AVX-512;
//   Auto:      Fused for float32 points of D <= fused_max_dim() where available, else Tiled.
// Both end with the same exact rescoring, so they return the same neighbours (up to ties
// that float rounding of the selection scores split differently beyond kMargin).
enum class SearchEngine { Auto, Tiled, Fused, FusedAvx2 };

// Exact k nearest other points of every valid point (selection: see SearchEngine).
// Returns
//   index [N, k] int64, best first (-1 pads rows with fewer than k valid others), and
//   score [N, k] double: cos(x_i, x_j) for the cosine kernel, ||x_i - x_j||^2 for the
//   Gaussian kernel (0 where padded).
// Either selection keeps k + 8 candidates per row; those are rescored exactly (simd_dot.h, the
// same values the NNK solve uses) and the best k kept, ties broken by the smaller index:
// the result does not depend on the thread count, on the BLAS behind at::mm or on the
// engine (but for such ties).
std::tuple<at::Tensor, at::Tensor> knn_search(const PreparedPoints& pts, Kernel kernel,
                                              int64_t k,
                                              SearchEngine engine = SearchEngine::Auto);

// The "euclidean" candidate metric: the k nearest other points of every point by L2
// distance on the raw x, nearest first, ties to the smaller index (-1 pads). The search is
// knn_search itself under the Gaussian preparation of x (whose ranking is the L2 ranking),
// restricted to the points with `valid[i]` (the graph kernel's: all-zero rows stay out
// under the cosine kernel). Returns index [N, k] int64.
at::Tensor euclidean_candidates(const at::Tensor& x, const std::vector<char>& valid, int64_t k);

// Raw kernel arguments from every point i to its candidates index[i] ([N, k] int64, -1 =
// none, packed at the front): cos(x_i, x_j) clamped to [-1, 1] (cosine) or the squared
// distance (gaussian) of the prepared copy, by the same simd_dot products as the search's
// rescoring. Returns [N, k] double, 0 where index < 0.
at::Tensor candidate_scores(const PreparedPoints& pts, Kernel kernel, const at::Tensor& index);

// Per-node sigma of the Gaussian kernel from each node's largest candidate distance
// (`far_sq[i]` = squared distance to its k-th neighbour, < 0 when it has none).
std::vector<double> resolve_sigma(SigmaMode mode, double sigma,
                                  const std::vector<double>& far_sq);

// Kernel value from a raw score (cosine: cos; gaussian: squared distance).
inline double kernel_value(Kernel kernel, double raw, double sigma) {
  if (kernel == Kernel::Cosine) {
    return 0.5 * (1.0 + raw);
  }
  // raw / sigma / sigma rather than raw / (2 sigma^2): sigma^2 underflows to 0 for
  // sigma < ~1e-162 and would give 0 / 0 = NaN; this form gives 1 at raw = 0 and 0 when
  // the ratio overflows, never NaN.
  return std::exp(-0.5 * (raw / sigma / sigma));
}

} // namespace cpu
} // namespace torch_geometry
