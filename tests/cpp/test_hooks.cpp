// The LibTorch side of the training integration: Tap activation capture, probe passes,
// the geometry tracker and NNK early stopping inside a small C++ training loop.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include <cctype>
#include <stdexcept>
#include <string>
#include <thread>

#include "hooks/early_stopping.h"
#include "hooks/geometry_tracker.h"
#include "hooks/tap.h"

namespace {

namespace hk = torch_geometry::hooks;

// A strict recursive-descent JSON validator: enough to know that to_json() is parseable.
class JsonChecker {
 public:
  explicit JsonChecker(const std::string& s) : s_(s) {}
  bool valid() {
    skip();
    if (!value()) return false;
    skip();
    return i_ == s_.size();
  }

 private:
  void skip() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }
  bool lit(const char* w) {
    const std::string t(w);
    if (s_.compare(i_, t.size(), t) != 0) return false;
    i_ += t.size();
    return true;
  }
  bool str() {
    if (s_[i_] != '"') return false;
    for (++i_; i_ < s_.size(); ++i_) {
      if (s_[i_] == '\\') { ++i_; continue; }
      if (static_cast<unsigned char>(s_[i_]) < 0x20) return false;
      if (s_[i_] == '"') { ++i_; return true; }
    }
    return false;
  }
  bool num() {
    const size_t start = i_;
    if (s_[i_] == '-') ++i_;
    while (i_ < s_.size() && (std::isdigit(static_cast<unsigned char>(s_[i_])) ||
                              s_[i_] == '.' || s_[i_] == 'e' || s_[i_] == 'E' ||
                              s_[i_] == '+' || s_[i_] == '-')) ++i_;
    return i_ > start && std::isdigit(static_cast<unsigned char>(s_[i_ - 1]));
  }
  bool seq(char close, bool object) {
    ++i_;
    skip();
    if (s_[i_] == close) { ++i_; return true; }
    while (true) {
      skip();
      if (object) {
        if (!str()) return false;
        skip();
        if (s_[i_++] != ':') return false;
        skip();
      }
      if (!value()) return false;
      skip();
      if (s_[i_] == ',') { ++i_; continue; }
      if (s_[i_] == close) { ++i_; return true; }
      return false;
    }
  }
  bool value() {
    if (i_ >= s_.size()) return false;
    switch (s_[i_]) {
      case '{': return seq('}', true);
      case '[': return seq(']', false);
      case '"': return str();
      case 't': return lit("true");
      case 'f': return lit("false");
      case 'n': return lit("null");
      default: return num();
    }
  }
  const std::string& s_;
  size_t i_ = 0;
};

struct TinyNetImpl : torch::nn::Module {
  torch::nn::Conv2d conv{torch::nn::Conv2dOptions(1, 4, 3).padding(1)};
  torch::nn::Linear fc{4 * 8 * 8, 3};
  torch::nn::Dropout drop{0.5};
  hk::Tap tap_conv{"conv"}, tap_fc{"fc"};
  TinyNetImpl() {
    register_module("conv", conv);
    register_module("fc", fc);
    register_module("drop", drop);
    register_module("tap_conv", tap_conv);
    register_module("tap_fc", tap_fc);
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto h = tap_conv(drop(torch::relu(conv(x))));
    return tap_fc(fc(h.flatten(1)));
  }
};
TORCH_MODULE(TinyNet);

// Two classes that a conv can tell apart: bright top half vs bright bottom half.
std::pair<torch::Tensor, torch::Tensor> tiny_data(int64_t n) {
  auto y = torch::arange(n, torch::kLong) % 3;
  auto x = 0.3 * torch::randn({n, 1, 8, 8});
  for (int64_t i = 0; i < n; ++i) {
    const int64_t c = y[i].item<int64_t>();
    x[i][0].slice(0, c * 2, c * 2 + 3) += 1.0;
  }
  return {x, y};
}

TEST(Tap, RecordsOnlyWhileARecordingIsActive) {
  hk::Tap tap("layer");
  auto x = torch::randn({4, 3});
  EXPECT_EQ(hk::ProbeRecording::current(), nullptr);
  auto y = tap(x);
  EXPECT_TRUE(y.is_same(x));  // identity: the very tensor, autograd untouched
  {
    hk::ProbeRecording rec;
    EXPECT_EQ(hk::ProbeRecording::current(), &rec);
    tap(x);
    tap(x * 2);
    ASSERT_EQ(rec.chunks().at("layer").size(), 2u);
    auto out = rec.collect();
    EXPECT_TRUE(torch::equal(out.at("layer"), torch::cat({x, x * 2})));
    EXPECT_TRUE(rec.chunks().empty());
  }
  EXPECT_EQ(hk::ProbeRecording::current(), nullptr);
}

