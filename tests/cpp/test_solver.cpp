// The exact NNK solver against KKT conditions and a brute-force enumeration of supports.
#include <gtest/gtest.h>

#include <Eigen/Dense>

#include <cmath>
#include <limits>
#include <random>

#include "csrc/cpu/nnk_solver.h"

namespace {

using Eigen::MatrixXd;
using Eigen::VectorXd;
using torch_geometry::nnk::QPWorkspace;
using torch_geometry::nnk::solve_nonneg_qp;

struct Problem {
  MatrixXd K;
  VectorXd b;
};

// K = A^T A with A of `rows` x m (rows < m makes K singular), b = A^T y: the Gram form of
// a least-squares problem, like NNK's kernel feature space.
Problem random_problem(int m, int rows, std::mt19937& rng, int duplicates = 0) {
  std::normal_distribution<double> g;
  MatrixXd A(rows, m);
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < m; ++c) A(r, c) = g(rng);
  for (int d = 0; d < duplicates && d + 1 < m; ++d) A.col(m - 1 - d) = A.col(d);
  VectorXd y(rows);
  for (int r = 0; r < rows; ++r) y(r) = g(rng);
  return {A.transpose() * A, A.transpose() * y};
}

VectorXd solve(const Problem& p, torch_geometry::nnk::QPResult* res = nullptr) {
  const int m = static_cast<int>(p.b.size());
  VectorXd theta(m);
  QPWorkspace ws;
  auto column = [&](int j, double* out) {
    for (int a = 0; a < m; ++a) out[a] = p.K(a, j);
  };
  auto r = solve_nonneg_qp(m, p.b.data(), column, theta.data(), ws);
  if (res) *res = r;
  return theta;
}

double objective(const Problem& p, const VectorXd& t) {
  return 0.5 * t.dot(p.K * t) - p.b.dot(t);
}

// KKT of min 1/2 t'Kt - b't, t >= 0: t >= 0; g = Kt - b is 0 where t > 0, >= 0 elsewhere.
void expect_kkt(const Problem& p, const VectorXd& t, double tol) {
  const double scale = std::max(1.0, p.b.cwiseAbs().maxCoeff());
  const VectorXd g = p.K * t - p.b;
  for (int i = 0; i < t.size(); ++i) {
    EXPECT_GE(t(i), 0.0);
    if (t(i) > 0) {
      EXPECT_NEAR(g(i), 0.0, tol * scale) << "gradient on the support, index " << i;
    } else {
      EXPECT_GE(g(i), -tol * scale) << "gradient off the support, index " << i;
    }
  }
}

// The optimum by enumerating all 2^m supports (m <= 10): for each support, the
// unconstrained minimiser on it (pseudo-inverse, so singular blocks are fine); keep the
// feasible ones; the best objective among them is the global minimum of the convex QP.
double brute_force_optimum(const Problem& p) {
  const int m = static_cast<int>(p.b.size());
  double best = 0.0;  // t = 0 is feasible
  for (int mask = 1; mask < (1 << m); ++mask) {
    std::vector<int> s;
    for (int i = 0; i < m; ++i)
      if (mask >> i & 1) s.push_back(i);
    const int q = static_cast<int>(s.size());
    MatrixXd Ks(q, q);
    VectorXd bs(q);
    for (int a = 0; a < q; ++a) {
      bs(a) = p.b(s[a]);
      for (int c = 0; c < q; ++c) Ks(a, c) = p.K(s[a], s[c]);
    }
    VectorXd z = Ks.completeOrthogonalDecomposition().solve(bs);
    if (z.minCoeff() < -1e-12) continue;
    VectorXd t = VectorXd::Zero(m);
    for (int a = 0; a < q; ++a) t(s[a]) = std::max(0.0, z(a));
    best = std::min(best, objective(p, t));
  }
  return best;
}

TEST(NNKSolver, KKTOnRandomProblems) {
  std::mt19937 rng(1);
  for (int trial = 0; trial < 200; ++trial) {
    const int m = 1 + trial % 50;
    Problem p = random_problem(m, m + 5 + trial % 7, rng);
    torch_geometry::nnk::QPResult res;
    VectorXd t = solve(p, &res);
    EXPECT_TRUE(res.converged) << "trial " << trial;
    expect_kkt(p, t, 1e-9);
  }
}

TEST(NNKSolver, KKTOnSingularProblems) {
  std::mt19937 rng(2);
  for (int trial = 0; trial < 200; ++trial) {
    const int m = 2 + trial % 49;
    // Fewer rows than columns (D < k) and repeated columns (duplicates).
    Problem p = random_problem(m, 1 + trial % std::max(1, m / 2), rng, trial % 3);
    torch_geometry::nnk::QPResult res;
    VectorXd t = solve(p, &res);
    EXPECT_TRUE(res.converged) << "trial " << trial;
    expect_kkt(p, t, 1e-9);
  }
}

TEST(NNKSolver, MatchesBruteForceEnumeration) {
  std::mt19937 rng(3);
  for (int trial = 0; trial < 300; ++trial) {
    const int m = 1 + trial % 10;
    const bool singular = trial % 2 == 1;
    Problem p = random_problem(m, singular ? std::max(1, m / 2) : m + 3, rng, singular ? 1 : 0);
    const VectorXd t = solve(p);
    const double ours = objective(p, t);
    const double best = brute_force_optimum(p);
    EXPECT_NEAR(ours, best, 1e-9 * std::max(1.0, std::abs(best))) << "trial " << trial;
  }
}

TEST(NNKSolver, DuplicateColumnsShareTheWeight) {
  // Two identical candidates that both match the target: any split is optimal; the
  // solver must stay finite and reach the optimum (objective -1/2).
  Problem p;
  p.K = MatrixXd::Ones(2, 2);
  p.b = VectorXd::Ones(2);
  VectorXd t = solve(p);
  EXPECT_TRUE(std::isfinite(t.sum()));
  EXPECT_NEAR(objective(p, t), -0.5, 1e-10);
  expect_kkt(p, t, 1e-9);
}

TEST(NNKSolver, ComputesOnlyColumnsItNeeds) {
  // Candidate 0 explains the target exactly and is orthogonal to the rest: only its
  // column should ever be asked for.
  const int m = 20;
  Problem p;
  p.K = MatrixXd::Identity(m, m);
  p.b = VectorXd::Zero(m);
  p.b(0) = 1.0;
  int calls = 0;
  VectorXd theta(m);
  QPWorkspace ws;
  auto column = [&](int j, double* out) {
    ++calls;
    for (int a = 0; a < m; ++a) out[a] = p.K(a, j);
  };
  solve_nonneg_qp(m, p.b.data(), column, theta.data(), ws);
  EXPECT_EQ(calls, 1);
  // 1 / (1 + ridge): the 1e-12 relative ridge is the only deviation.
  EXPECT_NEAR(theta(0), 1.0, 1e-11);
}

TEST(NNKSolver, EmptyProblem) {
  QPWorkspace ws;
  auto column = [](int, double*) { FAIL() << "no column expected"; };
  auto res = solve_nonneg_qp(0, nullptr, column, nullptr, ws);
  EXPECT_TRUE(res.converged);
}

} // namespace
