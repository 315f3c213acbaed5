// nnk_neighbors and nnk_interpolate through their public C++ API, against direct
// computations: exact candidates by a full similarity matrix, KKT of the weights, the
// duplicate rule, interpolation by hand, and errors for bad input.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include <torch_geometry/torch_geometry.h>

#include <set>
#include <string>

namespace {

namespace ops = torch_geometry::ops;

TEST(NnkNeighbors, CandidatesAndKktMatchDirectComputation) {
  torch::manual_seed(0);
  auto ref = torch::randn({150, 6}, torch::kDouble);
  auto qry = torch::randn({20, 6}, torch::kDouble);
  const int64_t k = 8;
  auto [nbr, w, err] =
      ops::nnk_neighbors(qry, ref, k, "cosine", c10::nullopt, "mean", "kernel", c10::nullopt, 1e-10);
  auto rn = ref / ref.norm(2, 1, true);
  auto qn = qry / qry.norm(2, 1, true);
  auto sim = qn.mm(rn.t());
  auto top = std::get<1>(sim.topk(k, 1));
  for (int64_t q = 0; q < 20; ++q) {
    std::set<int64_t> got, want;
    for (int64_t l = 0; l < k; ++l) {
      got.insert(nbr[q][l].item<int64_t>());
      want.insert(top[q][l].item<int64_t>());
    }
    EXPECT_EQ(got, want) << "query " << q;
    // KKT: gradient K theta - b is 0 on the support and >= 0 off it.
    auto xs = rn.index_select(0, nbr[q]);
    auto K = 0.5 * (1 + xs.mm(xs.t()));
    auto b = 0.5 * (1 + xs.mv(qn[q]));
    auto g = K.mv(w[q]) - b;
    auto on = w[q] > 0;
    EXPECT_LT(g.masked_select(on).abs().max().item<double>(), 1e-9);
    if ((~on).any().item<bool>()) {
      EXPECT_GT(g.masked_select(~on).min().item<double>(), -1e-9);
    }
    const double e = 1 - 2 * w[q].dot(b).item<double>() + w[q].dot(K.mv(w[q])).item<double>();
    EXPECT_NEAR(err[q].item<double>(), e, 1e-10);
  }
}

TEST(NnkNeighbors, QueryEqualToReferencePointGetsItWithWeightOne) {
  torch::manual_seed(1);
  auto ref = torch::randn({40, 5});
  auto qry = ref.index_select(0, torch::tensor({4, 22}));
  for (const char* kernel : {"cosine", "gaussian"}) {
    auto [nbr, w, err] =
        ops::nnk_neighbors(qry, ref, 6, kernel, c10::nullopt, "mean", "kernel", c10::nullopt, 1e-10);
    EXPECT_EQ(nbr[0][0].item<int64_t>(), 4) << kernel;
    EXPECT_EQ(nbr[1][0].item<int64_t>(), 22) << kernel;
    EXPECT_EQ(w.select(1, 0).sum().item<float>(), 2.0f) << kernel;
    EXPECT_EQ(w.slice(1, 1).abs().sum().item<float>(), 0.0f) << kernel;
    EXPECT_EQ(err.abs().sum().item<float>(), 0.0f) << kernel;
  }
}

TEST(NnkInterpolate, WeightedMeanAndZeroRows) {
  auto nbr = torch::tensor({0, 2, -1, -1}, torch::kLong).view({2, 2});
  auto w = torch::tensor({1.0, 3.0, 0.0, 0.0}, torch::kDouble).view({2, 2});
  auto v = torch::tensor({2.0, 7.0, 10.0}, torch::kDouble).view({3, 1});
  auto out = ops::nnk_interpolate(nbr, w, v);
  EXPECT_DOUBLE_EQ(out[0][0].item<double>(), (2.0 + 30.0) / 4.0);
  EXPECT_DOUBLE_EQ(out[1][0].item<double>(), 0.0);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const c10::Error& e) {
    return e.what();
  }
  return "";
}

TEST(NnkNeighbors, BadInputThrowsClearErrors) {
  auto ref = torch::randn({10, 4});
  auto qry = torch::randn({3, 4});
  auto call = [&](const torch::Tensor& q, const torch::Tensor& r, int64_t k) {
    return [=] {
      ops::nnk_neighbors(q, r, k, "cosine", c10::nullopt, "mean", "kernel", c10::nullopt, 1e-10);
    };
  };
  EXPECT_NE(error_of(call(qry.slice(1, 0, 3), ref, 3)).find("same dimension D"), std::string::npos);
  EXPECT_NE(error_of(call(qry, ref, 10)).find("smaller than the number of reference points N = 10"),
            std::string::npos);
  EXPECT_NE(error_of(call(qry.to(torch::kDouble), ref, 3)).find("same dtype"), std::string::npos);
  EXPECT_NE(error_of([&] { ops::nnk_interpolate(torch::zeros({2, 2}, torch::kLong).fill_(5),
                                                torch::ones({2, 2}), torch::ones({3, 1})); })
                .find("[0, N) = [0, 3)"),
            std::string::npos);
}

} // namespace
