#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../channel_nnk.h"
#include "../nnk_graph.h"

namespace torch_geometry {
namespace ops {

namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> channel_nnk_graph_kernel(
    const at::Tensor& activations,
    int64_t k,
    c10::string_view kernel,
    double threshold) {
  TORCH_CHECK(activations.dim() >= 3,
              "channel_nnk_graph: activations should be [N, C, ...] with spatial dims, got shape ",
              activations.sizes());
  const int64_t n = activations.size(0), c = activations.size(1);
  TORCH_CHECK(c >= 1, "channel_nnk_graph: activations have no channels (C = 0)");
  at::Tensor nbr = at::empty({c, n, k}, activations.options().dtype(at::kLong));
  at::Tensor w = at::empty({c, n, k}, activations.options());
  at::Tensor err = at::empty({c, n}, activations.options());
  // Channels one after another, nodes in parallel inside each graph: a channel's graph
  // is small (D = H*W), and one level of threads keeps OpenMP and BLAS from fighting.
  for (int64_t ch = 0; ch < c; ++ch) {
    const at::Tensor x = activations.select(1, ch).reshape({n, -1});
    at::Tensor a, b, e;
    std::tie(a, b, e) = nnk_graph(x, k, kernel, c10::nullopt, "mean", c10::nullopt, threshold);
    nbr[ch].copy_(a);
    w[ch].copy_(b);
    err[ch].copy_(e);
  }
  return std::make_tuple(nbr, w, err);
}

at::Tensor channel_overlap_kernel(const at::Tensor& neighbors, const at::Tensor& weights) {
  const char* op = "channel_overlap";
  TORCH_CHECK(neighbors.dim() == 3 && neighbors.scalar_type() == at::kLong, op,
              ": neighbors should be int64 [C, N, k], got ", neighbors.scalar_type(), " ",
              neighbors.sizes());
  TORCH_CHECK(weights.sizes() == neighbors.sizes(), op,
              ": weights should have the shape of neighbors ", neighbors.sizes(), ", got ",
              weights.sizes());
  TORCH_CHECK(at::isFloatingType(weights.scalar_type()), op,
              ": weights should be floating, got ", weights.scalar_type());
  const int64_t c = neighbors.size(0), n = neighbors.size(1), k = neighbors.size(2);
  const at::Tensor nb = neighbors.contiguous();
  const at::Tensor wd = weights.to(at::kDouble).contiguous();
  const int64_t* NB = nb.data_ptr<int64_t>();
  const double* W = wd.data_ptr<double>();
  // Sorted supports of every (channel, node), packed: support of (ch, i) is
  // sup[(ch * n + i) * k .. + len[ch * n + i]).
  std::vector<int64_t> sup(static_cast<size_t>(c) * n * k), len(static_cast<size_t>(c) * n);
  at::parallel_for(0, c * n, 256, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      int64_t m = 0;
      for (int64_t l = 0; l < k; ++l) {
        if (NB[r * k + l] >= 0 && W[r * k + l] > 0) sup[r * k + m++] = NB[r * k + l];
      }
      std::sort(sup.begin() + r * k, sup.begin() + r * k + m);
      len[r] = m;
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
        const int64_t* sa = &sup[(a * n + i) * k];
        const int64_t* sb = &sup[(b * n + i) * k];
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
  m.impl("channel_nnk_graph", &channel_nnk_graph_kernel);
  m.impl("channel_overlap", &channel_overlap_kernel);
}

} // namespace ops
} // namespace torch_geometry
