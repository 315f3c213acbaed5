// Device-generic nnk_symmetrize: the CPU kernel's rules (csrc/cpu/nnk_symmetrize_kernel.cpp)
// with sorts of pair keys instead of per-entry loops.
#include <torch/library.h>

#include <string>

#include "../graph_input.h"
#include "generic_common.h"

namespace torch_geometry {
namespace generic {

namespace {

enum class SymMode { None, Max, Mean, MinError };

SymMode parse_sym_mode(c10::string_view mode) {
  if (mode == "none") return SymMode::None;
  if (mode == "max") return SymMode::Max;
  if (mode == "mean") return SymMode::Mean;
  if (mode == "min_error") return SymMode::MinError;
  TORCH_CHECK(false,
              "nnk_symmetrize: mode should be \"none\", \"max\", \"mean\" or \"min_error\", "
              "got \"", std::string(mode.data(), mode.size()), "\"");
}

// Edges sorted by (src, dst).
std::tuple<at::Tensor, at::Tensor> sorted_edges(const at::Tensor& src, const at::Tensor& dst,
                                                const at::Tensor& w, int64_t n) {
  const at::Tensor order = std::get<1>(at::sort(src * n + dst));
  return std::make_tuple(at::stack({src.index_select(0, order), dst.index_select(0, order)}),
                         w.index_select(0, order));
}

std::tuple<at::Tensor, at::Tensor> nnk_symmetrize_generic(const at::Tensor& neighbors,
                                                          const at::Tensor& weights,
                                                          const at::Tensor& error,
                                                          c10::string_view mode_name) {
  const char* op = "nnk_symmetrize";
  const SymMode mode = parse_sym_mode(mode_name);
  // The one checker of the operators (csrc/graph_input.h), on host copies of the graph.
  ::torch_geometry::check_directed_graph(neighbors.cpu(), weights.cpu(), error.cpu(), op);
  TORCH_CHECK(weights.scalar_type() == at::kFloat || weights.scalar_type() == at::kDouble, op,
              ": weights should be float32 or float64, got ", weights.scalar_type());
  const int64_t n = neighbors.size(0), k = neighbors.size(1);
  const at::Tensor err = error.to(weights.scalar_type());
  const at::Tensor rows = at::arange(n, neighbors.options()).unsqueeze(1).expand({n, k});
  const at::Tensor wd = weights.to(at::kDouble);
  if (mode == SymMode::None) {
    // Weight-0 entries too: a node listed twice is refused whatever its weights.
    const at::Tensor keep = neighbors >= 0;
    const at::Tensor src = rows.masked_select(keep), dst = neighbors.masked_select(keep);
    at::Tensor edge_index, edge_weight;
    std::tie(edge_index, edge_weight) = sorted_edges(src, dst, weights.masked_select(keep), n);
    if (edge_weight.numel() > 1) {
      const at::Tensor key = edge_index[0] * n + edge_index[1];
      const at::Tensor twice = (key.narrow(0, 1, key.numel() - 1) == key.narrow(0, 0, key.numel() - 1)).nonzero();
      if (twice.numel() > 0) {
        const int64_t e = twice[0][0].item<int64_t>() + 1;
        TORCH_CHECK(false, "nnk_symmetrize: neighbors[", edge_index[0][e].item<int64_t>(),
                    "] lists node ", edge_index[1][e].item<int64_t>(), " twice");
      }
    }
    const at::Tensor positive = (edge_weight > 0).nonzero().squeeze(1);
    return std::make_tuple(edge_index.index_select(1, positive), edge_weight.index_select(0, positive));
  }
  // Every listed candidate, weight 0 included: min-error needs to know who was a candidate,
  // and every mode refuses a node listed twice whatever its weights.
  const at::Tensor keep = neighbors >= 0;
  const at::Tensor src = rows.masked_select(keep), dst = neighbors.masked_select(keep);
  const at::Tensor w = wd.masked_select(keep);
  const at::Tensor lo = at::minimum(src, dst), hi = at::maximum(src, dst);
  const at::Tensor from_lo = src < dst;
  // Pair key, the entry from lo's row first (the CPU kernel's order).
  const at::Tensor order = std::get<1>(at::sort((lo * n + hi) * 2 + at::logical_not(from_lo).to(at::kLong)));
  const at::Tensor key = (lo * n + hi).index_select(0, order);
  const at::Tensor fl = from_lo.index_select(0, order);
  const at::Tensor ws = w.index_select(0, order);
  at::Tensor pair, group, counts;
  std::tie(pair, group, counts) = at::unique_consecutive(key, /*return_inverse=*/true,
                                                         /*return_counts=*/true);
  const int64_t np = pair.numel();
  const at::Tensor dopt = at::zeros({np}, wd.options());
  const at::Tensor n_lo = at::zeros({np}, key.options()).index_add_(0, group, fl.to(at::kLong));
  const at::Tensor n_hi = counts - n_lo;
  const at::Tensor bad = ((n_lo > 1) | (n_hi > 1)).nonzero();
  if (bad.numel() > 0) {
    const int64_t p = bad[0][0].item<int64_t>();
    const int64_t a = pair[p].item<int64_t>() / n, b = pair[p].item<int64_t>() % n;
    const bool listed_by_lo = n_lo[p].item<int64_t>() > 0;
    TORCH_CHECK(false, "nnk_symmetrize: node ", listed_by_lo ? a : b, " lists node ",
                listed_by_lo ? b : a, " twice");
  }
  const at::Tensor w_lo = dopt.clone().index_add_(0, group, ws * fl.to(at::kDouble));
  const at::Tensor w_hi = dopt.clone().index_add_(0, group, ws * at::logical_not(fl).to(at::kDouble));
  const at::Tensor plo = pair.div(n, "floor"), phi = pair.remainder(n);
  at::Tensor wp;
  if (mode == SymMode::Max) {
    wp = at::maximum(w_lo, w_hi);
  } else if (mode == SymMode::Mean) {
    wp = 0.5 * (w_lo + w_hi);
  } else {
    const at::Tensor e_lo = err.index_select(0, plo), e_hi = err.index_select(0, phi);
    wp = at::where(e_lo < e_hi, w_lo, at::where(e_hi < e_lo, w_hi, at::maximum(w_lo, w_hi)));
    wp = at::where((n_lo > 0) & (n_hi > 0), wp, at::zeros_like(wp));
  }
  const at::Tensor edge = wp > 0;
  const at::Tensor a = plo.masked_select(edge), b = phi.masked_select(edge), v = wp.masked_select(edge);
  at::Tensor edge_index, edge_weight;
  std::tie(edge_index, edge_weight) =
      sorted_edges(at::cat({a, b}), at::cat({b, a}), at::cat({v, v}), n);
  return std::make_tuple(edge_index, edge_weight.to(weights.scalar_type()));
}

} // namespace

TORCH_LIBRARY_FRAGMENT(torch_geometry, m) {
  m.def(
      "_generic_nnk_symmetrize(Tensor neighbors, Tensor weights, Tensor error, "
      "str mode=\"min_error\") -> (Tensor edge_index, Tensor edge_weight)");
}

TORCH_LIBRARY_IMPL(torch_geometry, CompositeExplicitAutograd, m) {
  m.impl("_generic_nnk_symmetrize", &nnk_symmetrize_generic);
}

TORCH_LIBRARY_IMPL(torch_geometry, CUDA, m) {
  m.impl("nnk_symmetrize", &nnk_symmetrize_generic);
}

} // namespace generic
} // namespace torch_geometry
