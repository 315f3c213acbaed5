#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <vector>

#include "../common.h"
#include "../graph_input.h"
#include "../manifold_metrics.h"
#include "simd_dot.h"

namespace torch_geometry {
namespace ops {

namespace {

constexpr const char* kOp = "manifold_metrics";

using Eigen::Index;
using Eigen::Map;
using Eigen::MatrixXd;
using Eigen::VectorXd;
using RowMatrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Eigen's GEMM opens an OpenMP region of its own when the destination may have more than 32
// rows. We already run one product per node inside our own region (and on one thread,
// torch's setting must hold), so products go through destinations of at most 32 rows.
using Rows32 = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor, 32,
                             Eigen::Dynamic>;

// out = lhs * rhs, in row blocks of at most 32 (see Rows32).
template <typename Lhs, typename Rhs>
void product(const Lhs& lhs, const Rhs& rhs, MatrixXd& out) {
  out.resize(lhs.rows(), rhs.cols());
  Rows32 block;
  for (Index r0 = 0; r0 < lhs.rows(); r0 += 32) {
    const Index rn = std::min<Index>(32, lhs.rows() - r0);
    block.noalias() = lhs.middleRows(r0, rn) * rhs;
    out.middleRows(r0, rn) = block;
  }
}

// The NNK supports of all nodes in CSR form: node i's neighbours index[offset[i] ..
// offset[i + 1]) with weights theta[...], in row order.
struct Supports {
  std::vector<int64_t> offset;
  std::vector<int64_t> index;
  std::vector<double> theta;

  Supports(const int64_t* nb, const double* w, int64_t n, int64_t k) : offset(n + 1, 0) {
    for (int64_t i = 0; i < n; ++i) {
      int64_t count = 0;
      for (int64_t c = 0; c < k; ++c) {
        count += nb[i * k + c] >= 0 && w[i * k + c] > 0;
      }
      offset[i + 1] = offset[i] + count;
    }
    index.resize(offset[n]);
    theta.resize(offset[n]);
    for (int64_t i = 0; i < n; ++i) {
      int64_t slot = offset[i];
      for (int64_t c = 0; c < k; ++c) {
        if (nb[i * k + c] >= 0 && w[i * k + c] > 0) {
          index[slot] = nb[i * k + c];
          theta[slot++] = w[i * k + c];
        }
      }
    }
  }
  int64_t degree(int64_t i) const {
    return offset[i + 1] - offset[i];
  }

  // Nodes in breadth-first order over the supports. Consecutive nodes then share most of
  // the points they read, so those stay in cache: the order only changes the speed (a
  // fifth to a quarter less time on 20k points of 784 dims), never a result, since every
  // node is computed alone.
  std::vector<int64_t> locality_order() const {
    const int64_t n = static_cast<int64_t>(offset.size()) - 1;
    std::vector<int64_t> order;
    order.reserve(n);
    std::vector<char> seen(n, 0);
    for (int64_t root = 0; root < n; ++root) {
      if (seen[root]) {
        continue;
      }
      seen[root] = 1;
      order.push_back(root);
      for (size_t head = order.size() - 1; head < order.size(); ++head) {
        const int64_t u = order[head];
        for (int64_t e = offset[u]; e < offset[u + 1]; ++e) {
          if (!seen[index[e]]) {
            seen[index[e]] = 1;
            order.push_back(index[e]);
          }
        }
      }
    }
    return order;
  }
};

// The points as given (no copy): row i of x is used as scale[i] * x_i, where scale is 1 for
// the Gaussian kernel and 1 / ||x_i|| for the cosine kernel (0 for an all-zero row, which
// stays at the origin). Products are taken on the raw rows and scaled after, in double;
// a difference of two such products is accurate to about 1e-16 ||x|| / ||x_a - x_b||.
template <typename scalar_t>
struct Points {
  const scalar_t* data;
  int64_t dim;
  std::vector<double> scale;

