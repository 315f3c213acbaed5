#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "../common.h"
#include "../knn_graph.h"
#include "knn_search.h"
#include "nnk_solver.h"
#include "simd_dot.h"

namespace torch_geometry {
namespace ops {

namespace {

// Checks user candidates and turns them into clean rows: in range, no self, no repeats,
// no invalid (zero-row) points, packed to the front and padded with -1.
at::Tensor clean_candidates(const at::Tensor& cand, int64_t n, int64_t k,
                            const std::vector<char>& valid) {
  const char* op = "nnk_graph";
  TORCH_CHECK(cand.scalar_type() == at::kLong, op,
              ": candidates should be int64 indices, got ", cand.scalar_type());
  TORCH_CHECK(cand.dim() == 2 && cand.size(0) == n && cand.size(1) == k, op,
              ": candidates should have shape [N, k] = [", n, ", ", k, "], got ",
              cand.sizes());
  TORCH_CHECK(cand.device().is_cpu(), op, ": candidates should be on the CPU like x, got ",
              cand.device());
  at::Tensor c = cand.contiguous();
  if (n > 0 && k > 0) {
    const int64_t lo = c.min().item<int64_t>();
    const int64_t hi = c.max().item<int64_t>();
    TORCH_CHECK(lo >= -1 && hi < n, op,
                ": candidates should be indices in [0, N) = [0, ", n,
                ") or -1 for padding, got values in [", lo, ", ", hi, "]");
  }
  at::Tensor out = at::full({n, k}, -1, c.options()).contiguous();
  const int64_t* in = c.data_ptr<int64_t>();
  int64_t* o = out.data_ptr<int64_t>();
  at::parallel_for(0, n, 256, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      if (!valid[i]) {
        continue;
      }
      int64_t m = 0;
      for (int64_t l = 0; l < k; ++l) {
        const int64_t j = in[i * k + l];
        if (j < 0 || j == i || !valid[j]) {
          continue;
        }
        bool seen = false;
        for (int64_t a = 0; a < m; ++a) {
          seen = seen || o[i * k + a] == j;
        }
        if (!seen) {
          o[i * k + m++] = j;
        }
      }
    }
  });
  return out;
}

template <typename scalar_t>
void nnk_impl(const cpu::PreparedPoints& pts, Kernel kernel, SigmaMode mode,
              double sigma_fixed, const at::Tensor& cand, const at::Tensor& cand_raw,
              double threshold,
              at::Tensor& nbr_out, at::Tensor& w_out, at::Tensor& err_out) {
  using Vec = Eigen::Matrix<scalar_t, Eigen::Dynamic, 1>;
  using Map = Eigen::Map<const Vec>;
  const int64_t n = pts.x.size(0), d = pts.x.size(1), k = cand.size(1);
  const scalar_t* X = pts.x.data_ptr<scalar_t>();
  const int64_t* C = cand.data_ptr<int64_t>();
  const double* inv = pts.inv_norm.data();
  const double* sq = pts.sq_norm.data();
  auto row = [&](int64_t i) { return Map(X + i * d, d); };

  // Raw kernel arguments from point a to the points js[0..cnt): cos for cosine, squared
  // distance for gaussian, computed in x's dtype by the vectorised kernels of simd_dot.h.
  // raw(a, b) == raw(b, a) bitwise (the scale inv[a] * inv[b] is formed first), so a
  // kernel column may take entries from columns computed before.
  const bool cosine = kernel == Kernel::Cosine;
  auto raw_many = [&](int64_t a, const int64_t* js, int cnt, double* out,
                      std::vector<const scalar_t*>& ptrs, std::vector<scalar_t>& buf) {
    ptrs.resize(cnt);
    buf.resize(cnt);
    for (int t = 0; t < cnt; ++t) {
      ptrs[t] = X + js[t] * d;
    }
    if (cosine) {
      cpu::dot_many(X + a * d, ptrs.data(), cnt, d, buf.data());
      for (int t = 0; t < cnt; ++t) {
        const double c = static_cast<double>(buf[t]) * (inv[a] * inv[js[t]]);
        out[t] = std::min(1.0, std::max(-1.0, c));
      }
    } else {
      cpu::sqdist_many(X + a * d, ptrs.data(), cnt, d, buf.data());
      for (int t = 0; t < cnt; ++t) {
        out[t] = static_cast<double>(buf[t]);
      }
    }
  };
  // Exact duplicates (kappa = 1), decided in double with a tolerance at the input's
  // rounding level: the same direction (cosine) or the same point (gaussian).
  const double dup_tol = std::is_same<scalar_t, float>::value ? 1e-12 : 1e-24;
  auto is_duplicate = [&](int64_t i, int64_t j, double r) -> bool {
    if (kernel == Kernel::Cosine) {
      if (r < 1.0 - 1e-4) {
        return false;
      }
      // ||x_i / |x_i| - x_j / |x_j|||^2, exactly 0 for identical rows.
      const double dist = (row(i).template cast<double>() * inv[i] -
                           row(j).template cast<double>() * inv[j]).squaredNorm();
      return dist <= dup_tol;
    }
    const double scale = std::max(sq[i], sq[j]);
    if (r > 1e-4 * scale) {
      return false;
    }
    const double dist =
        (row(i).template cast<double>() - row(j).template cast<double>()).squaredNorm();
    return dist <= dup_tol * scale;
  };

  // Pass 1: exact kernel arguments to every candidate, and each node's farthest one.
  std::vector<double> R(static_cast<size_t>(n) * k, 0.0);
  std::vector<double> far_sq(n, -1.0);
  at::parallel_for(0, n, 64, [&](int64_t i0, int64_t i1) {
    std::vector<const scalar_t*> ptrs;
    std::vector<scalar_t> buf;
    for (int64_t i = i0; i < i1; ++i) {
      int m = 0;
      while (m < k && C[i * k + m] >= 0) {
        ++m;
      }
      if (cand_raw.defined()) {
        // From the kNN search: the same values raw_many gives (it rescores with them).
        std::copy(cand_raw.data_ptr<double>() + i * k, cand_raw.data_ptr<double>() + i * k + m, &R[i * k]);
      } else {
        raw_many(i, C + i * k, m, &R[i * k], ptrs, buf);
      }
      for (int l = 0; l < m; ++l) {
        far_sq[i] = std::max(far_sq[i], R[i * k + l]);
      }
    }
  });
  std::vector<double> sig(n, 1.0);
  if (kernel == Kernel::Gaussian) {
    sig = cpu::resolve_sigma(mode, sigma_fixed, far_sq);
  }

  int64_t* NB = nbr_out.data_ptr<int64_t>();
  scalar_t* W = w_out.data_ptr<scalar_t>();
  scalar_t* E = err_out.data_ptr<scalar_t>();

  // Pass 2: one exact QP per node.
  at::parallel_for(0, n, 16, [&](int64_t i0, int64_t i1) {
    nnk::QPWorkspace ws;
    std::vector<double> b, theta, sim, colraw;
    std::vector<int64_t> cj, need;
    std::vector<int> need_pos;
    std::vector<const scalar_t*> ptrs;
    std::vector<scalar_t> buf;
    std::vector<int> order;
    for (int64_t i = i0; i < i1; ++i) {
      cj.clear();
      sim.clear();
      for (int64_t l = 0; l < k && C[i * k + l] >= 0; ++l) {
        cj.push_back(C[i * k + l]);
        sim.push_back(cpu::kernel_value(kernel, R[i * k + l], sig[i]));
      }
      const int m = static_cast<int>(cj.size());
      theta.assign(m, 0.0);
      double err = 1.0;
      bool dup = false;
      for (int a = 0; a < m; ++a) {
        if (is_duplicate(i, cj[a], R[i * k + a])) {
          theta[a] = 1.0;
          dup = true;
        }
      }
      if (dup) {
        err = 0.0;
      } else if (m > 0) {
        b = sim;
        const double s = sig[i];
        // Column l of K_SS: entries shared with columns already computed are copied
        // (K is symmetric), the others come from one batched call.
        auto column = [&](int l, double* out) {
          need.clear();
          need_pos.clear();
          for (int a = 0; a < m; ++a) {
            if (a == l) {
              out[a] = 1.0;
            } else if (ws.have_col[a]) {
              out[a] = ws.K[static_cast<size_t>(a) * m + l];
            } else {
              need.push_back(cj[a]);
              need_pos.push_back(a);
            }
          }
          const int cnt = static_cast<int>(need.size());
          colraw.resize(cnt);
          raw_many(cj[l], need.data(), cnt, colraw.data(), ptrs, buf);
          for (int t = 0; t < cnt; ++t) {
            out[need_pos[t]] = cpu::kernel_value(kernel, colraw[t], s);
          }
        };
        nnk::QPResult res = nnk::solve_nonneg_qp(m, b.data(), column, theta.data(), ws);
        double lin = 0.0;
        bool dropped = false;
        for (int a = 0; a < m; ++a) {
          if (theta[a] <= threshold) {
            dropped = dropped || theta[a] != 0.0;
            theta[a] = 0.0;
          }
          lin += theta[a] * b[a];
        }
        double quad = res.quad;
        if (dropped) {
          // Recompute theta^T K theta on the thresholded weights from cached columns.
          quad = 0.0;
          for (int a = 0; a < m; ++a) {
            if (theta[a] == 0.0) continue;
            for (int c = 0; c < m; ++c) {
              if (theta[c] != 0.0) quad += theta[a] * theta[c] * ws.K[static_cast<size_t>(c) * m + a];
            }
          }
        }
        err = std::min(1.0, std::max(0.0, 1.0 - 2.0 * lin + quad));
      }
      order.resize(m);
      std::iota(order.begin(), order.end(), 0);
      std::sort(order.begin(), order.end(), [&](int a, int c) {
        if (theta[a] != theta[c]) return theta[a] > theta[c];
        if (sim[a] != sim[c]) return sim[a] > sim[c];
        return cj[a] < cj[c];
      });
      for (int64_t l = 0; l < k; ++l) {
        if (l < m) {
          NB[i * k + l] = cj[order[l]];
          W[i * k + l] = static_cast<scalar_t>(theta[order[l]]);
        } else {
          NB[i * k + l] = -1;
          W[i * k + l] = 0;
        }
      }
      E[i] = static_cast<scalar_t>(err);
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> nnk_graph_kernel(
    const at::Tensor& x,
    int64_t k,
    c10::string_view kernel_name,
    c10::optional<double> sigma,
    c10::string_view sigma_mode,
    const c10::optional<at::Tensor>& candidates,
    double threshold,
    c10::string_view candidate_metric) {
  const char* op = "nnk_graph";
  const Kernel kernel = parse_kernel(kernel_name, op);
  const CandidateMetric metric = parse_candidate_metric(candidate_metric, op);
  const SigmaMode mode = parse_sigma(kernel, sigma, sigma_mode, op);
  check_points(x, op);
  check_k(k, x.size(0), op);
  TORCH_CHECK(std::isfinite(threshold) && threshold >= 0, op,
              ": threshold should be a finite number >= 0, got ", threshold);

  const int64_t n = x.size(0);
  const cpu::PreparedPoints pts = cpu::prepare_points(x, kernel);
  at::Tensor cand, cand_raw;  // cand_raw: kernel arguments of exact kNN candidates
  if (candidates.has_value() && candidates->defined()) {
    cand = clean_candidates(*candidates, n, k, pts.valid);
  } else if (metric == CandidateMetric::Euclidean && kernel == Kernel::Cosine) {
    // Kernel arguments come from nnk_impl's own products (cand_raw stays undefined).
    cand = cpu::euclidean_candidates(x, pts.valid, k);
  } else {
    // The Gaussian kernel ranks by L2 distance already: both metrics are this search.
    std::tie(cand, cand_raw) = cpu::knn_search(pts, kernel, k);
  }
  at::Tensor nbr = at::empty({n, k}, x.options().dtype(at::kLong));
  at::Tensor w = at::empty({n, k}, pts.x.options());
  at::Tensor err = at::empty({n}, pts.x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "nnk_graph", [&] {
    nnk_impl<scalar_t>(pts, kernel, mode, sigma.value_or(0.0) / pts.scale, cand, cand_raw, threshold, nbr, w, err);
  });
  return std::make_tuple(nbr, w, err);
}

} // namespace

TORCH_LIBRARY_IMPL(torch_geometry, CPU, m) {
  m.impl("nnk_graph", &nnk_graph_kernel);
}

} // namespace ops
} // namespace torch_geometry
