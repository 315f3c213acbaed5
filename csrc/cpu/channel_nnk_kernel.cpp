#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../channel_nnk.h"
#include "../graph_input.h"

namespace torch_geometry {
namespace ops {

namespace {

at::Tensor channel_overlap_kernel(const at::Tensor& neighbors, const at::Tensor& weights) {
  const char* op = "channel_overlap";
  TORCH_CHECK(neighbors.dim() == 3, op, ": neighbors should be 3-D [C, N, k], got shape ",
              neighbors.sizes());
  TORCH_CHECK(weights.sizes() == neighbors.sizes(), op,
              ": weights should have the shape of neighbors ", neighbors.sizes(), ", got ",
              weights.sizes());
  const int64_t c = neighbors.size(0), n = neighbors.size(1), k = neighbors.size(2);
  for (int64_t ch = 0; ch < c; ++ch) {
    check_directed_graph(neighbors[ch], weights[ch], n, op);
  }
  const at::Tensor nb = neighbors.contiguous();
  const at::Tensor wd = weights.to(at::kDouble).contiguous();
  const int64_t* NB = nb.data_ptr<int64_t>();
  const double* W = wd.data_ptr<double>();
  // Sorted supports of every (channel, node), packed, a neighbour listed twice kept once
  // (as neighborhood_overlap merges them): support of (ch, i) is
  // sup[(ch * n + i) * k .. + len[ch * n + i]).
  std::vector<int64_t> sup(static_cast<size_t>(c) * n * k), len(static_cast<size_t>(c) * n);
  at::parallel_for(0, c * n, 256, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      int64_t* row = sup.data() + r * k;
      int64_t m = 0;
      for (int64_t l = 0; l < k; ++l) {
        if (NB[r * k + l] >= 0 && W[r * k + l] > 0) row[m++] = NB[r * k + l];
      }
      std::sort(row, row + m);
      len[r] = std::unique(row, row + m) - row;
    }
  });
  at::Tensor out = at::ones({c, c}, at::kDouble);
  double* O = out.data_ptr<double>();
  const int64_t pairs = c * (c - 1) / 2;
  at::parallel_for(0, pairs, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      // Unrank p into (a, b), a < b.
      int64_t a = 0, rest = p;
      while (rest >= c - 1 - a) {
        rest -= c - 1 - a;
        ++a;
      }
      const int64_t b = a + 1 + rest;
      double sum = 0.0;
      for (int64_t i = 0; i < n; ++i) {
        const int64_t* sa = sup.data() + (a * n + i) * k;
        const int64_t* sb = sup.data() + (b * n + i) * k;
        const int64_t la = len[a * n + i], lb = len[b * n + i];
        if (la == 0 && lb == 0) {
          sum += 1.0;
          continue;
        }
        int64_t x = 0, y = 0, common = 0;
        while (x < la && y < lb) {
          if (sa[x] == sb[y]) { ++common; ++x; ++y; }
          else if (sa[x] < sb[y]) ++x;
          else ++y;
        }
        sum += static_cast<double>(common) / static_cast<double>(la + lb - common);
      }
      O[a * c + b] = O[b * c + a] = n > 0 ? sum / static_cast<double>(n) : 1.0;
    }
  });
  return out;
}

} // namespace

TORCH_LIBRARY_IMPL(torch_geometry, CPU, m) {
  m.impl("channel_overlap", &channel_overlap_kernel);
}

} // namespace ops
} // namespace torch_geometry
