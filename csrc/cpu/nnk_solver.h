// Exact solver for the per-node NNK problem
//
//   theta* = argmin_{theta >= 0}  1/2 theta^T K theta - b^T theta,
//
// K (m x m, symmetric PSD, the kernel among a node's candidates) and b (the kernel from
// the node to its candidates). This is non-negative least squares in Gram form
// (K = Phi^T Phi, b = Phi^T phi_i in the kernel's feature space), solved by the
// Lawson-Hanson active-set method, which terminates with a KKT point:
//   theta >= 0,  g = K theta - b = 0 on the support,  g >= -tol off it.
//
// Two things make it fit NNK:
// * Columns of K are asked for lazily, through a callback, only when their index enters
//   the active set. NNK supports are small (typically 5-20 of k = 50 candidates), so most
//   of the m x m kernel block (each entry a D-dimensional dot product) is never computed.
// * The Cholesky factor of the active block is grown one row at a time. K may be singular
//   (duplicates, D < k, low-rank channel maps): a ridge of `ridge` (relative to the largest
//   diagonal entry, default 1e-12) keeps every factorised block positive definite, and an
//   entering column whose Schur complement is below that level (numerically in the span of
//   the active columns, so it cannot lower the objective) is skipped. The ridge moves the
//   KKT residual by at most ridge * max(theta).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace torch_geometry {
namespace nnk {

struct QPOptions {
  double tol = 1e-10;     // entering threshold on -g (KKT tolerance off the support)
  double ridge = 1e-12;   // relative diagonal ridge
  int max_iter = 0;       // outer iterations; 0 = 5 m + 20
};

struct QPResult {
  int iterations = 0;
  int skipped = 0;        // candidates skipped as numerically dependent
  bool converged = false;
  double quad = 0.0;      // theta^T K theta (without the ridge)
};

// Scratch space, reused across nodes by one thread (no allocation per node after warm-up).
struct QPWorkspace {
  std::vector<double> K;        // cached columns, column j at K[j * m]
  std::vector<char> have_col;
  std::vector<double> L;        // Cholesky factor of the active block, row-major p x p (stride m)
  std::vector<int> active;      // indices in the active set, in factor order
  std::vector<char> in_active, skipped;
  std::vector<double> z, w, y;

