#include "generic_common.h"

#include "../graph_input.h"

#include <algorithm>
#include <cstdlib>
#include <string>

namespace torch_geometry {
namespace generic {

int64_t rows_for_budget(int64_t bytes_per_row, int64_t max_rows) {
  int64_t budget = int64_t(256) << 20;
  if (const char* env = std::getenv("TORCH_GEOMETRY_GENERIC_BUDGET")) {
    const long long v = std::atoll(env);
    if (v > 0) {
      budget = v;
    }
  }
  const int64_t rows = budget / std::max<int64_t>(1, bytes_per_row);
  return std::max<int64_t>(1, std::min<int64_t>(rows, std::max<int64_t>(1, max_rows)));
}

void check_directed_graph(
    const at::Tensor& neighbors,
    const at::Tensor& weights,
    int64_t n,
    const char* op,
    const char* name) {
  // The one checker of the operators (csrc/graph_input.h) reads values on the host: the
  // graph ([N, k], small beside the points) is copied there, so that every device gives the
  // same answers and the same errors.
  ::torch_geometry::check_directed_graph(neighbors.cpu(), weights.cpu(), n, op, name);
}

PreparedPoints prepare_points(const at::Tensor& x, Kernel kernel) {
  PreparedPoints pts;
  pts.x = x;
  const int64_t n = x.size(0);
  const int64_t d = x.size(1);
  // Squared norms in float64, a block of rows at a time: no float64 copy of all of x.
  pts.sq_norm = at::empty({n}, x.options().dtype(at::kDouble));
  const int64_t rows = rows_for_budget(2 * d * 8, n);
  for (int64_t r0 = 0; r0 < n; r0 += rows) {
    const int64_t nr = std::min(rows, n - r0);
    pts.sq_norm.narrow(0, r0, nr).copy_(x.narrow(0, r0, nr).to(at::kDouble).square().sum(1));
  }
  const at::Tensor positive = pts.sq_norm > 0;
  pts.inv_norm = at::where(positive, pts.sq_norm.rsqrt(), at::zeros_like(pts.sq_norm));
  pts.valid = kernel == Kernel::Cosine ? positive : at::ones_like(positive);
  return pts;
}

at::Tensor resolve_sigma(SigmaMode mode, double sigma, const at::Tensor& far_sq) {
  // A sigma of 0 (every candidate a duplicate) would give 0/0; such nodes only ever use the
  // duplicate rule, so any positive floor works (the CPU kernel's floor).
  const double floor = 1e-150;
  if (mode == SigmaMode::Fixed) {
    return at::full_like(far_sq, sigma);
  }
  if (mode == SigmaMode::Local) {
    return at::where(far_sq > 0, (far_sq.clamp_min(0).sqrt() / 3.0).clamp_min(floor),
                     at::full_like(far_sq, floor));
  }
  const at::Tensor has = far_sq >= 0;
  const at::Tensor count = has.sum();
  const at::Tensor sum = at::where(has, far_sq.clamp_min(0).sqrt(), at::zeros_like(far_sq)).sum();
  // count == 0: no node has a candidate; sigma is then never used, 1 as in the CPU kernel.
  const at::Tensor s = at::where(count > 0, (sum / count.clamp_min(1) / 3.0).clamp_min(floor),
                                 at::ones_like(sum));
  return s.expand_as(far_sq).contiguous();
}

at::Tensor kernel_value(Kernel kernel, const at::Tensor& raw, const at::Tensor& sigma) {
  if (kernel == Kernel::Cosine) {
    return 0.5 * (1.0 + raw);
  }
  return at::exp(-raw / (2.0 * sigma * sigma));
}

} // namespace generic
} // namespace torch_geometry