TEST(Tap, RecordingsNestAndStayOnTheirThread) {
  hk::Tap tap("t");
  auto x = torch::ones({2, 2}, torch::requires_grad());
  hk::ProbeRecording outer;
  {
    hk::ProbeRecording inner;
    tap(x);
    EXPECT_EQ(inner.chunks().at("t").size(), 1u);
    EXPECT_FALSE(inner.chunks().at("t")[0].requires_grad());  // detached
  }
  EXPECT_TRUE(outer.chunks().empty());
  std::thread other([&] { tap(x); });
  other.join();
  EXPECT_TRUE(outer.chunks().empty());
  tap(x);
  EXPECT_EQ(outer.chunks().at("t").size(), 1u);
  // Gradients flow through a tap as through identity.
  tap(x).sum().backward();
  EXPECT_TRUE(torch::equal(x.grad(), torch::ones({2, 2})));
}

TEST(Tap, WorksInsideSequential) {
  torch::nn::Sequential seq(torch::nn::Linear(3, 5), hk::Tap("hidden"), torch::nn::ReLU());
  auto x = torch::randn({7, 3});
  auto acts = hk::run_probe(seq, x, /*batch_size=*/3);
  ASSERT_EQ(acts.count("hidden"), 1u);
  EXPECT_EQ(acts.at("hidden").sizes(), (torch::IntArrayRef{7, 5}));
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::allclose(acts.at("hidden"), seq[0]->as<torch::nn::Linear>()->forward(x)));
}

TEST(RunProbe, BatchesInEvalModeAndRestoresTrainingMode) {
  torch::manual_seed(0);
  TinyNet net;
  auto x = torch::randn({23, 1, 8, 8});
  net->train();
  auto acts = hk::run_probe(net, x, /*batch_size=*/5);
  EXPECT_TRUE(net->is_training());
  EXPECT_TRUE(net->drop->is_training());
  ASSERT_EQ(acts.size(), 2u);
  EXPECT_EQ(acts.at("conv").sizes(), (torch::IntArrayRef{23, 4, 8, 8}));
  EXPECT_EQ(acts.at("fc").sizes(), (torch::IntArrayRef{23, 3}));
  EXPECT_FALSE(acts.at("fc").requires_grad());
  // Eval mode: dropout is off, so the recorded activations are the deterministic ones.
  {
    torch::NoGradGuard no_grad;
    net->eval();
    EXPECT_TRUE(torch::allclose(acts.at("fc"), net->forward(x), 1e-5, 1e-6));
  }
  // An eval-mode model stays in eval mode.
  hk::run_probe(net, x);
  EXPECT_FALSE(net->is_training());
  // A forward that throws leaves the mode restored and no recording behind.
  net->train();
  EXPECT_THROW(hk::run_probe(
                   *net, [](const torch::Tensor&) { throw std::runtime_error("boom"); }, x),
               std::runtime_error);
  EXPECT_TRUE(net->is_training());
  EXPECT_EQ(hk::ProbeRecording::current(), nullptr);
  EXPECT_THROW(hk::run_probe(net, x, /*batch_size=*/0), c10::Error);
}

TEST(GeometryTrackerCpp, HistoryGrowsAndJsonParses) {
  torch::manual_seed(1);
  TinyNet net;
  auto [x, y] = tiny_data(60);
  hk::TrackerOptions opts;
  opts.k = 5;
  hk::GeometryTracker tracker({"conv", "fc"}, opts);
  tracker.set_labels(y);
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9));
  size_t previous = 0;
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    net->train();
    opt.zero_grad();
    torch::nn::functional::cross_entropy(net->forward(x), y).backward();
    opt.step();
    auto rows = tracker.step(epoch, hk::run_probe(net, x));
    EXPECT_FALSE(rows.empty());
    EXPECT_EQ(tracker.history().size(), previous + rows.size());
    previous = tracker.history().size();
    bool has_loo = false;
    for (const auto& r : rows) {
      EXPECT_EQ(r.epoch, epoch);
      if (r.metric == "loo_error") {
        has_loo = true;
        EXPECT_GE(r.summary.mean, 0.0);
        EXPECT_LE(r.summary.mean, 1.0);
      }
    }
    EXPECT_TRUE(has_loo);
  }
  const std::string json = tracker.to_json();
  EXPECT_TRUE(JsonChecker(json).valid()) << json.substr(0, 400);
  EXPECT_NE(json.find("\"epoch_overlap\""), std::string::npos);
}