  void reset(int m) {
    const size_t mm = static_cast<size_t>(m) * m;
    if (K.size() < mm) {
      K.resize(mm);
      L.resize(mm);
    }
    have_col.assign(m, 0);
    in_active.assign(m, 0);
    skipped.assign(m, 0);
    active.clear();
    z.assign(m, 0.0);
    w.assign(m, 0.0);
    y.assign(m, 0.0);
  }
};

namespace detail {

// Appends index j to the factor of the active block. Returns false (and leaves the factor
// as it was) when the new pivot is below the ridge level, i.e. column j is numerically
// dependent on the active columns.
inline bool chol_append(QPWorkspace& ws, int m, int j, double ridge_abs) {
  const int p = static_cast<int>(ws.active.size());
  double* Lrow = &ws.L[static_cast<size_t>(p) * m];
  const double* Kj = &ws.K[static_cast<size_t>(j) * m];
  double s = Kj[j] + ridge_abs;
  for (int a = 0; a < p; ++a) {
    double v = Kj[ws.active[a]];
    const double* La = &ws.L[static_cast<size_t>(a) * m];
    for (int c = 0; c < a; ++c) {
      v -= La[c] * Lrow[c];
    }
    v /= La[a];
    Lrow[a] = v;
    s -= v * v;
  }
  if (!(s > 0.5 * ridge_abs)) {
    return false;
  }
  Lrow[p] = std::sqrt(s);
  ws.active.push_back(j);
  return true;
}

// Refactorises the active block after removals. A principal block of a positive definite
// block stays positive definite, so this fails only through rounding; an index that fails
// leaves the active set with weight 0.
inline void chol_rebuild(QPWorkspace& ws, int m, double ridge_abs, double* theta) {
  std::vector<int> keep;
  keep.swap(ws.active);
  for (int j : keep) {
    if (!chol_append(ws, m, j, ridge_abs)) {
      theta[j] = 0.0;
      ws.in_active[j] = 0;
    }
  }
}

// Solves (K_PP + ridge I) z_P = b_P with the current factor; z holds the result in
// factor order.
inline void chol_solve(QPWorkspace& ws, int m, const double* b) {
  const int p = static_cast<int>(ws.active.size());
  for (int a = 0; a < p; ++a) {
    const double* La = &ws.L[static_cast<size_t>(a) * m];
    double v = b[ws.active[a]];
    for (int c = 0; c < a; ++c) {
      v -= La[c] * ws.y[c];
    }
    ws.y[a] = v / La[a];
  }
  for (int a = p - 1; a >= 0; --a) {
    double v = ws.y[a];
    for (int c = a + 1; c < p; ++c) {
      v -= ws.L[static_cast<size_t>(c) * m + a] * ws.z[c];
    }
    ws.z[a] = v / ws.L[static_cast<size_t>(a) * m + a];
  }
}

} // namespace detail

// Solves the problem above for one node. `column(j, out)` must write K[0..m), j into out.
// theta (length m) receives the solution.
template <typename ColumnFn>
QPResult solve_nonneg_qp(
    int m,
    const double* b,
    ColumnFn&& column,
    double* theta,
    QPWorkspace& ws,
    const QPOptions& opt = QPOptions()) {
  QPResult res;
  ws.reset(m);
  std::fill(theta, theta + m, 0.0);
  if (m == 0) {
    res.converged = true;
    return res;
  }
  auto ensure_col = [&](int j) {
    if (!ws.have_col[j]) {
      column(j, &ws.K[static_cast<size_t>(j) * m]);
      ws.have_col[j] = 1;
    }
  };
  // Scale of the ridge: the largest diagonal entry among columns seen; kernels here have
  // kappa(x, x) = 1, so this is 1 unless a caller passes another PSD matrix.
  double diag_scale = 0.0;
  for (int l = 0; l < m; ++l) {
    ws.w[l] = b[l];
  }
  const int max_iter = opt.max_iter > 0 ? opt.max_iter : 5 * m + 20;
  for (res.iterations = 0; res.iterations < max_iter; ++res.iterations) {
    int j = -1;
    double best = opt.tol;
    for (int l = 0; l < m; ++l) {
      if (!ws.in_active[l] && !ws.skipped[l] && ws.w[l] > best) {
        best = ws.w[l];
        j = l;
      }
    }
    if (j < 0) {
      res.converged = true;
      break;
    }
    ensure_col(j);
    diag_scale = std::max(diag_scale, ws.K[static_cast<size_t>(j) * m + j]);
    const double ridge_abs = opt.ridge * diag_scale;
    if (!detail::chol_append(ws, m, j, ridge_abs)) {
      ws.skipped[j] = 1;
      ++res.skipped;
      continue;
    }
    ws.in_active[j] = 1;
    bool first = true;
    while (true) {
      detail::chol_solve(ws, m, b);
      const int p = static_cast<int>(ws.active.size());
      bool feasible = true;
      for (int a = 0; a < p; ++a) {
        if (!(ws.z[a] > 0.0)) {
          feasible = false;
          break;
        }
      }
      if (feasible) {
        for (int a = 0; a < p; ++a) {
          theta[ws.active[a]] = ws.z[a];
        }
        break;
      }
      if (first && !(ws.z[p - 1] > 0.0)) {
        // The entering index cannot take a positive weight: a numerically degenerate
        // direction (its gradient was at the tolerance). Skip it rather than cycle.
        ws.active.pop_back();
        ws.in_active[j] = 0;
        ws.skipped[j] = 1;
        ++res.skipped;
        break;
      }
      first = false;
      // Step from theta towards z until the first active weight reaches zero.
      double alpha = 1.0;
      int hit = -1;
      for (int a = 0; a < p; ++a) {
        if (!(ws.z[a] > 0.0)) {
          const double t = theta[ws.active[a]];
          const double r = t / (t - ws.z[a]);
          if (r < alpha) {
            alpha = r;
            hit = a;
          }
        }
      }
      for (int a = 0; a < p; ++a) {
        double& t = theta[ws.active[a]];
        t += alpha * (ws.z[a] - t);
      }
      std::vector<int> keep;
      keep.reserve(p);
      for (int a = 0; a < p; ++a) {
        const int idx = ws.active[a];
        if (a == hit || theta[idx] <= 1e-15 * diag_scale) {
          theta[idx] = 0.0;
          ws.in_active[idx] = 0;
        } else {
          keep.push_back(idx);
        }
      }
      ws.active.swap(keep);
      detail::chol_rebuild(ws, m, ridge_abs, theta);
      if (ws.active.empty()) {
        break;
      }
    }
    if (ws.in_active[j]) {
      // The active set grew: a candidate skipped against the old set may now be
      // independent of it, so it gets another chance through its gradient.
      std::fill(ws.skipped.begin(), ws.skipped.end(), 0);
    }
    // w = b - K_{:,P} theta_P - ridge theta, one contiguous cached column at a time (the
    // same order of operations per entry as a row-wise loop, so the same bits).
    double* w = ws.w.data();
    std::copy(b, b + m, w);
    for (int idx : ws.active) {
      const double* Kc = &ws.K[static_cast<size_t>(idx) * m];
      const double t = theta[idx];
      for (int l = 0; l < m; ++l) {
        w[l] -= Kc[l] * t;
      }
    }
    for (int l = 0; l < m; ++l) {
      w[l] -= ridge_abs * theta[l];
    }
  }
  double quad = 0.0;
  for (int a : ws.active) {
    double v = 0.0;
    for (int c : ws.active) {
      v += ws.K[static_cast<size_t>(c) * m + a] * theta[c];
    }
    quad += theta[a] * v;
  }
  res.quad = quad;
  return res;
}

} // namespace nnk
} // namespace torch_geometry