  const scalar_t* row(int64_t i) const {
    return data + i * dim;
  }
  VectorXd point(int64_t i) const {
    using Vec = Eigen::Matrix<scalar_t, Eigen::Dynamic, 1>;
    return Map<const Vec>(row(i), dim).template cast<double>() * scale[i];
  }
};

// V_i = [x_j - x_i]_{j in S_i}, D x |S_i|, in double.
template <typename scalar_t>
void polytope(const Points<scalar_t>& pts, int64_t i, const Supports& sup, MatrixXd& v) {
  using Vec = Eigen::Matrix<scalar_t, Eigen::Dynamic, 1>;
  const Index s = sup.degree(i);
  const int64_t dim = pts.dim;
  v.resize(dim, s);
  const VectorXd xi = pts.point(i);
  for (Index c = 0; c < s; ++c) {
    const int64_t j = sup.index[sup.offset[i] + c];
    v.col(c) = Map<const Vec>(pts.row(j), dim).template cast<double>() * pts.scale[j] - xi;
  }
}

// Per-node results, written by the passes below.
struct Outputs {
  int64_t* degree;
  double* diameter;
  int64_t* local_dim;
  double* log_volume;
  double* curvature;
};

template <typename scalar_t>
void compute_metrics(
    const Points<scalar_t>& pts,
    const Supports& sup,
    bool cosine,
    double alpha,
    const Outputs& out) {
  const int64_t n = static_cast<int64_t>(sup.offset.size()) - 1;
  const int64_t dim = pts.dim;
  const std::vector<int64_t> order = sup.locality_order();

  // Pass 1: per node, the spectrum of V_i from its Gram matrix V_i^T V_i = U diag(s^2) U^T.
  // Kept for pass 2: coef_i = U_r diag(1 / s_r), r <= local_dim (|S_i| x local_dim), so
  // that T_i = V_i coef_i are the top left singular vectors. Storing coef rather than T
  // keeps the memory at O(N k^2) instead of O(N D k).
  std::vector<MatrixXd> coef(n);
  parallel_chunks(n, 16, [&](int64_t pos0, int64_t pos1) {
    for (int64_t pos = pos0; pos < pos1; ++pos) {
      const int64_t i = order[pos];
      const Index s = sup.degree(i);
      out.degree[i] = s;
      if (s == 0) {
        continue;
      }
      MatrixXd v;
      polytope(pts, i, sup, v);
      std::vector<const double*> cols(static_cast<size_t>(s));
      for (Index c = 0; c < s; ++c) {
        cols[c] = v.col(c).data();
      }
      // Gram matrix by the shared dot-product engine (dot(a, b) == dot(b, a) bitwise, so g
      // is exactly symmetric).
      MatrixXd g(s, s);
      for (Index c = 0; c < s; ++c) {
        cpu::dot_many(cols[c], cols.data(), static_cast<int>(s), dim, g.col(c).data());
      }

      // Squared distances from the Gram matrix of the centred points: ||x_a - x_i||^2 = g_aa,
      // ||x_a - x_b||^2 = g_aa + g_bb - 2 g_ab. On the unit sphere 1 - cos = ||.||^2 / 2.
      double max_sq = 0.0;
      for (Index a = 0; a < s; ++a) {
        max_sq = std::max(max_sq, g(a, a));
        for (Index b = 0; b < a; ++b) {
          max_sq = std::max(max_sq, g(a, a) + g(b, b) - 2.0 * g(a, b));
        }
      }
      out.diameter[i] = cosine ? 0.5 * max_sq : std::sqrt(max_sq);

      // Squared singular values of V = eigenvalues of V^T V (ascending in Eigen's order).
      Eigen::SelfAdjointEigenSolver<MatrixXd> eig(g);
      const VectorXd& lam = eig.eigenvalues();
      const double top = lam(s - 1);
      Index ld = 0;
      if (top > 0) {
        while (ld < s && lam(s - 1 - ld) > alpha * top) {
          ++ld;
        }
      }
      out.local_dim[i] = ld;
      double vol = 0.0;
      coef[i].resize(s, ld);
      for (Index r = 0; r < ld; ++r) {
        vol += 0.5 * std::log(lam(s - 1 - r) / static_cast<double>(s));
        coef[i].col(r) = eig.eigenvectors().col(s - 1 - r) / std::sqrt(lam(s - 1 - r));
      }
      out.log_volume[i] = vol;
    }
  });

  // Pass 2: curvature. For node i and each j in S_i, T_i^T T_j = (T_i^T V_j) coef_j, and
  // every V_j is a difference of points of Q_i = union over j in S_i of {j} and S_j. So one
  // product P = T_i^T X_{Q_i} (local_dim_i x |Q_i|) serves all of i's edges, with no
  // D-dimensional basis stored per node.
  const int64_t* ld_p = out.local_dim;
  parallel_chunks(n, 16, [&](int64_t pos0, int64_t pos1) {
    for (int64_t pos = pos0; pos < pos1; ++pos) {
      const int64_t i = order[pos];
      const Index ldi = ld_p[i];
      if (ldi == 0) {
        continue;
      }
      const int64_t* si = sup.index.data() + sup.offset[i];
      const Index s = sup.degree(i);
      std::vector<int64_t> q;
      for (Index c = 0; c < s; ++c) {
        const int64_t j = si[c];
        if (ld_p[j] > 0) {
          q.push_back(j);
          q.insert(q.end(), sup.index.begin() + sup.offset[j], sup.index.begin() + sup.offset[j + 1]);
        }
      }
      if (q.empty()) {
        continue;  // every neighbour's own neighbours coincide with it: no subspace to compare
      }
      std::sort(q.begin(), q.end());
      q.erase(std::unique(q.begin(), q.end()), q.end());
      const Index nq = static_cast<Index>(q.size());
      const auto column = [&q](int64_t node) {
        return static_cast<Index>(std::lower_bound(q.begin(), q.end(), node) - q.begin());
      };

      // T_i^T, one row per singular direction: row r = V_i coef_i[:, r].
      MatrixXd v;
      polytope(pts, i, sup, v);
      RowMatrix t(ldi, dim);
      for (Index r = 0; r < ldi; ++r) {
        t.row(r).noalias() = (v * coef[i].col(r)).transpose();
      }
      std::vector<const double*> rows(static_cast<size_t>(ldi));
      for (Index r = 0; r < ldi; ++r) {
        rows[r] = t.row(r).data();
      }
      // P, column-major (column q = T_i^T x_q, contiguous), from the raw rows (in double,
      // the engine's dtype here), then scaled.
      MatrixXd p(ldi, nq);
      std::vector<double> xq(static_cast<size_t>(dim));
      for (Index c = 0; c < nq; ++c) {
        const scalar_t* r = pts.row(q[c]);
        std::copy(r, r + dim, xq.begin());
        cpu::dot_many(xq.data(), rows.data(), static_cast<int>(ldi), dim, p.col(c).data());
      }
      for (Index c = 0; c < nq; ++c) {
        p.col(c) *= pts.scale[q[c]];
      }

      double acc = 0.0;
      double total = 0.0;
      MatrixXd w;
      MatrixXd cross;
      for (Index c = 0; c < s; ++c) {
        const int64_t j = si[c];
        const Index m = std::min<Index>(ldi, ld_p[j]);
        if (m == 0) {
          continue;  // j's neighbours all coincide with j: no subspace to compare
        }
        const Index sj = sup.degree(j);
        const auto pj = p.col(column(j)).head(m);
        w.resize(m, sj);
        for (Index b = 0; b < sj; ++b) {
          w.col(b) = p.col(column(sup.index[sup.offset[j] + b])).head(m) - pj;
        }
        product(w, coef[j].leftCols(m), cross);  // T_i[:, :m]^T T_j[:, :m]
        const double cij = 1.0 - cross.squaredNorm() / static_cast<double>(m);
        const double theta = sup.theta[sup.offset[i] + c];
        acc += theta * std::min(1.0, std::max(0.0, cij));
        total += theta;
      }
      out.curvature[i] = total > 0 ? acc / total : 0.0;
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
manifold_metrics_kernel(
    const at::Tensor& x,
    const at::Tensor& neighbors,
    const at::Tensor& weights,
    c10::string_view kernel,
    double alpha) {
  check_points(x, kOp);
  const Kernel kern = parse_kernel(kernel, kOp);
  TORCH_CHECK(
      alpha > 0.0 && alpha < 1.0, kOp, ": alpha should be in (0, 1), got ", alpha);
  const int64_t n = x.size(0);
  const int64_t dim = x.size(1);
  check_directed_graph(neighbors, weights, n, kOp);

  const at::Tensor xc = x.contiguous();
  const at::Tensor nb_t = neighbors.contiguous();
  const at::Tensor w_t = weights.to(at::kDouble).contiguous();
  const Supports sup(nb_t.data_ptr<int64_t>(), w_t.data_ptr<double>(), n, neighbors.size(1));

  at::Tensor degree = at::zeros({n}, at::kLong);
  at::Tensor diameter = at::zeros({n}, at::kDouble);
  at::Tensor local_dim = at::zeros({n}, at::kLong);
  at::Tensor log_volume = at::zeros({n}, at::kDouble);
  at::Tensor curvature = at::zeros({n}, at::kDouble);
  const Outputs out{
      degree.data_ptr<int64_t>(),
      diameter.data_ptr<double>(),
      local_dim.data_ptr<int64_t>(),
      log_volume.data_ptr<double>(),
      curvature.data_ptr<double>()};

  double length_scale = 1.0;  // gaussian: lengths of the caller = length_scale * ours
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "manifold_metrics", [&] {
    Points<scalar_t> pts{xc.data_ptr<scalar_t>(), dim, std::vector<double>(n, 1.0)};
    const scalar_t* data = pts.data;
    if (kern == Kernel::Cosine) {
      at::parallel_for(0, n, 256, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          // ||x_i|| as top * ||x_i / top||: the plain sum of squares overflows at
          // |x| ~ 1e154 and underflows at 1e-162.
          double top = 0.0;
          for (int64_t d = 0; d < dim; ++d) {
            top = std::max(top, std::abs(static_cast<double>(data[i * dim + d])));
          }
          double sq = 0.0;
          for (int64_t d = 0; d < dim; ++d) {
            const double v = top > 0 ? static_cast<double>(data[i * dim + d]) / top : 0.0;
            sq += v * v;
          }
          pts.scale[i] = top > 0 ? 1.0 / (top * std::sqrt(sq)) : 0.0;
        }
      });
    } else {
      // One power of two for all points (distances keep their ratios, exactly): the
      // Gram entries then neither overflow nor underflow, and lengths are scaled back.
      double top = 0.0;
      for (int64_t e = 0; e < n * dim; ++e) {
        top = std::max(top, std::abs(static_cast<double>(data[e])));
      }
      length_scale = top > 0 ? std::ldexp(1.0, std::ilogb(top)) : 1.0;
      std::fill(pts.scale.begin(), pts.scale.end(), 1.0 / length_scale);
    }
    compute_metrics(pts, sup, kern == Kernel::Cosine, alpha, out);
  });

  if (length_scale != 1.0) {
    diameter.mul_(length_scale);
    // log_volume sums log(s_r / sqrt|S_i|) over local_dim_i singular values.
    log_volume.add_(local_dim.to(at::kDouble) * std::log(length_scale));
  }
  const auto dtype = x.scalar_type();
  return std::make_tuple(
      degree, diameter.to(dtype), local_dim, log_volume.to(dtype), curvature.to(dtype));
}

} // namespace

TORCH_LIBRARY_IMPL(torch_geometry, CPU, m) {
  m.impl("manifold_metrics", &manifold_metrics_kernel);
}

} // namespace ops
} // namespace torch_geometry