TEST(NNKEarlyStoppingCpp, FrozenChannelsStayBitwiseEqualUnderMomentum) {
  torch::manual_seed(2);
  TinyNet net;
  auto [x, y] = tiny_data(60);
  hk::EarlyStoppingOptions opts;
  opts.mode = "channel";
  opts.patience = 1;
  opts.min_delta = 2.0;  // no check can improve by 2 (scores are in [0, 1]): freeze at check 2
  opts.k = 5;
  hk::NNKEarlyStopping stopper(opts);
  stopper.set_labels(y);
  stopper.watch({net->conv->weight, net->conv->bias});
  EXPECT_TRUE(JsonChecker(stopper.to_json()).valid());
  torch::optim::SGD opt(net->parameters(),
                        torch::optim::SGDOptions(0.05).momentum(0.9).weight_decay(1e-3));
  torch::Tensor best_w, best_b;
  auto train_epoch = [&] {
    for (int step = 0; step < 5; ++step) {
      opt.zero_grad();
      torch::nn::functional::cross_entropy(net->forward(x), y).backward();
      opt.step();
      stopper.enforce();
    }
  };
  train_epoch();
  EXPECT_FALSE(stopper.step(0, hk::run_probe(net, x).at("conv")));
  best_w = net->conv->weight.detach().clone();
  best_b = net->conv->bias.detach().clone();
  EXPECT_TRUE(stopper.frozen_channels().empty());
  train_epoch();
  EXPECT_FALSE(torch::equal(net->conv->weight, best_w));  // training moved them
  EXPECT_TRUE(stopper.step(1, hk::run_probe(net, x).at("conv")));
  EXPECT_EQ(stopper.frozen_channels(), (std::vector<int64_t>{0, 1, 2, 3}));
  EXPECT_EQ(stopper.stopped_epoch(), 1);
  // restore_best_weights: the frozen channels are back at their check-0 values, bit for bit,
  // and stay there through momentum and weight decay, while the rest keeps training.
  EXPECT_TRUE(torch::equal(net->conv->weight, best_w));
  EXPECT_TRUE(torch::equal(net->conv->bias, best_b));
  const auto fc_before = net->fc->weight.detach().clone();
  train_epoch();
  EXPECT_TRUE(torch::equal(net->conv->weight, best_w));
  EXPECT_TRUE(torch::equal(net->conv->bias, best_b));
  EXPECT_FALSE(torch::equal(net->fc->weight, fc_before));

  const std::string json = stopper.to_json();
  EXPECT_TRUE(JsonChecker(json).valid()) << json;
  EXPECT_NE(json.find("\"mode\": \"channel\""), std::string::npos);
  EXPECT_NE(json.find("\"checks\": 2"), std::string::npos);
  EXPECT_NE(json.find("{\"channel\": 3, \"epoch\": 1}"), std::string::npos);
  EXPECT_NE(json.find("\"stopped_epoch\": 1"), std::string::npos);
  EXPECT_NE(json.find("\"stop_reason\": \"every channel is frozen\""), std::string::npos);
}

TEST(NNKEarlyStoppingCpp, JsonOfAFreshLayerModeCallback) {
  hk::EarlyStoppingOptions opts;
  opts.mode = "layer";
  hk::NNKEarlyStopping stopper(opts);
  const std::string json = stopper.to_json();
  EXPECT_TRUE(JsonChecker(json).valid()) << json;
  EXPECT_NE(json.find("\"best_epoch\": null"), std::string::npos);
  EXPECT_NE(json.find("\"stopped_epoch\": null"), std::string::npos);
  EXPECT_NE(json.find("\"frozen\": []"), std::string::npos);
}

TEST(RankModelsCpp, BetterSeparatedActivationsRankFirst) {
  torch::manual_seed(3);
  auto y = torch::arange(90, torch::kLong) % 3;
  auto centres = torch::randn({3, 8}) * 4;
  auto good = centres.index_select(0, y) + 0.3 * torch::randn({90, 8});
  auto noise = torch::randn({90, 8});
  auto ranked = hk::rank_models({"noise", "good"}, {noise, good}, y, /*k=*/5);
  ASSERT_EQ(ranked.size(), 2u);
  EXPECT_EQ(ranked[0].first, "good");
  EXPECT_LT(ranked[0].second, ranked[1].second);
}

} // namespace
