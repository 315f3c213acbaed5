// The LibTorch side of the training integration: Tap activation capture, probe passes,
// the geometry tracker and NNK early stopping inside a small C++ training loop.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include <cctype>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>

#include "hooks/early_stopping.h"
#include "hooks/geometry_tracker.h"
#include "hooks/json.h"
#include "hooks/tap.h"
#include <torch_geometry/torch_geometry.h>

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

TEST(GeometryTrackerCpp, CandidateMetricReachesTheGraph) {
  // Points of varied norms: the Euclidean and kernel rankings differ. The tracker's mean
  // LOO error equals that of nnk_graph with the same candidate_metric on the same points.
  torch::manual_seed(4);
  const int64_t n = 120;
  auto y = torch::arange(n, torch::kLong).remainder(3);
  auto x = (torch::randn({n, 5}, torch::kDouble) + y.unsqueeze(1).to(torch::kDouble) * 0.8) *
           (0.2 + 4.8 * torch::rand({n, 1}, torch::kDouble));
  std::map<std::string, double> loo;
  for (const std::string metric : {"kernel", "euclidean"}) {
    hk::TrackerOptions opts;
    opts.k = 8;
    opts.candidate_metric = metric;
    hk::GeometryTracker tracker({"points"}, opts);
    tracker.set_labels(y);
    for (const auto& r : tracker.step(0, {{"points", x}})) {
      if (r.metric == "loo_error") loo[metric] = r.summary.mean;
    }
    auto g = torch_geometry::ops::nnk_graph(x, 8, "cosine", c10::nullopt, "mean", c10::nullopt,
                                            1e-10, metric);
    const double expect =
        std::get<0>(torch_geometry::ops::nnk_loo_error(std::get<0>(g), std::get<1>(g), y, 3)).mean().item<double>();
    EXPECT_NEAR(loo.at(metric), expect, 1e-12) << metric;
    EXPECT_NE(tracker.to_json().find("\"candidate_metric\": \"" + metric + "\""),
              std::string::npos);
  }
  EXPECT_NE(loo.at("kernel"), loo.at("euclidean"));
  hk::TrackerOptions bad;
  bad.candidate_metric = "l2";
  EXPECT_THROW(hk::GeometryTracker({"points"}, bad), c10::Error);
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
  opts.restore_best_weights = true;
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

TEST(JsonCpp, StringsAreValidJsonWhateverTheBytes) {
  using torch_geometry::hooks::json::quoted;
  EXPECT_EQ(quoted("a\"b\\c\n\x01"), "\"a\\\"b\\\\c\\n\\u0001\"");
  // Well-formed multi-byte characters pass through: e acute, euro sign, U+1F600.
  EXPECT_EQ(quoted("\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"),
            "\"\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"");
  // Bytes that are not a well-formed sequence become U+FFFD, one per maximal subpart (as
  // Python decodes them): a stray continuation byte, 0xff, a truncated euro sign (one),
  // an overlong '/', a surrogate, > U+10FFFF (one per byte: no valid prefix).
  EXPECT_EQ(quoted("\x80"), "\"\\ufffd\"");
  EXPECT_EQ(quoted("a\xff" "b"), "\"a\\ufffdb\"");
  EXPECT_EQ(quoted("\xe2\x82"), "\"\\ufffd\"");
  EXPECT_EQ(quoted("\xe2\x82z"), "\"\\ufffdz\"");
  EXPECT_EQ(quoted("\xc0\xaf"), "\"\\ufffd\\ufffd\"");
  EXPECT_EQ(quoted("\xed\xa0\x80"), "\"\\ufffd\\ufffd\\ufffd\"");
  EXPECT_EQ(quoted("\xf4\x90\x80\x80"), "\"\\ufffd\\ufffd\\ufffd\\ufffd\"");
  EXPECT_EQ(quoted("\xe2\x82\xac\xe2"), "\"\xe2\x82\xac\\ufffd\"");
}

namespace {

// The object holds a mutex, so it is neither copied nor moved: handed out by pointer.
std::unique_ptr<hk::NNKEarlyStopping> scripted_stopper(const std::string& mode,
                                                       int64_t patience,
                                                       std::vector<torch::Tensor>* params,
                                                       int64_t channels) {
  hk::EarlyStoppingOptions opts;
  opts.mode = mode;
  opts.patience = patience;
  auto stopper = std::make_unique<hk::NNKEarlyStopping>(opts);
  *params = {torch::zeros({channels, 3}), torch::zeros({channels})};
  stopper->watch(*params);
  return stopper;
}

} // namespace

TEST(NNKEarlyStoppingCpp, ScriptedScoresStopAtTheExactCheck) {
  std::vector<torch::Tensor> params;
  // Layer mode, patience 2: best at epoch 1, no improvement at 2 and 3 -> stop at 3.
  auto layer_mode = scripted_stopper("layer", 2, &params, 1);
  auto& layer = *layer_mode;
  const std::vector<double> stream = {0.5, 0.4, 0.4, 0.45, 0.1};
  int64_t stop = -1;
  for (int64_t e = 0; e < static_cast<int64_t>(stream.size()); ++e) {
    if (layer.update(e, {stream[e]})) {
      stop = e;
      break;
    }
  }
  EXPECT_EQ(stop, 3);
  EXPECT_EQ(layer.best_epoch(), 1);
  // Channel mode, patience 1: channel 1 freezes at epoch 1, channel 0 at epoch 3.
  auto channel_mode = scripted_stopper("channel", 1, &params, 2);
  auto& channel = *channel_mode;
  EXPECT_FALSE(channel.update(0, {0.5, 0.5}));
  EXPECT_FALSE(channel.update(1, {0.4, 0.5}));
  EXPECT_FALSE(channel.update(2, {0.3, 0.0}));
  EXPECT_TRUE(channel.update(3, {0.3, 0.0}));
  EXPECT_EQ(channel.frozen_epochs(), (std::vector<int64_t>{3, 1}));
  EXPECT_EQ(channel.stopped_epoch(), 3);
}

TEST(NNKEarlyStoppingCpp, FreezeInPlaceThenLastImprovementRestore) {
  // Defaults in channel mode: frozen where it stands, the whole model back at the last
  // check at which any channel improved when training stops.
  hk::EarlyStoppingOptions opts;
  opts.patience = 1;
  hk::NNKEarlyStopping stopper(opts);
  EXPECT_FALSE(*stopper.options().restore_best_weights);
  EXPECT_EQ(*stopper.options().restore_on_stop, "last_improvement");
  auto weight = torch::zeros({2, 3});
  auto other = torch::zeros({4});               // another layer of the model
  auto counter = torch::zeros({1}, torch::kLong);  // a buffer
  stopper.watch({weight}, {other, counter});
  // Channel 0 improves at 0 and 1, freezes at 2; channel 1 improves at 0, 1, 2, 3 and
  // freezes at 4: last improvement at epoch 3.
  const std::vector<std::vector<double>> stream = {
      {0.5, 0.5}, {0.4, 0.4}, {0.4, 0.3}, {0.1, 0.2}, {0.1, 0.2}};
  int64_t stop = -1;
  for (int64_t e = 0; e < 5 && stop < 0; ++e) {
    // The "optimiser" moves everything to values naming the epoch; enforce() re-imposes.
    weight.fill_(static_cast<double>(e + 1));
    other.fill_(static_cast<double>(e + 1));
    counter.fill_(e + 1);
    stopper.enforce();
    if (stopper.update(e, stream[e])) stop = e;
  }
  EXPECT_EQ(stop, 4);
  EXPECT_EQ(stopper.frozen_epochs(), (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(stopper.last_improvement_epoch(), 3);
  // Everything back at its values at the check of epoch 3 (channel 0 held its freezing
  // value 3 there, channel 1 had moved to 4, not 5 as at the stop), kept by enforce().
  const auto at_epoch_3 = torch::stack({torch::full({3}, 3.0), torch::full({3}, 4.0)});
  EXPECT_TRUE(torch::equal(weight, at_epoch_3));
  EXPECT_TRUE(torch::equal(other, torch::full({4}, 4.0)));
  EXPECT_EQ(counter.item<int64_t>(), 4);
  weight.fill_(9.0);
  stopper.enforce();
  EXPECT_TRUE(torch::equal(weight, at_epoch_3));
}

TEST(NNKEarlyStoppingCpp, FinishAtTheBudgetRestoresTheLastImprovement) {
  // The budget ends (epoch 3) before every channel froze: finish() returns the watched
  // tensors to the last improving check (epoch 2), as a stop would, once.
  hk::EarlyStoppingOptions opts;
  opts.patience = 2;
  hk::NNKEarlyStopping stopper(opts);
  auto weight = torch::zeros({2, 3});
  auto other = torch::zeros({4});
  stopper.watch({weight}, {other});
  const std::vector<std::vector<double>> stream = {{0.5, 0.5}, {0.4, 0.5}, {0.4, 0.3}, {0.4, 0.3}};
  for (int64_t e = 0; e < 4; ++e) {
    weight.fill_(static_cast<double>(e + 1));
    other.fill_(static_cast<double>(e + 1));
    stopper.enforce();
    EXPECT_FALSE(stopper.update(e, stream[e]));
  }
  EXPECT_EQ(stopper.last_improvement_epoch(), 2);
  EXPECT_EQ(stopper.frozen_epochs(), (std::vector<int64_t>{3, -1}));
  EXPECT_TRUE(stopper.finish(3));
  EXPECT_TRUE(stopper.should_stop());
  EXPECT_EQ(stopper.stopped_epoch(), 3);
  EXPECT_NE(stopper.stop_reason().find("training ended at epoch 3"), std::string::npos);
  EXPECT_TRUE(torch::equal(weight, torch::full({2, 3}, 3.0)));
  EXPECT_TRUE(torch::equal(other, torch::full({4}, 3.0)));
  weight.fill_(7.0);
  EXPECT_FALSE(stopper.finish(4));  // already stopped: nothing restored again
  EXPECT_EQ(stopper.stopped_epoch(), 3);
  EXPECT_TRUE(torch::equal(weight, torch::full({2, 3}, 7.0)));
  // Before any check there is nothing to restore.
  hk::NNKEarlyStopping fresh(opts);
  auto w2 = torch::ones({2, 3});
  fresh.watch({w2});
  EXPECT_FALSE(fresh.finish(0));
  EXPECT_TRUE(fresh.should_stop());
  EXPECT_TRUE(torch::equal(w2, torch::ones({2, 3})));
  EXPECT_THROW(hk::NNKEarlyStopping(opts).finish(-1), c10::Error);
}

TEST(NNKEarlyStoppingCpp, FrozenChannelHoldsItsFreezingCheckValuesUntilTheStop) {
  hk::EarlyStoppingOptions opts;
  opts.patience = 1;
  opts.restore_on_stop = std::string("none");
  hk::NNKEarlyStopping stopper(opts);
  auto weight = torch::zeros({2, 3});
  stopper.watch({weight});
  const std::vector<std::vector<double>> stream = {{0.5, 0.5}, {0.5, 0.4}, {0.5, 0.3}};
  for (int64_t e = 0; e < 3; ++e) {
    weight.fill_(static_cast<double>(e + 1));
    stopper.enforce();
    stopper.update(e, stream[e]);
  }
  // Channel 0 froze at epoch 1 in place (value 2, not its best check's 1); channel 1 moves.
  EXPECT_TRUE(torch::equal(weight[0], torch::full({3}, 2.0)));
  EXPECT_TRUE(torch::equal(weight[1], torch::full({3}, 3.0)));
}

TEST(NNKEarlyStoppingCpp, RefusedStateLeavesTheObjectAsItWas) {
  std::vector<torch::Tensor> params;
  auto owned = scripted_stopper("channel", 3, &params, 2);
  auto& stopper = *owned;
  stopper.update(0, {0.5, 0.5});
  stopper.update(1, {0.6, 0.4});
  const auto good = stopper.state_dict();
  auto bad = good;
  bad["wait"] = torch::zeros({0}, torch::kLong);
  EXPECT_THROW(stopper.load_state_dict(bad), c10::Error);
  bad = good;
  bad["best_scores"] = torch::zeros({3}, torch::kDouble);
  EXPECT_THROW(stopper.load_state_dict(bad), c10::Error);
  bad = good;
  bad["best_params.1"] = torch::zeros({5});
  EXPECT_THROW(stopper.load_state_dict(bad), c10::Error);
  const auto after = stopper.state_dict();
  for (const auto& kv : good) EXPECT_TRUE(torch::equal(kv.second, after.at(kv.first))) << kv.first;
  EXPECT_FALSE(stopper.update(2, {0.6, 0.3}));  // reads every vector: no overflow
  EXPECT_EQ(stopper.wait_counts(), (std::vector<int64_t>{2, 0}));
}

TEST(NNKEarlyStoppingCpp, ThreadsShareOneObject) {
  torch::manual_seed(4);
  hk::EarlyStoppingOptions opts;
  opts.patience = 100000;
  opts.k = 5;
  hk::NNKEarlyStopping stopper(opts);
  auto y = torch::arange(48, torch::kLong) % 3;
  stopper.set_labels(y);
  auto weight = torch::zeros({4, 2});
  auto bias = torch::zeros({4});
  stopper.watch({weight, bias});
  const auto acts = torch::relu(torch::randn({48, 4, 2, 2}));
  const int per_thread = 8;
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < per_thread; ++i) stopper.step(t * 100 + i, acts);
    });
  }
  threads.emplace_back([&] {
    for (int i = 0; i < 300; ++i) {
      stopper.enforce();
      const auto state = stopper.state_dict();
      stopper.to_json();
      stopper.rebind({weight, bias});
      stopper.load_state_dict(state);
    }
  });
  for (auto& th : threads) th.join();
  // The reader may have loaded a snapshot taken before any step (checks = 0): one more
  // step after the join makes at least one check certain whatever the interleaving.
  stopper.step(1000, acts);
  // Identical activations: one improvement, then one wait per check. Loading a snapshot
  // can undo the checks made since it was taken, but every state, loaded or stepped, keeps
  // wait = checks - 1: a torn state would not.
  const int64_t checks = stopper.checks();
  EXPECT_GE(checks, 1);
  EXPECT_LE(checks, 3 * per_thread + 1);
  EXPECT_EQ(stopper.wait_counts(), std::vector<int64_t>(4, checks - 1));
  EXPECT_EQ(stopper.last_scores().size(), 4u);
}

} // namespace

