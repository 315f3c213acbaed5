#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "../common.h"
#include "../graph_input.h"

namespace torch_geometry {
namespace ops {

namespace {

using Mode = SymmetrizeMode;

// One side of a candidate pair: node `from` lists `to` with weight w.
struct Entry {
  int64_t lo, hi;  // the pair, lo < hi
  bool from_lo;    // listed in lo's row (else in hi's)
  double w;
};

template <typename scalar_t>
std::tuple<at::Tensor, at::Tensor> symmetrize_impl(const at::Tensor& nbr, const at::Tensor& wts,
                                                   const at::Tensor& err, Mode mode) {
  const int64_t n = nbr.size(0), k = nbr.size(1);
  const int64_t* NB = nbr.data_ptr<int64_t>();
  const scalar_t* W = wts.data_ptr<scalar_t>();
  const scalar_t* E = err.data_ptr<scalar_t>();
  std::vector<int64_t> src, dst;
  std::vector<double> val;

  if (mode == Mode::None) {
    for (int64_t i = 0; i < n; ++i) {
      std::vector<std::pair<int64_t, double>> row;
      for (int64_t l = 0; l < k; ++l) {
        // Weight-0 entries too: a node listed twice is refused whatever its weights.
        if (NB[i * k + l] >= 0) row.emplace_back(NB[i * k + l], W[i * k + l]);
      }
      std::sort(row.begin(), row.end());
      for (size_t a = 0; a < row.size(); ++a) {
        TORCH_CHECK(a == 0 || row[a].first != row[a - 1].first,
                    "nnk_symmetrize: neighbors[", i, "] lists node ", row[a].first, " twice");
        if (!(row[a].second > 0)) continue;
        src.push_back(i);
        dst.push_back(row[a].first);
        val.push_back(row[a].second);
      }
    }
  } else {
    if (mode != Mode::MinError) {
      // A node listed twice is refused whatever its weights: the pair sort below sees only
      // positive weights in these modes, so each row is checked on its own (k log k).
      std::vector<int64_t> row;
      for (int64_t i = 0; i < n; ++i) {
        row.clear();
        for (int64_t l = 0; l < k; ++l) {
          if (NB[i * k + l] >= 0) row.push_back(NB[i * k + l]);
        }
        std::sort(row.begin(), row.end());
        const auto twice = std::adjacent_find(row.begin(), row.end());
        TORCH_CHECK(twice == row.end(), "nnk_symmetrize: node ", i, " lists node ",
                    twice == row.end() ? -1 : *twice, " twice");
      }
    }
    std::vector<Entry> entries;
    entries.reserve(static_cast<size_t>(n) * k);
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t l = 0; l < k; ++l) {
        const int64_t j = NB[i * k + l];
        if (j < 0) continue;
        // Min-error needs every candidate (weight 0 included) to know who was a candidate;
        // the other modes need only the edges, once each row was checked for repeats.
        if (mode != Mode::MinError && !(W[i * k + l] > 0)) continue;
        entries.push_back({std::min(i, j), std::max(i, j), i < j, static_cast<double>(W[i * k + l])});
      }
    }
    std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
      if (a.lo != b.lo) return a.lo < b.lo;
      if (a.hi != b.hi) return a.hi < b.hi;
      return a.from_lo > b.from_lo;
    });
    for (size_t a = 0; a < entries.size();) {
      size_t b = a + 1;
      while (b < entries.size() && entries[b].lo == entries[a].lo && entries[b].hi == entries[a].hi) ++b;
      const Entry& first = entries[a];
      TORCH_CHECK(b - a <= 2 && (b - a == 1 || entries[a].from_lo != entries[a + 1].from_lo),
                  "nnk_symmetrize: node ", first.from_lo ? first.lo : first.hi, " lists node ",
                  first.from_lo ? first.hi : first.lo, " twice");
      double w_lo = 0, w_hi = 0;  // theta_{lo,hi} and theta_{hi,lo}
      bool has_lo = false, has_hi = false;
      for (size_t c = a; c < b; ++c) {
        if (entries[c].from_lo) { w_lo = entries[c].w; has_lo = true; }
        else { w_hi = entries[c].w; has_hi = true; }
      }
      double w = 0;
      if (mode == Mode::Max) {
        w = std::max(w_lo, w_hi);
      } else if (mode == Mode::Mean) {
        w = 0.5 * (w_lo + w_hi);
      } else if (has_lo && has_hi) {
        const double e_lo = E[first.lo], e_hi = E[first.hi];
        w = e_lo < e_hi ? w_lo : (e_hi < e_lo ? w_hi : std::max(w_lo, w_hi));
      }
      if (w > 0) {
        src.push_back(first.lo); dst.push_back(first.hi); val.push_back(w);
        src.push_back(first.hi); dst.push_back(first.lo); val.push_back(w);
      }
      a = b;
    }
    std::vector<size_t> order(src.size());
    for (size_t a = 0; a < order.size(); ++a) order[a] = a;
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      return src[a] != src[b] ? src[a] < src[b] : dst[a] < dst[b];
    });
    std::vector<int64_t> s2(src.size()), d2(src.size());
    std::vector<double> v2(src.size());
    for (size_t a = 0; a < order.size(); ++a) {
      s2[a] = src[order[a]]; d2[a] = dst[order[a]]; v2[a] = val[order[a]];
    }
    src.swap(s2); dst.swap(d2); val.swap(v2);
  }
  const int64_t e = static_cast<int64_t>(src.size());
  at::Tensor edge_index = at::empty({2, e}, nbr.options());
  at::Tensor edge_weight = at::empty({e}, wts.options());
  int64_t* ei = edge_index.data_ptr<int64_t>();
  scalar_t* ew = edge_weight.data_ptr<scalar_t>();
  for (int64_t a = 0; a < e; ++a) {
    ei[a] = src[a];
    ei[e + a] = dst[a];
    ew[a] = static_cast<scalar_t>(val[a]);
  }
  return std::make_tuple(edge_index, edge_weight);
}

std::tuple<at::Tensor, at::Tensor> nnk_symmetrize_kernel(const at::Tensor& neighbors,
                                                         const at::Tensor& weights,
                                                         const at::Tensor& error,
                                                         c10::string_view mode_name) {
  const char* op = "nnk_symmetrize";
  const Mode mode = parse_symmetrize(mode_name, op);
  check_directed_graph(neighbors, weights, error, op);
  TORCH_CHECK(weights.scalar_type() == at::kFloat || weights.scalar_type() == at::kDouble, op,
              ": weights should be float32 or float64, got ", weights.scalar_type());
  const at::Tensor nbr = neighbors.contiguous();
  const at::Tensor wts = weights.contiguous();
  const at::Tensor err = error.to(weights.scalar_type()).contiguous();
  std::tuple<at::Tensor, at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(wts.scalar_type(), "nnk_symmetrize", [&] {
    out = symmetrize_impl<scalar_t>(nbr, wts, err, mode);
  });
  return out;
}

} // namespace

TORCH_LIBRARY_IMPL(torch_geometry, CPU, m) {
  m.impl("nnk_symmetrize", &nnk_symmetrize_kernel);
}

} // namespace ops
} // namespace torch_geometry
