// libFuzzer target: the exact NNK solver (csrc/cpu/nnk_solver.h) on small problems built
// from fuzzed points.
//
// Input bytes -> a query point q and m <= 8 candidate points in D <= 6 dimensions (small
// integer grids, so duplicates, shared directions and D < m come often), a kernel (cosine
// or Gaussian with a fuzzed sigma); K = kernel among the candidates, b = kernel from q.
// Every solution must
//   * be feasible (theta >= 0, finite) and converged,
//   * satisfy the KKT conditions: g = K theta - b ~ 0 on the support, >= -tol off it,
//   * reach the objective of a brute-force enumeration of supports: for every subset S,
//     the minimiser over span(S) (pseudo-inverse of K_SS), when it is >= 0, is a feasible
//     point, and the solver's objective must not be above the best of them.
// A violated property prints the problem and aborts (libFuzzer saves the input).
#include <fuzzer/FuzzedDataProvider.h>

#include <Eigen/Dense>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "csrc/cpu/nnk_solver.h"

namespace {

using Mat = Eigen::MatrixXd;
using Vec = Eigen::VectorXd;

double objective(const Mat& K, const Vec& b, const Vec& theta) {
  return 0.5 * theta.dot(K * theta) - b.dot(theta);
}

// The smallest objective over the feasible minimisers of all supports.
double brute_force_minimum(const Mat& K, const Vec& b) {
  const int m = static_cast<int>(b.size());
  double best = 0.0;  // empty support
  for (int mask = 1; mask < (1 << m); ++mask) {
    std::vector<int> s;
    for (int j = 0; j < m; ++j) {
      if (mask & (1 << j)) s.push_back(j);
    }
    const int p = static_cast<int>(s.size());
    Mat Kss(p, p);
    Vec bs(p);
    for (int a = 0; a < p; ++a) {
      bs(a) = b(s[a]);
      for (int c = 0; c < p; ++c) Kss(a, c) = K(s[a], s[c]);
    }
    Eigen::SelfAdjointEigenSolver<Mat> eig(Kss);
    const Vec& lam = eig.eigenvalues();
    const double cut = 1e-12 * std::max(1.0, lam.cwiseAbs().maxCoeff());
    Vec proj = eig.eigenvectors().transpose() * bs;
    for (int a = 0; a < p; ++a) proj(a) = lam(a) > cut ? proj(a) / lam(a) : 0.0;
    const Vec ts = eig.eigenvectors() * proj;
    if (ts.minCoeff() < 0.0) continue;
    Vec theta = Vec::Zero(m);
    for (int a = 0; a < p; ++a) theta(s[a]) = ts(a);
    best = std::min(best, objective(K, b, theta));
  }
  return best;
}

[[noreturn]] void fail(const char* what, const Mat& K, const Vec& b, const Vec& theta,
                       double detail) {
  std::fprintf(stderr, "fuzz_nnk_solver: %s (%.3e)\n", what, detail);
  std::fprintf(stderr, "K =\n");
  for (int r = 0; r < K.rows(); ++r) {
    for (int c = 0; c < K.cols(); ++c) std::fprintf(stderr, " %.17g", K(r, c));
    std::fprintf(stderr, "\n");
  }
  std::fprintf(stderr, "b =");
  for (int r = 0; r < b.size(); ++r) std::fprintf(stderr, " %.17g", b(r));
  std::fprintf(stderr, "\ntheta =");
  for (int r = 0; r < theta.size(); ++r) std::fprintf(stderr, " %.17g", theta(r));
  std::fprintf(stderr, "\n");
  std::abort();
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider fdp(data, size);
  const int m = fdp.ConsumeIntegralInRange<int>(1, 8);
  const int d = fdp.ConsumeIntegralInRange<int>(1, 6);
  const bool cosine = fdp.ConsumeBool();
  // Gaussian bandwidths from very narrow (K ~ identity) to very wide (K ~ all ones).
  const double sigma = std::pow(10.0, fdp.ConsumeIntegralInRange<int>(-8, 16) / 4.0);
  const double grid = fdp.ConsumeBool() ? 1.0 : 1e-3;  // grid spacing (scale of the points)

  // Point 0 is the query, points 1..m the candidates.
  Mat pts(m + 1, d);
  for (int i = 0; i <= m; ++i) {
    for (int c = 0; c < d; ++c) pts(i, c) = grid * fdp.ConsumeIntegralInRange<int>(-3, 3);
  }
  auto kernel = [&](int i, int j) {
    if (cosine) {
      const double ni = pts.row(i).norm(), nj = pts.row(j).norm();
      const double cs = std::max(-1.0, std::min(1.0, pts.row(i).dot(pts.row(j)) / (ni * nj)));
      return 0.5 * (1.0 + cs);
    }
    return std::exp(-(pts.row(i) - pts.row(j)).squaredNorm() / (2.0 * sigma * sigma));
  };
  if (cosine) {
    // The cosine kernel has no value at the origin: nnk_graph gives such rows no edges and
    // never passes them to the solver.
    for (int i = 0; i <= m; ++i) {
      if (pts.row(i).norm() == 0.0) return 0;
    }
  }
  Mat K(m, m);
  Vec b(m);
  for (int j = 0; j < m; ++j) {
    b(j) = kernel(0, j + 1);
    for (int l = 0; l < m; ++l) K(l, j) = kernel(l + 1, j + 1);
  }

  torch_geometry::nnk::QPWorkspace ws;
  std::vector<double> th(m);
  const torch_geometry::nnk::QPResult res = torch_geometry::nnk::solve_nonneg_qp(
      m, b.data(),
      [&](int j, double* out) {
        for (int l = 0; l < m; ++l) out[l] = K(l, j);
      },
      th.data(), ws);
  const Vec theta = Eigen::Map<const Vec>(th.data(), m);

  if (!res.converged) fail("not converged", K, b, theta, res.iterations);
  for (int j = 0; j < m; ++j) {
    if (!std::isfinite(theta(j)) || theta(j) < 0.0) fail("infeasible theta", K, b, theta, theta(j));
  }
  // The ridge (1e-12 of the diagonal) moves the gradient by at most 1e-12 max(theta);
  // rounding in the factorisation adds a few ulps times the size of the products.
  const double scale = 1.0 + theta.cwiseAbs().maxCoeff();
  const double tol = 1e-9 * scale;
  const Vec g = K * theta - b;
  for (int j = 0; j < m; ++j) {
    if (theta(j) > 0.0 && std::abs(g(j)) > tol) fail("KKT: gradient != 0 on the support", K, b, theta, g(j));
    if (theta(j) == 0.0 && g(j) < -tol) fail("KKT: negative gradient off the support", K, b, theta, g(j));
  }
  const double f = objective(K, b, theta);
  const double f_brute = brute_force_minimum(K, b);
  if (f > f_brute + 1e-10 * scale * scale) fail("objective above the brute-force minimum", K, b, theta, f - f_brute);
  // quad is reported without the ridge: it must match theta^T K theta.
  if (std::abs(res.quad - theta.dot(K * theta)) > 1e-10 * scale * scale) {
    fail("quad differs from theta^T K theta", K, b, theta, res.quad - theta.dot(K * theta));
  }
  return 0;
}
