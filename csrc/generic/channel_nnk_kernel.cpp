// Device-generic channel_nnk_graph and channel_overlap (rules of
// csrc/cpu/channel_nnk_kernel.cpp).
#include <torch/library.h>

#include <algorithm>

#include "../graph_input.h"
#include "generic_common.h"

namespace torch_geometry {
namespace generic {

namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> channel_nnk_graph_generic(
    const at::Tensor& activations,
    int64_t k,
    c10::string_view kernel,
    double threshold,
    c10::string_view candidate_metric) {
  parse_candidate_metric(candidate_metric, "channel_nnk_graph");
  TORCH_CHECK(activations.dim() >= 3,
              "channel_nnk_graph: activations should be [N, C, ...] with spatial dims, got shape ",
              activations.sizes());
  const int64_t n = activations.size(0), c = activations.size(1);
  TORCH_CHECK(c >= 1, "channel_nnk_graph: activations have no channels (C = 0)");
  at::Tensor nbr = at::empty({c, n, k}, activations.options().dtype(at::kLong));
  at::Tensor w = at::empty({c, n, k}, activations.options());
  at::Tensor err = at::empty({c, n}, activations.options());
  for (int64_t ch = 0; ch < c; ++ch) {
    const at::Tensor x = activations.select(1, ch).reshape({n, -1});
    at::Tensor a, b, e;
    std::tie(a, b, e) = nnk_graph(x, k, kernel, c10::nullopt, "mean", c10::nullopt, threshold,
                                  candidate_metric);
    nbr[ch].copy_(a);
    w[ch].copy_(b);
    err[ch].copy_(e);
  }
  return std::make_tuple(nbr, w, err);
}

// O[a, b] = mean_i |S_i^a ∩ S_i^b| / |S_i^a ∪ S_i^b| over the supports as sets (the CPU
// kernel's rule): entry l of row (a, i) is common when it is the first of its value in its
// own row and the row (b, i) holds that value.
at::Tensor channel_overlap_generic(const at::Tensor& neighbors, const at::Tensor& weights) {
  const char* op = "channel_overlap";
  TORCH_CHECK(neighbors.dim() == 3, op, ": neighbors should be 3-D [C, N, k], got shape ",
              neighbors.sizes());
  TORCH_CHECK(weights.sizes() == neighbors.sizes(), op,
              ": weights should have the shape of neighbors ", neighbors.sizes(), ", got ",
              weights.sizes());
  {
    // The one checker of the operators (csrc/graph_input.h), per channel, on host copies.
    const at::Tensor nb_host = neighbors.cpu(), w_host = weights.cpu();
    for (int64_t ch = 0; ch < neighbors.size(0); ++ch) {
      ::torch_geometry::check_directed_graph(nb_host[ch], w_host[ch], neighbors.size(1), op);
    }
  }
  const int64_t c = neighbors.size(0), n = neighbors.size(1), k = neighbors.size(2);
  const auto dopt = weights.options().dtype(at::kDouble);
  at::Tensor out = at::ones({c, c}, dopt);
  if (n == 0 || c < 2) {
    return out;
  }
  const at::Tensor on = (neighbors >= 0) & (weights > 0);
  // A value no support holds, for the slots that are off.
  const at::Tensor nb = neighbors.masked_fill(at::logical_not(on), -2);
  const at::Tensor before = at::ones({k, k}, on.options()).tril(-1);
  // Equal entries before each slot in its own row.
  at::Tensor rank = at::empty({c, n, k}, neighbors.options());
  const int64_t rows = rows_for_budget(k * k * 2 + 1, c * n);
  const at::Tensor nbf = nb.reshape({c * n, k});
  const at::Tensor onf = on.reshape({c * n, k});
  for (int64_t r0 = 0; r0 < c * n; r0 += rows) {
    const int64_t nr = std::min(rows, c * n - r0);
    const at::Tensor v = nbf.narrow(0, r0, nr);
    rank.view({c * n, k}).narrow(0, r0, nr).copy_(
        ((v.unsqueeze(2) == v.unsqueeze(1)) & before & onf.narrow(0, r0, nr).unsqueeze(1)).sum(2));
  }
  // A neighbour listed twice in a row counts once (as the CPU kernel and neighborhood_overlap
  // merge them): only its first slot is kept.
  const at::Tensor first = on & (rank == 0);
  const at::Tensor len = first.sum(2).to(at::kDouble);  // [C, N] distinct support sizes
  // Channel a against every channel b, a block of nodes at a time.
  const int64_t node_rows = rows_for_budget(c * k * k * 2 + 1, n);
  for (int64_t a = 0; a < c; ++a) {
    at::Tensor common = at::zeros({c, n}, dopt);
    for (int64_t i0 = 0; i0 < n; i0 += node_rows) {
      const int64_t ni = std::min(node_rows, n - i0);
      const at::Tensor va = nb[a].narrow(0, i0, ni);                 // [ni, k]
      const at::Tensor vb = nb.narrow(1, i0, ni);                    // [C, ni, k]
      const at::Tensor held = (va.unsqueeze(0).unsqueeze(3) == vb.unsqueeze(2)).sum(3);  // [C, ni, k]
      const at::Tensor counted = first[a].narrow(0, i0, ni).unsqueeze(0) & (held > 0);
      common.narrow(1, i0, ni).copy_(counted.sum(2).to(at::kDouble));
    }
    const at::Tensor united = len[a].unsqueeze(0) + len - common;
    const at::Tensor jac = at::where(united > 0, common / united.clamp_min(1), at::ones_like(common));
    out[a].copy_(jac.sum(1) / static_cast<double>(n));
  }
  // The CPU kernel computes a < b and mirrors it; 1 on the diagonal.
  const at::Tensor upper = out.triu(1);
  return upper + upper.t() + at::eye(c, dopt);
}

} // namespace

TORCH_LIBRARY_FRAGMENT(torch_geometry, m) {
  m.def(
      "_generic_channel_nnk_graph(Tensor activations, int k, str kernel_name=\"cosine\", "
      "float threshold=1e-10, str candidate_metric=\"kernel\") "
      "-> (Tensor neighbors, Tensor weights, Tensor error)");
  m.def("_generic_channel_overlap(Tensor neighbors, Tensor weights) -> Tensor");
}

TORCH_LIBRARY_IMPL(torch_geometry, CompositeExplicitAutograd, m) {
  m.impl("_generic_channel_nnk_graph", &channel_nnk_graph_generic);
  m.impl("_generic_channel_overlap", &channel_overlap_generic);
}

TORCH_LIBRARY_IMPL(torch_geometry, CUDA, m) {
  m.impl("channel_nnk_graph", &channel_nnk_graph_generic);
  m.impl("channel_overlap", &channel_overlap_generic);
}

} // namespace generic
} // namespace torch_geometry
