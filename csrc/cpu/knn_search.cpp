#include "knn_search.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace torch_geometry {
namespace cpu {

namespace {

// Query rows per tile and columns per tile: a 1024 x 4096 float tile is 16 MiB, large
// enough for GEMM to run near peak, small enough to stay far from N x N.
constexpr int64_t kQueryBlock = 1024;
constexpr int64_t kColumnBlock = 4096;

// A bounded min-heap holding a row's best k (score, index), worst on top.
// "Better" = larger score, then smaller index.
struct RowHeap {
  double* s;
  int64_t* id;
  int64_t k;

  static bool better(double sa, int64_t ia, double sb, int64_t ib) {
    return sa > sb || (sa == sb && ia >= 0 && (ib < 0 || ia < ib));
  }
  void push_if_better(double v, int64_t j) {
    if (!better(v, j, s[0], id[0])) {
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

template <typename scalar_t>
void knn_search_impl(const PreparedPoints& pts, Kernel kernel, int64_t k,
                     at::Tensor& index, at::Tensor& score) {
  const at::Tensor& x = pts.x;
  const int64_t n = x.size(0);
  const char* valid = pts.valid.data();
  std::vector<double> heap_s(static_cast<size_t>(n) * k,
                             -std::numeric_limits<double>::infinity());
  std::vector<int64_t> heap_i(static_cast<size_t>(n) * k, -1);
  std::vector<double> sqnorm;
  if (kernel == Kernel::Gaussian) {
    at::Tensor sq = x.to(at::kDouble).pow(2).sum(1).contiguous();
    sqnorm.assign(sq.data_ptr<double>(), sq.data_ptr<double>() + n);
  }
  for (int64_t q0 = 0; q0 < n; q0 += kQueryBlock) {
    const int64_t nq = std::min(kQueryBlock, n - q0);
    at::Tensor xq = x.narrow(0, q0, nq);
    for (int64_t c0 = 0; c0 < n; c0 += kColumnBlock) {
      const int64_t nc = std::min(kColumnBlock, n - c0);
      at::Tensor tile = at::mm(xq, x.narrow(0, c0, nc).t()).contiguous();
      const scalar_t* t = tile.data_ptr<scalar_t>();
      at::parallel_for(0, nq, 16, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          const int64_t i = q0 + r;
          if (!valid[i]) {
            continue;
          }
          RowHeap heap{&heap_s[i * k], &heap_i[i * k], k};
          const scalar_t* row = t + r * nc;
          for (int64_t c = 0; c < nc; ++c) {
            const int64_t j = c0 + c;
            if (j == i || !valid[j]) {
              continue;
            }
            // Gaussian: maximise 2 x_i.x_j - |x_j|^2, i.e. minimise |x_i - x_j|^2.
            const double v = kernel == Kernel::Cosine
                ? static_cast<double>(row[c])
                : 2.0 * static_cast<double>(row[c]) - sqnorm[j];
            heap.push_if_better(v, j);
          }
        }
      });
    }
  }
  int64_t* out_i = index.data_ptr<int64_t>();
  double* out_s = score.data_ptr<double>();
  at::parallel_for(0, n, 64, [&](int64_t i0, int64_t i1) {
    std::vector<std::pair<double, int64_t>> row(k);
    for (int64_t i = i0; i < i1; ++i) {
      for (int64_t l = 0; l < k; ++l) {
        row[l] = {heap_s[i * k + l], heap_i[i * k + l]};
      }
      std::sort(row.begin(), row.end(), [](const auto& a, const auto& b) {
        return RowHeap::better(a.first, a.second, b.first, b.second);
      });
      for (int64_t l = 0; l < k; ++l) {
        const int64_t j = row[l].second;
        out_i[i * k + l] = j;
        double v = 0.0;
        if (j >= 0) {
          v = kernel == Kernel::Cosine ? std::min(1.0, std::max(-1.0, row[l].first))
                                       : std::max(0.0, sqnorm[i] - row[l].first);
        }
        out_s[i * k + l] = v;
      }
    }
  });
}

} // namespace

PreparedPoints prepare_points(const at::Tensor& x, Kernel kernel) {
  PreparedPoints pts;
  const int64_t n = x.size(0);
  pts.valid.assign(n, 1);
  if (kernel == Kernel::Cosine) {
    at::Tensor norm = x.norm(2, /*dim=*/1, /*keepdim=*/true);
    at::Tensor zero = (norm.squeeze(1) == 0).to(at::kByte).contiguous();
    const uint8_t* z = zero.data_ptr<uint8_t>();
    for (int64_t i = 0; i < n; ++i) {
      if (z[i]) {
        pts.valid[i] = 0;
        ++pts.num_invalid;
      }
    }
    pts.x = (x / norm.clamp_min(std::numeric_limits<double>::min())).contiguous();
  } else {
    pts.x = x.contiguous();
  }
  return pts;
}

std::tuple<at::Tensor, at::Tensor> knn_search(const PreparedPoints& pts, Kernel kernel,
                                              int64_t k) {
  const int64_t n = pts.x.size(0);
  at::Tensor index = at::empty({n, k}, pts.x.options().dtype(at::kLong));
  at::Tensor score = at::empty({n, k}, pts.x.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(pts.x.scalar_type(), "knn_search", [&] {
    knn_search_impl<scalar_t>(pts, kernel, k, index, score);
  });
  return std::make_tuple(index, score);
}

std::vector<double> resolve_sigma(SigmaMode mode, double sigma,
                                  const std::vector<double>& far_sq) {
  const size_t n = far_sq.size();
  // A sigma of 0 (every candidate a duplicate) would give 0/0; such nodes only ever use
  // the duplicate rule, so any positive floor works.
  const double floor = 1e-150;
  if (mode == SigmaMode::Fixed) {
    return std::vector<double>(n, sigma);
  }
  std::vector<double> out(n, floor);
  if (mode == SigmaMode::Local) {
    for (size_t i = 0; i < n; ++i) {
      out[i] = far_sq[i] > 0 ? std::max(floor, std::sqrt(far_sq[i]) / 3.0) : floor;
    }
    return out;
  }
  double sum = 0.0;
  int64_t count = 0;
  for (size_t i = 0; i < n; ++i) {
    if (far_sq[i] >= 0) {
      sum += std::sqrt(far_sq[i]);
      ++count;
    }
  }
  const double s = count > 0 ? std::max(floor, sum / count / 3.0) : 1.0;
  std::fill(out.begin(), out.end(), s);
  return out;
}

} // namespace cpu
} // namespace torch_geometry
