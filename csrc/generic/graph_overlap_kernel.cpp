// Device-generic neighborhood_overlap (rules of csrc/cpu/graph_overlap_kernel.cpp): the
// supports of a block of nodes compared through [rows, k_a, k_b] equality masks.
#include <torch/library.h>

#include <algorithm>

#include "../graph_input.h"
#include "generic_common.h"

namespace torch_geometry {
namespace generic {

namespace {

// A row's support as a set: first[i, a] marks the first slot of each distinct neighbour
// with weight > 0, and p[i, a] the row-normalised weight of that neighbour (slots that list
// it twice added up), 0 elsewhere.
std::tuple<at::Tensor, at::Tensor> support_sets(const at::Tensor& nb, const at::Tensor& w) {
  const int64_t k = nb.size(1);
  const at::Tensor on = (nb >= 0) & (w > 0);
  const at::Tensor wd = w.to(at::kDouble).masked_fill(at::logical_not(on), 0.0);
  const at::Tensor same = (nb.unsqueeze(2) == nb.unsqueeze(1)) & on.unsqueeze(2) & on.unsqueeze(1);
  const at::Tensor before = at::ones({k, k}, same.options()).tril(-1);
  const at::Tensor first = on & at::logical_not((same & before).any(2));
  const at::Tensor merged = at::bmm(same.to(at::kDouble), wd.unsqueeze(2)).squeeze(2);
  const at::Tensor total = wd.sum(1, /*keepdim=*/true).clamp_min(1e-300);
  return std::make_tuple(first, (merged / total).masked_fill(at::logical_not(first), 0.0));
}

std::tuple<at::Tensor, at::Tensor> neighborhood_overlap_generic(
    const at::Tensor& neighbors_a,
    const at::Tensor& weights_a,
    const at::Tensor& neighbors_b,
    const at::Tensor& weights_b) {
  constexpr const char* op = "neighborhood_overlap";
  // The operators' one checker, on host copies of the graphs (csrc/graph_input.h).
  ::torch_geometry::check_graph_pair(neighbors_a.cpu(), weights_a.cpu(), neighbors_b.cpu(),
                                     weights_b.cpu(), op);
  const int64_t n = neighbors_a.size(0);
  const int64_t ka = neighbors_a.size(1), kb = neighbors_b.size(1);
  const auto dopt = weights_a.options().dtype(at::kDouble);
  at::Tensor jaccard = at::empty({n}, dopt);
  at::Tensor weighted = at::empty({n}, dopt);
  const int64_t rows = rows_for_budget((ka * ka + kb * kb + ka * kb) * 10 + 1, n);
  for (int64_t r0 = 0; r0 < n; r0 += rows) {
    const int64_t nr = std::min(rows, n - r0);
    const at::Tensor na = neighbors_a.narrow(0, r0, nr), nb = neighbors_b.narrow(0, r0, nr);
    at::Tensor fa, pa, fb, pb;
    std::tie(fa, pa) = support_sets(na, weights_a.narrow(0, r0, nr));
    std::tie(fb, pb) = support_sets(nb, weights_b.narrow(0, r0, nr));
    const at::Tensor match = (na.unsqueeze(2) == nb.unsqueeze(1)) & fa.unsqueeze(2) & fb.unsqueeze(1);
    const at::Tensor common = match.sum({1, 2}).to(at::kDouble);
    const at::Tensor united = fa.sum(1).to(at::kDouble) + fb.sum(1).to(at::kDouble) - common;
    const at::Tensor shared =
        at::where(match, at::minimum(pa.unsqueeze(2), pb.unsqueeze(1)), at::zeros({}, dopt)).sum({1, 2});
    const at::Tensor empty = united == 0;
    jaccard.narrow(0, r0, nr).copy_(at::where(empty, at::ones_like(common), common / united.clamp_min(1)));
    weighted.narrow(0, r0, nr).copy_(at::where(empty, at::ones_like(shared), shared.clamp_max(1.0)));
  }
  return std::make_tuple(jaccard, weighted);
}

} // namespace

TORCH_LIBRARY_FRAGMENT(torch_geometry, m) {
  m.def(
      "_generic_neighborhood_overlap(Tensor neighbors_a, Tensor weights_a, Tensor neighbors_b, "
      "Tensor weights_b) -> (Tensor jaccard, Tensor weighted)");
}

TORCH_LIBRARY_IMPL(torch_geometry, CompositeExplicitAutograd, m) {
  m.impl("_generic_neighborhood_overlap", &neighborhood_overlap_generic);
}

TORCH_LIBRARY_IMPL(torch_geometry, CUDA, m) {
  m.impl("neighborhood_overlap", &neighborhood_overlap_generic);
}

} // namespace generic
} // namespace torch_geometry
