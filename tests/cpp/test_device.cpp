// The LibTorch training integration on the model's device and in its dtype: run_probe and
// taps keep activations where the model computed them (checked on the meta device, whose
// tensors cannot be copied to the host), follow a model converted after the probe set was
// made, and half-precision activations give the metrics of their float32 copy.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

#include "hooks/early_stopping.h"
#include "hooks/geometry_tracker.h"
#include "hooks/tap.h"

namespace {

namespace hk = torch_geometry::hooks;

struct SmallNetImpl : torch::nn::Module {
  torch::nn::Sequential body{
      torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 6, 3).padding(1)),
      torch::nn::ReLU(),
      hk::Tap("conv"),
      torch::nn::Flatten(),
      torch::nn::Linear(6 * 8 * 8, 12),
      hk::Tap("fc")};
  SmallNetImpl() { register_module("body", body); }
  at::Tensor forward(const at::Tensor& x) { return body->forward(x); }
};
TORCH_MODULE(SmallNet);

// Inputs [n, 1, 8, 8] whose class (i % 3) shifts the mean, so that the graphs have structure.
std::pair<at::Tensor, at::Tensor> probe_data(int64_t n) {
  torch::manual_seed(1);
  const at::Tensor y = torch::arange(n, torch::kLong) % 3;
  const at::Tensor x = torch::randn({n, 1, 8, 8}) + y.view({-1, 1, 1, 1}).to(torch::kFloat) * 0.4;
  return {x, y};
}

void expect_same_history(const std::vector<hk::HistoryRow>& a,
                         const std::vector<hk::HistoryRow>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    SCOPED_TRACE(a[i].layer + " " + a[i].metric);
    EXPECT_EQ(a[i].epoch, b[i].epoch);
    EXPECT_EQ(a[i].layer, b[i].layer);
    EXPECT_EQ(a[i].metric, b[i].metric);
    const hk::Summary& s = a[i].summary;
    const hk::Summary& t = b[i].summary;
    EXPECT_EQ(s.count, t.count);
    EXPECT_EQ(s.mean, t.mean);
    EXPECT_EQ(s.median, t.median);
    EXPECT_EQ(s.q25, t.q25);
    EXPECT_EQ(s.q75, t.q75);
    EXPECT_EQ(s.min, t.min);
    EXPECT_EQ(s.max, t.max);
    EXPECT_EQ(s.hist, t.hist);
  }
}

// A model whose parameters are on the meta device (no values: a copy of one of its
// activations to the host would throw). Module::to cannot move a CPU module there.
struct MetaNetImpl : torch::nn::Module {
  at::Tensor w1, w2;
  hk::Tap conv{"conv"}, fc{"fc"};
  MetaNetImpl() {
    w1 = register_parameter("w1", torch::empty({6 * 8 * 8, 8 * 8}, at::kMeta));
    w2 = register_parameter("w2", torch::empty({12, 6 * 8 * 8}, at::kMeta));
    register_module("conv", conv);
    register_module("fc", fc);
  }
  at::Tensor forward(const at::Tensor& x) {
    // Ops that every torch has for meta in C++ (not conv2d, relu): a linear map shaped
    // like a conv's output.
    const at::Tensor h = conv(x.flatten(1).matmul(w1.t()).view({-1, 6, 8, 8}));
    return fc(h.flatten(1).matmul(w2.t()));
  }
};
TORCH_MODULE(MetaNet);

TEST(DeviceCpp, RunProbeKeepsActivationsOnTheModelsDevice) {
  MetaNet net;
  const at::Tensor x = torch::randn({10, 1, 8, 8});  // the probe set stays on the host
  auto acts = hk::run_probe(net, x, /*batch_size=*/4);
  ASSERT_EQ(acts.size(), 2u);
  EXPECT_EQ(acts.at("conv").device().type(), at::kMeta);
  EXPECT_EQ(acts.at("conv").sizes(), at::IntArrayRef({10, 6, 8, 8}));
  EXPECT_EQ(acts.at("fc").device().type(), at::kMeta);
  EXPECT_EQ(acts.at("fc").sizes(), at::IntArrayRef({10, 12}));
  // The reduction the tracker and the callbacks apply stays there too, in float32.
  const at::Tensor pooled = hk::reduce_activations(acts.at("conv").to(at::kHalf), "avgpool");
  EXPECT_EQ(pooled.device().type(), at::kMeta);
  EXPECT_EQ(pooled.scalar_type(), at::kFloat);
  EXPECT_EQ(pooled.sizes(), at::IntArrayRef({10, 6}));
}

