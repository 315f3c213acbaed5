#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "../common.h"
#include "../graph_input.h"
#include "../graph_overlap.h"

namespace torch_geometry {
namespace ops {

namespace {

using Entry = std::pair<int64_t, double>;  // (neighbour, row-normalised weight)

// Node i's support with p = theta / sum(theta), sorted by neighbour index. A neighbour
// listed twice in a row (user-built graphs) is merged by adding its weights.
void support(const int64_t* nb, const double* w, int64_t k, std::vector<Entry>& out) {
  out.clear();
  // Weights relative to the row's largest first: sums of weights near DBL_MAX would
  // overflow and turn every p into 0.
  double top = 0.0;
  for (int64_t c = 0; c < k; ++c) {
    if (nb[c] >= 0 && w[c] > 0) {
      top = std::max(top, w[c]);
    }
  }
  for (int64_t c = 0; c < k; ++c) {
    if (nb[c] >= 0 && w[c] > 0) {
      out.emplace_back(nb[c], w[c] / top);
    }
  }
  std::sort(out.begin(), out.end());
  size_t kept = 0;
  for (size_t c = 0; c < out.size(); ++c) {
    if (kept > 0 && out[kept - 1].first == out[c].first) {
      out[kept - 1].second += out[c].second;
    } else {
      out[kept++] = out[c];
    }
  }
  out.resize(kept);
  double total = 0.0;
  for (const Entry& e : out) {
    total += e.second;
  }
  for (Entry& e : out) {
    e.second /= total;
  }
}

std::tuple<at::Tensor, at::Tensor> neighborhood_overlap_kernel(
    const at::Tensor& neighbors_a,
    const at::Tensor& weights_a,
    const at::Tensor& neighbors_b,
    const at::Tensor& weights_b) {
  constexpr const char* op = "neighborhood_overlap";
  check_graph_pair(neighbors_a, weights_a, neighbors_b, weights_b, op);
  const int64_t n = neighbors_a.size(0);

  const int64_t ka = neighbors_a.size(1);
  const int64_t kb = neighbors_b.size(1);
  const at::Tensor nba_t = neighbors_a.contiguous();
  const at::Tensor nbb_t = neighbors_b.contiguous();
  const at::Tensor wa_t = weights_a.to(at::kDouble).contiguous();
  const at::Tensor wb_t = weights_b.to(at::kDouble).contiguous();
  const int64_t* nba = nba_t.data_ptr<int64_t>();
  const int64_t* nbb = nbb_t.data_ptr<int64_t>();
  const double* wa = wa_t.data_ptr<double>();
  const double* wb = wb_t.data_ptr<double>();

  at::Tensor jaccard = at::empty({n}, at::kDouble);
  at::Tensor weighted = at::empty({n}, at::kDouble);
  double* jac_p = jaccard.data_ptr<double>();
  double* wov_p = weighted.data_ptr<double>();

  parallel_chunks(n, 16, [&](int64_t i0, int64_t i1) {
    std::vector<Entry> sa;
    std::vector<Entry> sb;
    for (int64_t i = i0; i < i1; ++i) {
      support(nba + i * ka, wa + i * ka, ka, sa);
      support(nbb + i * kb, wb + i * kb, kb, sb);
      if (sa.empty() && sb.empty()) {
        jac_p[i] = 1.0;
        wov_p[i] = 1.0;
        continue;
      }
      // Merge of two sorted lists.
      size_t ia = 0;
      size_t ib = 0;
      int64_t common = 0;
      double shared = 0.0;
      while (ia < sa.size() && ib < sb.size()) {
        if (sa[ia].first < sb[ib].first) {
          ++ia;
        } else if (sb[ib].first < sa[ia].first) {
          ++ib;
        } else {
          ++common;
          shared += std::min(sa[ia].second, sb[ib].second);
          ++ia;
          ++ib;
        }
      }
      const int64_t united = static_cast<int64_t>(sa.size() + sb.size()) - common;
      jac_p[i] = static_cast<double>(common) / static_cast<double>(united);
      wov_p[i] = std::min(1.0, shared);
    }
  });
  return std::make_tuple(jaccard, weighted);
}

} // namespace

TORCH_LIBRARY_IMPL(torch_geometry, CPU, m) {
  m.impl("neighborhood_overlap", &neighborhood_overlap_kernel);
}

} // namespace ops
} // namespace torch_geometry
