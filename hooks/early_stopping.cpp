#include "early_stopping.h"

#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <sstream>

#include "../csrc/channel_nnk.h"
#include "../csrc/common.h"
#include "../csrc/label_metrics.h"
#include "../csrc/nnk_graph.h"
#include "geometry_tracker.h"
#include "json.h"

namespace torch_geometry {
namespace hooks {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

at::Tensor check_labels(const at::Tensor& labels, const char* who, int64_t* num_classes) {
  const Labels lab = torch_geometry::check_labels(labels, -1, who);
  *num_classes = lab.num_classes;
  return lab.y;
}

double layer_loo_error(const at::Tensor& x, const at::Tensor& labels, int64_t num_classes,
                       int64_t k, const std::string& kernel) {
  at::Tensor nbr, w, err;
  std::tie(nbr, w, err) = ops::nnk_graph(x, k, kernel, c10::nullopt, kDefaultSigmaMode, c10::nullopt,
                                          kDefaultThreshold);
  return std::get<0>(ops::nnk_loo_error(nbr, w, labels, num_classes)).to(at::kDouble).mean().item<double>();
}

} // namespace

NNKEarlyStopping::NNKEarlyStopping(EarlyStoppingOptions options) : options_(std::move(options)) {
  const char* who = "NNKEarlyStopping";
  TORCH_CHECK(options_.mode == "channel" || options_.mode == "layer", who,
              ": mode should be \"channel\" or \"layer\", got \"", options_.mode, "\"");
  TORCH_CHECK(options_.patience >= 1, who, ": patience should be >= 1, got ", options_.patience);
  TORCH_CHECK(std::isfinite(options_.min_delta) && options_.min_delta >= 0, who,
              ": min_delta should be a finite number >= 0, got ", options_.min_delta);
  TORCH_CHECK(options_.k >= 1, who, ": k should be >= 1, got ", options_.k);
  parse_kernel(options_.kernel, who);
  parse_reduce(options_.reduce, who);
}

void NNKEarlyStopping::set_labels(const at::Tensor& labels) {
  labels_ = check_labels(labels, "NNKEarlyStopping", &num_classes_);
}

void NNKEarlyStopping::watch(const std::vector<at::Tensor>& params) {
  params_ = params;
  best_params_.clear();
  for (const auto& p : params_) {
    at::NoGradGuard no_grad;
    best_params_.push_back(p.detach().clone());
  }
}

std::vector<double> NNKEarlyStopping::score(const at::Tensor& activations) const {
  if (options_.mode == "layer") {
    const at::Tensor x = reduce_activations(activations, options_.reduce);
    return {layer_loo_error(x, labels_, num_classes_, options_.k, options_.kernel)};
  }
  at::Tensor a = activations.detach().to(at::kCPU);
  if (a.scalar_type() != at::kDouble) a = a.to(at::kFloat);
  at::Tensor nbr, w, err;
  std::tie(nbr, w, err) = ops::channel_nnk_graph(a, options_.k, options_.kernel, kDefaultThreshold);
  std::vector<double> out(a.size(1));
  for (int64_t c = 0; c < a.size(1); ++c) {
    out[c] = std::get<0>(ops::nnk_loo_error(nbr[c], w[c], labels_, num_classes_))
                 .to(at::kDouble).mean().item<double>();
  }
  return out;
}

void NNKEarlyStopping::snapshot_channel(int64_t c) {
  at::NoGradGuard no_grad;
  for (size_t p = 0; p < params_.size(); ++p) best_params_[p][c].copy_(params_[p][c]);
}

void NNKEarlyStopping::snapshot_all() {
  at::NoGradGuard no_grad;
  for (size_t p = 0; p < params_.size(); ++p) best_params_[p].copy_(params_[p]);
}

void NNKEarlyStopping::restore_channel(int64_t c) {
  at::NoGradGuard no_grad;
  for (size_t p = 0; p < params_.size(); ++p) params_[p][c].copy_(best_params_[p][c]);
}

bool NNKEarlyStopping::step(int64_t epoch, const at::Tensor& activations) {
  const char* who = "NNKEarlyStopping.step";
  if (should_stop()) return true;
  TORCH_CHECK(labels_.defined(), who, ": call set_labels() first (the probe set's labels)");
  TORCH_CHECK(activations.dim() >= 2 && activations.size(0) == labels_.size(0), who,
              ": activations should be [N, ...] with N = ", labels_.size(0),
              " (one row per probe label), got shape ", activations.sizes());
  if (options_.mode == "channel") {
    TORCH_CHECK(activations.dim() >= 3, who,
                ": channel mode needs conv activations [N, C, H, W], got shape ",
                activations.sizes(), "; use mode=\"layer\" for other layers");
    const int64_t c = activations.size(1);
    for (const auto& p : params_) {
      TORCH_CHECK(p.dim() >= 1 && p.size(0) == c, who, ": the layer has ", c,
                  " channels but a watched parameter has shape ", p.sizes(),
                  " (expected the conv producing them: weight [", c, ", ...], bias [", c, "])");
    }
    if (best_.empty()) {
      best_.assign(c, kInf);
      wait_.assign(c, 0);
      frozen_epoch_.assign(c, -1);
    }
    TORCH_CHECK(static_cast<int64_t>(best_.size()) == c, who, ": the layer had ", best_.size(),
                " channels at earlier checks, now ", c);
  } else if (best_.empty()) {
    best_.assign(1, kInf);
    wait_.assign(1, 0);
    frozen_epoch_.assign(1, -1);
  }
  ++checks_;
  if (!all_finite(activations)) {
    stopped_epoch_ = epoch;
    stop_reason_ = "non-finite activations at epoch " + std::to_string(epoch) +
                   ": training diverged; nothing was frozen or restored";
    return true;
  }
  last_scores_ = score(activations);
  for (double s : last_scores_) {
    if (!std::isfinite(s)) {
      stopped_epoch_ = epoch;
      stop_reason_ = "non-finite NNK leave-one-out error at epoch " + std::to_string(epoch) +
                     "; nothing was frozen or restored";
      return true;
    }
  }
  if (options_.mode == "layer") {
    if (last_scores_[0] < best_[0] - options_.min_delta) {
      best_[0] = last_scores_[0];
      wait_[0] = 0;
      best_epoch_ = epoch;
      snapshot_all();
    } else if (++wait_[0] >= options_.patience) {
      stopped_epoch_ = epoch;
      stop_reason_ = "the layer's NNK leave-one-out error has not improved for " +
                     std::to_string(options_.patience) + " checks";
      if (options_.restore_best_weights) {
        at::NoGradGuard no_grad;
        for (size_t p = 0; p < params_.size(); ++p) params_[p].copy_(best_params_[p]);
      }
    }
    return should_stop();
  }
  bool all_frozen = true;
  for (size_t c = 0; c < best_.size(); ++c) {
    if (frozen_epoch_[c] >= 0) continue;
    if (last_scores_[c] < best_[c] - options_.min_delta) {
      best_[c] = last_scores_[c];
      wait_[c] = 0;
      snapshot_channel(static_cast<int64_t>(c));
    } else if (++wait_[c] >= options_.patience) {
      frozen_epoch_[c] = epoch;
      if (options_.restore_best_weights) {
        restore_channel(static_cast<int64_t>(c));
      } else {
        snapshot_channel(static_cast<int64_t>(c));  // frozen where it stands
      }
    }
    all_frozen = all_frozen && frozen_epoch_[c] >= 0;
  }
  if (all_frozen) {
    stopped_epoch_ = epoch;
    stop_reason_ = "every channel is frozen";
  }
  return should_stop();
}

void NNKEarlyStopping::enforce() {
  if (options_.mode != "channel") return;
  for (size_t c = 0; c < frozen_epoch_.size(); ++c) {
    if (frozen_epoch_[c] >= 0) restore_channel(static_cast<int64_t>(c));
  }
}

void NNKEarlyStopping::mask_gradients() {
  if (options_.mode != "channel") return;
  at::NoGradGuard no_grad;
  for (const auto& p : params_) {
    if (!p.grad().defined()) continue;
    for (size_t c = 0; c < frozen_epoch_.size(); ++c) {
      if (frozen_epoch_[c] >= 0) p.grad()[static_cast<int64_t>(c)].zero_();
    }
  }
}

std::vector<int64_t> NNKEarlyStopping::frozen_channels() const {
  std::vector<int64_t> out;
  if (options_.mode != "channel") return out;
  for (size_t c = 0; c < frozen_epoch_.size(); ++c) {
    if (frozen_epoch_[c] >= 0) out.push_back(static_cast<int64_t>(c));
  }
  return out;
}

double NNKEarlyStopping::best_score() const {
  if (best_.empty()) return kInf;
  return std::accumulate(best_.begin(), best_.end(), 0.0) / static_cast<double>(best_.size());
}

std::string NNKEarlyStopping::to_json() const {
  using json::number;
  using json::quoted;
  const auto& o = options_;
  std::ostringstream os;
  os << "{\n  \"options\": {\"mode\": " << quoted(o.mode) << ", \"patience\": " << o.patience
     << ", \"min_delta\": " << number(o.min_delta) << ", \"k\": " << o.k
     << ", \"kernel\": " << quoted(o.kernel) << ", \"reduce\": " << quoted(o.reduce)
     << ", \"restore_best_weights\": " << (o.restore_best_weights ? "true" : "false") << "},\n";
  os << "  \"checks\": " << checks_ << ",\n";
  os << "  \"last_scores\": " << json::array(last_scores_) << ",\n";
  os << "  \"best_scores\": " << json::array(best_) << ",\n";
  os << "  \"best_score\": " << number(best_score()) << ",\n";
  os << "  \"best_epoch\": " << (best_epoch_ >= 0 ? std::to_string(best_epoch_) : "null") << ",\n";
  os << "  \"wait_counts\": " << json::array(wait_) << ",\n";
  os << "  \"frozen\": [";
  bool first = true;
  if (o.mode == "channel") {
    for (size_t c = 0; c < frozen_epoch_.size(); ++c) {
      if (frozen_epoch_[c] < 0) continue;
      os << (first ? "" : ", ") << "{\"channel\": " << c << ", \"epoch\": " << frozen_epoch_[c] << "}";
      first = false;
    }
  }
  os << "],\n";
  os << "  \"should_stop\": " << (should_stop() ? "true" : "false") << ",\n";
  os << "  \"stopped_epoch\": " << (stopped_epoch_ >= 0 ? std::to_string(stopped_epoch_) : "null")
     << ",\n";
  os << "  \"stop_reason\": " << quoted(stop_reason_) << "\n}\n";
  return os.str();
}

std::map<std::string, at::Tensor> NNKEarlyStopping::state_dict() const {
  auto dbl = [](const std::vector<double>& v) {
    return at::tensor(v.empty() ? std::vector<double>{} : v, at::kDouble).clone();
  };
  auto lng = [](const std::vector<int64_t>& v) {
    return at::tensor(v.empty() ? std::vector<int64_t>{} : v, at::kLong).clone();
  };
  std::map<std::string, at::Tensor> s;
  s["best_scores"] = dbl(best_);
  s["last_scores"] = dbl(last_scores_);
  s["wait"] = lng(wait_);
  s["frozen_epoch"] = lng(frozen_epoch_);
  s["counters"] = lng({best_epoch_, stopped_epoch_, checks_});
  std::vector<int64_t> reason(stop_reason_.begin(), stop_reason_.end());
  s["stop_reason"] = lng(reason);
  for (size_t p = 0; p < best_params_.size(); ++p) {
    s["best_params." + std::to_string(p)] = best_params_[p].detach().clone();
  }
  return s;
}

void NNKEarlyStopping::load_state_dict(const std::map<std::string, at::Tensor>& state) {
  const char* who = "NNKEarlyStopping.load_state_dict";
  for (const char* key : {"best_scores", "last_scores", "wait", "frozen_epoch", "counters", "stop_reason"}) {
    TORCH_CHECK(state.count(key), who, ": missing key \"", key, "\"");
  }
  auto dbl = [](const at::Tensor& t) {
    at::Tensor c = t.to(at::kDouble).contiguous();
    return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
  };
  auto lng = [](const at::Tensor& t) {
    at::Tensor c = t.to(at::kLong).contiguous();
    return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
  };
  const auto counters = lng(state.at("counters"));
  TORCH_CHECK(counters.size() == 3, who, ": \"counters\" should hold 3 values, got ", counters.size());
  size_t n_params = 0;
  while (state.count("best_params." + std::to_string(n_params))) ++n_params;
  TORCH_CHECK(n_params == params_.size(), who, ": the state holds ", n_params,
              " parameter snapshots but ", params_.size(), " parameters are watched; call watch() "
              "with the same parameters before loading");
  for (size_t p = 0; p < n_params; ++p) {
    const at::Tensor& t = state.at("best_params." + std::to_string(p));
    TORCH_CHECK(t.sizes() == params_[p].sizes(), who, ": snapshot ", p, " has shape ", t.sizes(),
                ", the watched parameter ", params_[p].sizes());
  }
  best_ = dbl(state.at("best_scores"));
  last_scores_ = dbl(state.at("last_scores"));
  wait_ = lng(state.at("wait"));
  frozen_epoch_ = lng(state.at("frozen_epoch"));
  TORCH_CHECK(wait_.size() == best_.size() && frozen_epoch_.size() == best_.size(), who,
              ": inconsistent state sizes");
  best_epoch_ = counters[0];
  stopped_epoch_ = counters[1];
  checks_ = counters[2];
  const auto reason = lng(state.at("stop_reason"));
  stop_reason_.assign(reason.begin(), reason.end());
  at::NoGradGuard no_grad;
  for (size_t p = 0; p < n_params; ++p) {
    best_params_[p].copy_(state.at("best_params." + std::to_string(p)));
  }
}

std::vector<std::pair<std::string, double>> rank_models(
    const std::vector<std::string>& names,
    const std::vector<at::Tensor>& activations,
    const at::Tensor& labels,
    int64_t k,
    const std::string& kernel,
    const std::string& reduce) {
  TORCH_CHECK(names.size() == activations.size(), "rank_models: ", names.size(), " names for ",
              activations.size(), " activation tensors");
  TORCH_CHECK(!names.empty(), "rank_models: no models to rank");
  int64_t num_classes = 0;
  const at::Tensor y = check_labels(labels, "rank_models", &num_classes);
  std::vector<std::pair<std::string, double>> out;
  for (size_t m = 0; m < names.size(); ++m) {
    TORCH_CHECK(activations[m].size(0) == y.size(0), "rank_models: model \"", names[m], "\" has ",
                activations[m].size(0), " probe activations for ", y.size(0), " labels");
    const at::Tensor x = reduce_activations(activations[m], reduce);
    TORCH_CHECK(all_finite(x), "rank_models: model \"", names[m],
                "\" has non-finite activations");
    out.emplace_back(names[m], layer_loo_error(x, y, num_classes, k, kernel));
  }
  std::stable_sort(out.begin(), out.end(),
                   [](const auto& a, const auto& b) { return a.second < b.second; });
  return out;
}

} // namespace hooks
} // namespace torch_geometry
