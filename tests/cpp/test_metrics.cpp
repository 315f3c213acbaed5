// The metric operators through their C++ API (the dispatcher), as a LibTorch trainer calls them.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include "csrc/graph_overlap.h"
#include "csrc/label_metrics.h"
#include "csrc/manifold_metrics.h"
#include "csrc/nnk_graph.h"

namespace {

namespace ops = torch_geometry::ops;

// Points on a random d-dimensional linear subspace of R^ambient.
torch::Tensor flat(int64_t n, int64_t d, int64_t ambient) {
  auto basis = std::get<0>(at::linalg_qr(torch::randn({ambient, d}, torch::kDouble)));
  return torch::rand({n, d}, torch::kDouble).mm(basis.t());
}

TEST(ManifoldMetrics, FlatHasItsDimensionAndNoCurvature) {
  torch::manual_seed(0);
  for (int64_t d : {2, 3}) {
    auto x = flat(600, d, 16);
    auto [nbr, w, err] =
        ops::nnk_graph(x, 20, "gaussian", c10::nullopt, "mean", c10::nullopt, 1e-10);
    auto [degree, diameter, local_dim, log_volume, curvature] =
        ops::manifold_metrics(x, nbr, w, "gaussian", 0.05);
    EXPECT_EQ(local_dim.median().item<int64_t>(), d);
    // Not the max: where local_dim < d (a boundary node whose polytope is thin), the top-m
    // directions of two ends need not agree even on a flat.
    EXPECT_LT(curvature.median().item<double>(), 1e-6);
    EXPECT_TRUE(torch::equal(degree, (w > 0).sum(1)));
    EXPECT_TRUE(torch::isfinite(log_volume).all().item<bool>());
    EXPECT_TRUE((diameter > 0).all().item<bool>());
  }
}

TEST(ManifoldMetrics, RefusesAlphaOutsideUnitInterval) {
  auto x = torch::randn({10, 3}, torch::kDouble);
  auto nbr = torch::full({10, 2}, -1, torch::kLong);
  auto w = torch::zeros({10, 2}, torch::kDouble);
  EXPECT_THROW(ops::manifold_metrics(x, nbr, w, "cosine", 1.0), c10::Error);
  EXPECT_THROW(ops::manifold_metrics(x, nbr, w, "cosine", 0.0), c10::Error);
  // No edges at all: every node isolated, zeros, no NaN.
  auto out = ops::manifold_metrics(x, nbr, w, "cosine", 0.05);
  EXPECT_EQ(std::get<0>(out).sum().item<int64_t>(), 0);
  EXPECT_EQ(std::get<4>(out).abs().sum().item<double>(), 0.0);
}

TEST(LabelMetrics, LooErrorAndSmoothness) {
  // Two triangles, one per class, joined by a single weak edge 2 -> 3.
  auto nbr = torch::tensor({1, 2, 0, 2, 0, 3, 4, 5, 3, 5, 3, 4}, torch::kLong).view({6, 2});
  auto w = torch::tensor({1., 1., 1., 1., 1., 0.5, 1., 1., 1., 1., 1., 1.}, torch::kDouble)
               .view({6, 2});
  auto y = torch::tensor({0, 0, 0, 1, 1, 1}, torch::kLong);
  auto [hard, soft] = ops::nnk_loo_error(nbr, w, y, 2);
  EXPECT_EQ(hard.sum().item<double>(), 0.0);
  EXPECT_NEAR(soft[2].item<double>(), 0.5 / 1.5, 1e-12);
  EXPECT_NEAR(ops::label_smoothness(nbr, w, y), 0.5 / 11.5, 1e-12);
  EXPECT_THROW(ops::nnk_loo_error(nbr, w, y.slice(0, 0, 5), 2), c10::Error);
}

TEST(GraphOverlap, SelfOverlapIsOne) {
  torch::manual_seed(1);
  auto x = torch::randn({100, 8});
  auto [nbr, w, err] = ops::nnk_graph(x, 10, "cosine", c10::nullopt, "mean", c10::nullopt, 1e-10);
  auto [jaccard, weighted] = ops::neighborhood_overlap(nbr, w, nbr, w);
  EXPECT_TRUE(torch::allclose(jaccard, torch::ones({100}, torch::kDouble)));
  EXPECT_TRUE(torch::allclose(weighted, torch::ones({100}, torch::kDouble)));
}

} // namespace