TEST(DeviceCpp, RunProbeFollowsAModelConvertedAfterTheProbeWasMade) {
  SmallNet net;
  at::Tensor x, y;
  std::tie(x, y) = probe_data(20);
  const auto before = hk::run_probe(net, x);
  EXPECT_EQ(before.at("fc").scalar_type(), at::kFloat);
  net->to(at::kDouble);
  const auto after = hk::run_probe(net, x);  // float inputs, double model
  ASSERT_EQ(after.at("fc").scalar_type(), at::kDouble);
  torch::NoGradGuard no_grad;
  net->eval();
  EXPECT_TRUE(torch::equal(after.at("fc"), net->forward(x.to(at::kDouble))));
  // Integer inputs are not converted to the model's dtype: an embedding takes them as ids.
  torch::nn::Sequential ids(torch::nn::Embedding(5, 3), hk::Tap("emb"));
  ids->to(at::kDouble);
  const auto emb = hk::run_probe(ids, torch::tensor({0, 4, 2}, torch::kLong));
  EXPECT_TRUE(torch::equal(emb.at("emb"), ids[0]->as<torch::nn::Embedding>()->weight.index(
                                              {torch::tensor({0, 4, 2})})));
}

TEST(DeviceCpp, TrackerOnHalfActivationsEqualsItsFloat32Copy) {
  SmallNet net;
  at::Tensor x, y;
  std::tie(x, y) = probe_data(60);
  const auto acts = hk::run_probe(net, x);
  for (const auto half : {at::kHalf, at::kBFloat16}) {
    SCOPED_TRACE(c10::toString(half));
    hk::TrackerOptions opts;
    opts.k = 8;
    hk::GeometryTracker low({"conv", "fc"}, opts), widened({"conv", "fc"}, opts);
    low.set_labels(y);
    widened.set_labels(y);
    std::map<std::string, at::Tensor> a, b;
    for (const auto& kv : acts) {
      a[kv.first] = kv.second.to(half);
      b[kv.first] = a[kv.first].to(at::kFloat);
    }
    const auto rows = low.step(0, a);
    expect_same_history(rows, widened.step(0, b));
    EXPECT_EQ(rows.size(), widened.history().size());
    // A second epoch in float64 compares with the float32 graphs of the first.
    std::map<std::string, at::Tensor> d;
    for (const auto& kv : b) d[kv.first] = kv.second.to(at::kDouble);
    const auto next = low.step(1, d);
    bool drift = false;
    for (const auto& r : next) {
      if (r.metric != "epoch_overlap") continue;
      drift = true;
      EXPECT_GT(r.summary.mean, 0.9) << r.layer;  // the same points: nearly the same graph
    }
    EXPECT_TRUE(drift);
  }
}

TEST(DeviceCpp, RankModelsOnHalfActivationsEqualsItsFloat32Copy) {
  at::Tensor x, y;
  std::tie(x, y) = probe_data(60);
  SmallNet a, b;
  const at::Tensor fa = hk::run_probe(a, x).at("conv"), fb = hk::run_probe(b, x).at("conv");
  for (const auto half : {at::kHalf, at::kBFloat16}) {
    SCOPED_TRACE(c10::toString(half));
    const std::vector<at::Tensor> low = {fa.to(half), fb.to(half)};
    const std::vector<at::Tensor> widened = {low[0].to(at::kFloat), low[1].to(at::kFloat)};
    const auto got = hk::rank_models({"a", "b"}, low, y, /*k=*/8);
    const auto want = hk::rank_models({"a", "b"}, widened, y, /*k=*/8);
    ASSERT_EQ(got.size(), 2u);
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(got[i].first, want[i].first);
      EXPECT_EQ(got[i].second, want[i].second);
    }
  }
}

} // namespace

namespace {

TEST(DeviceCpp, RecordingIsNotChangedByALaterInPlaceLayer) {
  torch::manual_seed(0);
  torch::nn::Sequential net(torch::nn::Linear(5, 7), hk::Tap("linear"),
                            torch::nn::ReLU(torch::nn::ReLUOptions().inplace(true)));
  const at::Tensor x = torch::randn({30, 5});
  const auto acts = hk::run_probe(net, x, /*batch_size=*/8);
  torch::NoGradGuard no_grad;
  const at::Tensor want = net[0]->as<torch::nn::Linear>()->forward(x);
  ASSERT_TRUE((want < 0).any().item<bool>());
  EXPECT_TRUE(torch::allclose(acts.at("linear"), want, /*rtol=*/0, /*atol=*/1e-6));
}

} // namespace
