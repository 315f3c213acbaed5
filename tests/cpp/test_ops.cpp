// The operators through their public C++ API (the dispatcher), as a LibTorch user calls them.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include <torch_geometry/torch_geometry.h>

namespace {

namespace ops = torch_geometry::ops;

TEST(KnnGraph, MatchesBruteForce) {
  torch::manual_seed(0);
  for (const char* kernel : {"cosine", "gaussian"}) {
    auto x = torch::randn({200, 7}, torch::kDouble);
    auto [nbr, sim] = ops::knn_graph(x, 6, kernel, c10::nullopt, "mean");
    torch::Tensor score;
    if (std::string(kernel) == "cosine") {
      auto xn = x / x.norm(2, 1, true);
      score = xn.mm(xn.t());
    } else {
      score = -torch::cdist(x, x).pow(2);
    }
    score.fill_diagonal_(-1e300);
    auto ref = std::get<1>(score.topk(6, 1));
    EXPECT_TRUE(torch::equal(nbr, ref)) << kernel;
    EXPECT_TRUE((sim.slice(1, 0, 5) >= sim.slice(1, 1, 6)).all().item<bool>());
  }
}

TEST(KnnGraph, EuclideanCandidatesAreTheL2NearestWeighedByCosine) {
  torch::manual_seed(3);
  // Norms that vary by a factor 20: the L2 and cosine rankings differ.
  auto x = torch::randn({150, 5}, torch::kDouble) * (torch::rand({150, 1}, torch::kDouble) * 4.75 + 0.25);
  auto [nbr, sim] = ops::knn_graph(x, 6, "cosine", c10::nullopt, "mean", "euclidean");
  auto d2 = torch::cdist(x, x).pow(2);
  d2.fill_diagonal_(1e300);
  auto ref = std::get<1>(d2.topk(6, 1, /*largest=*/false));
  EXPECT_TRUE(torch::equal(nbr, ref));
  auto xn = x / x.norm(2, 1, true);
  auto want = (1 + xn.mm(xn.t())).gather(1, ref) / 2;
  EXPECT_TRUE(torch::allclose(sim, want, /*rtol=*/0, /*atol=*/1e-12));
  auto [knbr, ksim] = ops::knn_graph(x, 6, "cosine", c10::nullopt, "mean");
  EXPECT_FALSE(torch::equal(knbr, nbr));
  // nnk_graph and channel_nnk_graph take the same candidates.
  auto [gn, gw, ge] = ops::nnk_graph(x, 6, "cosine", c10::nullopt, "mean", c10::nullopt, 1e-10, "euclidean");
  EXPECT_TRUE(torch::equal(std::get<0>(gn.sort(1)), std::get<0>(ref.sort(1))));
  auto [cn, cw, ce] = ops::channel_nnk_graph(x.view({150, 1, 5}), 6, "cosine", 1e-10, "euclidean");
  EXPECT_TRUE(torch::equal(cn[0], gn));
  EXPECT_TRUE(torch::equal(cw[0], gw));
  EXPECT_THROW(ops::knn_graph(x, 6, "cosine", c10::nullopt, "mean", "l2"), c10::Error);
  EXPECT_THROW(ops::nnk_graph(x, 6, "cosine", c10::nullopt, "mean", c10::nullopt, 1e-10, "L2"), c10::Error);
}

TEST(NnkGraph, DuplicatesConnectWithWeightOne) {
  torch::manual_seed(1);
  auto x = torch::randn({50, 5});
  x[7] = x[3];
  auto [nbr, w, err] = ops::nnk_graph(x, 8, "cosine", c10::nullopt, "mean", c10::nullopt, 1e-10);
  EXPECT_EQ(nbr[3][0].item<int64_t>(), 7);
  EXPECT_FLOAT_EQ(w[3][0].item<float>(), 1.0f);
  EXPECT_EQ((w[3] > 0).sum().item<int64_t>(), 1);
  EXPECT_FLOAT_EQ(err[3].item<float>(), 0.0f);
  EXPECT_TRUE(torch::isfinite(w).all().item<bool>());
}

TEST(NnkGraph, ZeroRowsGetNoEdgesUnderCosine) {
  torch::manual_seed(2);
  auto x = torch::randn({40, 6});
  x[5].zero_();
  auto [nbr, w, err] = ops::nnk_graph(x, 5, "cosine", c10::nullopt, "mean", c10::nullopt, 1e-10);
  EXPECT_TRUE((nbr[5] == -1).all().item<bool>());
  EXPECT_TRUE((nbr != 5).all().item<bool>());
  EXPECT_FLOAT_EQ(err[5].item<float>(), 1.0f);
}

TEST(NnkGraph, BadInputThrows) {
  auto x = torch::randn({10, 3});
  EXPECT_THROW(ops::nnk_graph(x, 10, "cosine", c10::nullopt, "mean", c10::nullopt, 0.0), c10::Error);
  EXPECT_THROW(ops::nnk_graph(x, 3, "rbf", c10::nullopt, "mean", c10::nullopt, 0.0), c10::Error);
  EXPECT_THROW(ops::nnk_graph(x.to(torch::kInt), 3, "cosine", c10::nullopt, "mean", c10::nullopt, 0.0), c10::Error);
  auto bad = x.clone();
  bad[0][0] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(ops::nnk_graph(bad, 3, "cosine", c10::nullopt, "mean", c10::nullopt, 0.0), c10::Error);
}

// Hand-made 3-node directed graph: 0 lists {1, 2}, 1 lists {0}, 2 lists {1}.
struct Hand {
  torch::Tensor nbr = torch::tensor({0, 0, 0, 0, 0, 0}, torch::kLong).view({3, 2});
  torch::Tensor w, err;
  Hand() {
    nbr = torch::tensor({1, 2, 0, -1, 1, -1}, torch::kLong).view({3, 2});
    w = torch::tensor({0.5, 0.2, 0.4, 0.0, 0.0, 0.0}, torch::kDouble).view({3, 2});
    err = torch::tensor({0.1, 0.3, 0.2}, torch::kDouble);
  }
};

std::map<std::pair<int64_t, int64_t>, double> as_map(const torch::Tensor& ei, const torch::Tensor& ew) {
  std::map<std::pair<int64_t, int64_t>, double> m;
  for (int64_t e = 0; e < ei.size(1); ++e) m[{ei[0][e].item<int64_t>(), ei[1][e].item<int64_t>()}] = ew[e].item<double>();
  return m;
}

TEST(NnkSymmetrize, Rules) {
  Hand h;
  using M = std::map<std::pair<int64_t, int64_t>, double>;
  auto run = [&](const char* mode) {
    auto [ei, ew] = ops::nnk_symmetrize(h.nbr, h.w, h.err, mode);
    return as_map(ei, ew);
  };
  EXPECT_EQ(run("none"), (M{{{0, 1}, 0.5}, {{0, 2}, 0.2}, {{1, 0}, 0.4}}));
  EXPECT_EQ(run("max"), (M{{{0, 1}, 0.5}, {{1, 0}, 0.5}, {{0, 2}, 0.2}, {{2, 0}, 0.2}}));
  EXPECT_EQ(run("mean"), (M{{{0, 1}, 0.45}, {{1, 0}, 0.45}, {{0, 2}, 0.1}, {{2, 0}, 0.1}}));
  // (0,1): both candidates, e_0 = 0.1 < e_1 = 0.3 -> theta_01 = 0.5.
  // (0,2): 2 does not list 0 -> no edge. (1,2): 1 does not list 2 -> no edge.
  EXPECT_EQ(run("min_error"), (M{{{0, 1}, 0.5}, {{1, 0}, 0.5}}));
  // Swap errors: e_1 < e_0 -> theta_10 = 0.4. Equal errors -> the larger, 0.5.
  h.err = torch::tensor({0.3, 0.1, 0.2}, torch::kDouble);
  EXPECT_EQ(run("min_error"), (M{{{0, 1}, 0.4}, {{1, 0}, 0.4}}));
  h.err = torch::tensor({0.2, 0.2, 0.2}, torch::kDouble);
  EXPECT_EQ(run("min_error"), (M{{{0, 1}, 0.5}, {{1, 0}, 0.5}}));
}

TEST(NnkSymmetrize, MinErrorZeroWeightCandidateGivesNoEdgeWhenChosen) {
  // Both list each other; the lower-error endpoint gave weight 0: no edge.
  auto nbr = torch::tensor({1, 0}, torch::kLong).view({2, 1});
  auto w = torch::tensor({0.0, 0.7}, torch::kDouble).view({2, 1});
  auto err = torch::tensor({0.1, 0.5}, torch::kDouble);
  auto [ei, ew] = ops::nnk_symmetrize(nbr, w, err, "min_error");
  EXPECT_EQ(ei.size(1), 0);
}

TEST(NnkSymmetrize, BadInputThrows) {
  Hand h;
  EXPECT_THROW(ops::nnk_symmetrize(h.nbr, h.w, h.err, "sym"), c10::Error);
  EXPECT_THROW(ops::nnk_symmetrize(h.nbr, h.w.slice(1, 0, 1), h.err, "max"), c10::Error);
  auto self = h.nbr.clone();
  self[0][0] = 0;
  EXPECT_THROW(ops::nnk_symmetrize(self, h.w, h.err, "max"), c10::Error);
  auto out = h.nbr.clone();
  out[0][0] = 3;
  EXPECT_THROW(ops::nnk_symmetrize(out, h.w, h.err, "max"), c10::Error);
}

} // namespace
