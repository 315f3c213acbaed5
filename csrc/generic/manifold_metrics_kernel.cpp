// Device-generic manifold_metrics (definitions of csrc/manifold_metrics.h, rules of
// csrc/cpu/manifold_metrics_kernel.cpp), in Gram form on a block of nodes at a time:
// G_i = V_i V_i^T ([k, k], support slots only), batched eigh for the spectrum, and for the
// curvature T_i^T T_j = coef_i^T (V_i V_j^T) coef_j with coef = U_r diag(1 / s_r), so no
// D-dimensional basis is ever formed.
#include <torch/library.h>

#include <algorithm>

#include "generic_common.h"

namespace torch_geometry {
namespace generic {

namespace {

constexpr const char* kMetricsOp = "manifold_metrics";

// V for the nodes `nodes` (any shape S): rows x_j - x_i over the support slots of each
// node (zero rows elsewhere), float64, shape [S..., k, D].
at::Tensor polytopes(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& nb,
                     const at::Tensor& on, const at::Tensor& nodes) {
  const int64_t k = nb.size(1), d = x.size(1);
  const at::Tensor flat_nodes = nodes.reshape({-1});
  const at::Tensor cand = nb.index_select(0, flat_nodes).clamp_min(0).reshape({-1});
  const at::Tensor mask = on.index_select(0, flat_nodes).view({-1, k, 1});
  const at::Tensor xj = x.index_select(0, cand).to(at::kDouble).view({-1, k, d}) *
      scale.index_select(0, cand).view({-1, k, 1});
  const at::Tensor xi = (x.index_select(0, flat_nodes).to(at::kDouble) *
                         scale.index_select(0, flat_nodes).unsqueeze(1)).unsqueeze(1);
  std::vector<int64_t> shape(nodes.sizes().begin(), nodes.sizes().end());
  shape.push_back(k);
  shape.push_back(d);
  return (xj - xi).masked_fill(at::logical_not(mask), 0.0).view(shape);
}

// Spectrum of G = V V^T [..., k, k]: local_dim (count of eigenvalues above alpha times the
// largest, 0 when the largest is not > 0) and coef [..., k, k] (column r < local_dim:
// eigenvector r, largest first, divided by sqrt(eigenvalue r); zero columns after).
std::tuple<at::Tensor, at::Tensor, at::Tensor> spectrum(const at::Tensor& gram, double alpha) {
  at::Tensor lam, vec;
  std::tie(lam, vec) = at::linalg_eigh(gram, "L");
  lam = lam.flip(-1);
  vec = vec.flip(-1);
  const at::Tensor top = lam.select(-1, 0).unsqueeze(-1);
  const at::Tensor above = (lam > alpha * top) & (top > 0);
  const at::Tensor ld = above.sum(-1);
  const at::Tensor coef =
      (vec / lam.clamp_min(1e-300).sqrt().unsqueeze(-2)).masked_fill(at::logical_not(above).unsqueeze(-2), 0.0);
  return std::make_tuple(ld, lam.masked_fill(at::logical_not(above), 1.0), coef);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
manifold_metrics_generic(
    const at::Tensor& x,
    const at::Tensor& neighbors,
    const at::Tensor& weights,
    c10::string_view kernel,
    double alpha) {
  check_points(x, kMetricsOp);
  const Kernel kern = parse_kernel(kernel, kMetricsOp);
  TORCH_CHECK(
      alpha > 0.0 && alpha < 1.0, kMetricsOp, ": alpha should be in (0, 1), got ", alpha);
  const int64_t n = x.size(0), d = x.size(1), k = neighbors.size(1);
  check_directed_graph(neighbors, weights, n, kMetricsOp);
  const bool cosine = kern == Kernel::Cosine;
  const auto dopt = x.options().dtype(at::kDouble);
  const at::Tensor scale = cosine ? prepare_points(x, kern).inv_norm : at::ones({n}, dopt);
  const at::Tensor on = (neighbors >= 0) & (weights > 0);
  const at::Tensor theta = weights.to(at::kDouble).masked_fill(at::logical_not(on), 0.0);
  const at::Tensor degree = on.sum(1);
  at::Tensor diameter = at::zeros({n}, dopt);
  at::Tensor local_dim = at::zeros({n}, degree.options());
  at::Tensor log_volume = at::zeros({n}, dopt);
  at::Tensor curvature = at::zeros({n}, dopt);
  const at::Tensor pair_ok = on.unsqueeze(2) & on.unsqueeze(1);

  // Pass 1: diameter, local_dim, log_volume.
  const int64_t rows1 = rows_for_budget(k * d * 8 * 3 + k * k * 8 * 8, n);
  for (int64_t r0 = 0; r0 < n; r0 += rows1) {
    const int64_t nr = std::min(rows1, n - r0);
    const at::Tensor nodes = at::arange(r0, r0 + nr, neighbors.options());
    const at::Tensor v = polytopes(x, scale, neighbors, on, nodes);
    const at::Tensor g = at::bmm(v, v.transpose(1, 2));
    const at::Tensor sq = at::diagonal(g, 0, 1, 2);
    const at::Tensor pair = (sq.unsqueeze(2) + sq.unsqueeze(1) - 2.0 * g)
                                .masked_fill(at::logical_not(pair_ok.narrow(0, r0, nr)), 0.0);
    const at::Tensor max_sq =
        at::maximum(sq.amax(1), pair.reshape({nr, -1}).amax(1)).clamp_min(0.0);
    diameter.narrow(0, r0, nr).copy_(cosine ? 0.5 * max_sq : max_sq.sqrt());
    at::Tensor ld, lam, coef;
    std::tie(ld, lam, coef) = spectrum(g, alpha);
    local_dim.narrow(0, r0, nr).copy_(ld);
    const at::Tensor s = degree.narrow(0, r0, nr).to(at::kDouble).clamp_min(1).unsqueeze(1);
    const at::Tensor above = at::arange(k, ld.options()).unsqueeze(0) < ld.unsqueeze(1);
    log_volume.narrow(0, r0, nr).copy_(
        (0.5 * (lam / s).log()).masked_fill(at::logical_not(above), 0.0).sum(1));
  }

  // Pass 2: curvature. Per node i and support slot c (neighbour j):
  //   c_ij = 1 - ||coef_i[:, :m]^T V_i V_j^T coef_j[:, :m]||_F^2 / m, m = min(ld_i, ld_j).
  const int64_t rows2 = rows_for_budget(k * k * d * 8 * 2 + k * k * k * 8 * 10, n);
  for (int64_t r0 = 0; r0 < n; r0 += rows2) {
    const int64_t nr = std::min(rows2, n - r0);
    const at::Tensor nodes = at::arange(r0, r0 + nr, neighbors.options());
    const at::Tensor vi = polytopes(x, scale, neighbors, on, nodes);               // [nr, k, D]
    const at::Tensor coef_i = std::get<2>(spectrum(at::bmm(vi, vi.transpose(1, 2)), alpha));
    const at::Tensor nbrs = neighbors.narrow(0, r0, nr).clamp_min(0);             // [nr, k]
    const at::Tensor vj = polytopes(x, scale, neighbors, on, nbrs);               // [nr, k, k, D]
    const at::Tensor coef_j = std::get<2>(spectrum(at::matmul(vj, vj.transpose(2, 3)), alpha));
    // cross[i, c] = coef_i^T (V_i V_j^T) coef_j: [nr, k(slot), k, k].
    const at::Tensor vv = at::matmul(vi.unsqueeze(1), vj.transpose(2, 3));
    const at::Tensor cross = at::matmul(at::matmul(coef_i.transpose(1, 2).unsqueeze(1), vv), coef_j);
    const at::Tensor ld_i = local_dim.narrow(0, r0, nr).unsqueeze(1);            // [nr, 1]
    const at::Tensor ld_j = local_dim.index_select(0, nbrs.reshape({-1})).view({nr, k});
    const at::Tensor m = at::minimum(ld_i, ld_j);                                 // [nr, k]
    const at::Tensor r = at::arange(k, m.options());
    const at::Tensor keep = (r.view({1, 1, k, 1}) < m.view({nr, k, 1, 1})) &
        (r.view({1, 1, 1, k}) < m.view({nr, k, 1, 1}));
    const at::Tensor fro = cross.square().masked_fill(at::logical_not(keep), 0.0).sum({2, 3});
    const at::Tensor cij = (1.0 - fro / m.to(at::kDouble).clamp_min(1)).clamp(0.0, 1.0);
    const at::Tensor edge = on.narrow(0, r0, nr) & (m > 0);
    const at::Tensor t = theta.narrow(0, r0, nr).masked_fill(at::logical_not(edge), 0.0);
    const at::Tensor total = t.sum(1);
    curvature.narrow(0, r0, nr).copy_(
        at::where(total > 0, (t * cij).sum(1) / total.clamp_min(1e-300), at::zeros_like(total)));
  }
  const auto dtype = x.scalar_type();
  return std::make_tuple(
      degree, diameter.to(dtype), local_dim, log_volume.to(dtype), curvature.to(dtype));
}

} // namespace

TORCH_LIBRARY_FRAGMENT(torch_geometry, m) {
  m.def(
      "_generic_manifold_metrics(Tensor x, Tensor neighbors, Tensor weights, "
      "str kernel_name=\"cosine\", float alpha=0.05) -> (Tensor degree, "
      "Tensor diameter, Tensor local_dim, Tensor log_volume, Tensor curvature)");
}

TORCH_LIBRARY_IMPL(torch_geometry, CompositeExplicitAutograd, m) {
  m.impl("_generic_manifold_metrics", &manifold_metrics_generic);
}

TORCH_LIBRARY_IMPL(torch_geometry, CUDA, m) {
  m.impl("manifold_metrics", &manifold_metrics_generic);
}

} // namespace generic
} // namespace torch_geometry
