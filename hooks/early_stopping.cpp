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
  int64_t num_classes = 0;
  at::Tensor y = check_labels(labels, "NNKEarlyStopping", &num_classes);
  std::lock_guard<std::mutex> lock(mutex_);
  labels_ = y;
  num_classes_ = num_classes;
}

void NNKEarlyStopping::watch(const std::vector<at::Tensor>& params) {
  std::vector<at::Tensor> best;
  {
    at::NoGradGuard no_grad;
    for (const auto& p : params) best.push_back(p.detach().clone());
  }
  std::lock_guard<std::mutex> lock(mutex_);
  params_ = params;
  best_params_ = std::move(best);
}

void NNKEarlyStopping::rebind(const std::vector<at::Tensor>& params) {
  const char* who = "NNKEarlyStopping.rebind";
  std::lock_guard<std::mutex> lock(mutex_);
  TORCH_CHECK(params.size() == params_.size(), who, ": ", params.size(),
              " parameters given, ", params_.size(),
              " are watched; the model's parameters changed since watch()");
  for (size_t p = 0; p < params.size(); ++p) {
    TORCH_CHECK(params[p].sizes() == params_[p].sizes(), who, ": parameter ", p, " has shape ",
                params[p].sizes(), ", it had ", params_[p].sizes(), " when watched");
  }
  for (size_t p = 0; p < params.size(); ++p) {
    if (params[p].is_same(params_[p])) continue;
    params_[p] = params[p];
    const at::Tensor& b = best_params_[p];
    if (b.dtype() != params[p].dtype() || b.device() != params[p].device()) {
      best_params_[p] = b.to(params[p].device(), params[p].scalar_type());
    }
  }
}

std::vector<double> NNKEarlyStopping::score(const at::Tensor& activations) const {
  at::Tensor labels;
  int64_t num_classes = 0;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    labels = labels_;
    num_classes = num_classes_;
  }
  const char* who = "NNKEarlyStopping.step";
  TORCH_CHECK(labels.defined(), who, ": call set_labels() first (the probe set's labels)");
  TORCH_CHECK(activations.dim() >= 2 && activations.size(0) == labels.size(0), who,
              ": activations should be [N, ...] with N = ", labels.size(0),
              " (one row per probe label), got shape ", activations.sizes());
  const double nan = std::numeric_limits<double>::quiet_NaN();
  if (options_.mode == "layer") {
    // Diverged training: a NaN score, which update() turns into a stop.
    if (!all_finite(activations)) return {nan};
    const at::Tensor x = reduce_activations(activations, options_.reduce);
    return {layer_loo_error(x, labels, num_classes, options_.k, options_.kernel)};
  }
  TORCH_CHECK(activations.dim() >= 3, who,
              ": channel mode needs conv activations [N, C, H, W], got shape ",
              activations.sizes(), "; use mode=\"layer\" for other layers");
  if (!all_finite(activations)) return std::vector<double>(activations.size(1), nan);
  at::Tensor a = activations.detach().to(at::kCPU);
  if (a.scalar_type() != at::kDouble) a = a.to(at::kFloat);
  at::Tensor nbr, w, err;
  std::tie(nbr, w, err) = ops::channel_nnk_graph(a, options_.k, options_.kernel, kDefaultThreshold);
  std::vector<double> out(a.size(1));
  for (int64_t c = 0; c < a.size(1); ++c) {
    out[c] = std::get<0>(ops::nnk_loo_error(nbr[c], w[c], labels, num_classes))
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
  if (should_stop()) return true;
  const std::vector<double> scores = score(activations);
  std::lock_guard<std::mutex> lock(mutex_);
  return update_locked(epoch, scores);
}

bool NNKEarlyStopping::update(int64_t epoch, const std::vector<double>& scores) {
  std::lock_guard<std::mutex> lock(mutex_);
  return update_locked(epoch, scores);
}

bool NNKEarlyStopping::update_locked(int64_t epoch, const std::vector<double>& scores) {
  const char* who = "NNKEarlyStopping.update";
  if (should_stop_locked()) return true;
  const int64_t c = static_cast<int64_t>(scores.size());
  if (options_.mode == "channel") {
    TORCH_CHECK(c >= 1, who, ": no scores (channel mode expects one per channel)");
    for (const auto& p : params_) {
      TORCH_CHECK(p.dim() >= 1 && p.size(0) == c, who, ": the layer has ", c,
                  " channels but a watched parameter has shape ", p.sizes(),
                  " (expected the conv producing them: weight [", c, ", ...], bias [", c, "])");
    }
    TORCH_CHECK(best_.empty() || static_cast<int64_t>(best_.size()) == c, who,
                ": the layer had ", best_.size(), " channels at earlier checks, now ", c);
  } else {
    TORCH_CHECK(c == 1, who, ": layer mode expects one score, got ", c);
  }
  if (best_.empty()) {
    best_.assign(c, kInf);
    wait_.assign(c, 0);
    frozen_epoch_.assign(c, -1);
  }
  ++checks_;
  last_scores_ = scores;
  for (double s : last_scores_) {
    if (!std::isfinite(s)) {
      stopped_epoch_ = epoch;
      stop_reason_ = "non-finite NNK leave-one-out error at epoch " + std::to_string(epoch) +
                     " (non-finite activations: training diverged); nothing was frozen or "
                     "restored";
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
    return should_stop_locked();
  }
  bool all_frozen = true;
  for (size_t ch = 0; ch < best_.size(); ++ch) {
    if (frozen_epoch_[ch] >= 0) continue;
    if (last_scores_[ch] < best_[ch] - options_.min_delta) {
      best_[ch] = last_scores_[ch];
      wait_[ch] = 0;
      snapshot_channel(static_cast<int64_t>(ch));
    } else if (++wait_[ch] >= options_.patience) {
      frozen_epoch_[ch] = epoch;
      if (options_.restore_best_weights) {
        restore_channel(static_cast<int64_t>(ch));
      } else {
        snapshot_channel(static_cast<int64_t>(ch));  // frozen where it stands
      }
    }
    all_frozen = all_frozen && frozen_epoch_[ch] >= 0;
  }
  if (all_frozen) {
    stopped_epoch_ = epoch;
    stop_reason_ = "every channel is frozen";
  }
  return should_stop_locked();
}

void NNKEarlyStopping::enforce() {
  if (options_.mode != "channel") return;
  std::lock_guard<std::mutex> lock(mutex_);
  for (size_t c = 0; c < frozen_epoch_.size(); ++c) {
    if (frozen_epoch_[c] >= 0) restore_channel(static_cast<int64_t>(c));
  }
}

void NNKEarlyStopping::mask_gradients() {
  if (options_.mode != "channel") return;
  std::lock_guard<std::mutex> lock(mutex_);
  at::NoGradGuard no_grad;
  for (const auto& p : params_) {
    if (!p.grad().defined()) continue;
    for (size_t c = 0; c < frozen_epoch_.size(); ++c) {
      if (frozen_epoch_[c] >= 0) p.grad()[static_cast<int64_t>(c)].zero_();
    }
  }
}

std::vector<double> NNKEarlyStopping::last_scores() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return last_scores_;
}

std::vector<double> NNKEarlyStopping::best_scores() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return best_;
}

std::vector<int64_t> NNKEarlyStopping::wait_counts() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return wait_;
}

std::vector<int64_t> NNKEarlyStopping::frozen_channels() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<int64_t> out;
  if (options_.mode != "channel") return out;
  for (size_t c = 0; c < frozen_epoch_.size(); ++c) {
    if (frozen_epoch_[c] >= 0) out.push_back(static_cast<int64_t>(c));
  }
  return out;
}

std::vector<int64_t> NNKEarlyStopping::frozen_epochs() const {
  std::lock_guard<std::mutex> lock(mutex_);
  if (options_.mode != "channel") return {};
  return frozen_epoch_;
}

double NNKEarlyStopping::best_score() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return best_score_locked();
}

double NNKEarlyStopping::best_score_locked() const {
  if (best_.empty()) return kInf;
  return std::accumulate(best_.begin(), best_.end(), 0.0) / static_cast<double>(best_.size());
}

int64_t NNKEarlyStopping::best_epoch() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return best_epoch_;
}

int64_t NNKEarlyStopping::stopped_epoch() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stopped_epoch_;
}

bool NNKEarlyStopping::should_stop() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return should_stop_locked();
}

int64_t NNKEarlyStopping::checks() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return checks_;
}

std::string NNKEarlyStopping::stop_reason() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stop_reason_;
}

std::string NNKEarlyStopping::to_json() const {
  using json::number;
  using json::quoted;
  std::lock_guard<std::mutex> lock(mutex_);
  const auto& o = options_;
  std::ostringstream os;
  os << "{\n  \"options\": {\"mode\": " << quoted(o.mode) << ", \"patience\": " << o.patience
     << ", \"min_delta\": " << number(o.min_delta) << ", \"k\": " << o.k
     << ", \"kernel\": " << quoted(o.kernel) << ", \"reduce\": " << quoted(o.reduce)
     << ", \"restore_best_weights\": " << (o.restore_best_weights ? "true" : "false") << "},\n";
  os << "  \"checks\": " << checks_ << ",\n";
  os << "  \"last_scores\": " << json::array(last_scores_) << ",\n";
  os << "  \"best_scores\": " << json::array(best_) << ",\n";
  os << "  \"best_score\": " << number(best_score_locked()) << ",\n";
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
  os << "  \"should_stop\": " << (should_stop_locked() ? "true" : "false") << ",\n";
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
  std::lock_guard<std::mutex> lock(mutex_);
  std::map<std::string, at::Tensor> s;
  s["best_scores"] = dbl(best_);
  s["last_scores"] = dbl(last_scores_);
  s["wait"] = lng(wait_);
  s["frozen_epoch"] = lng(frozen_epoch_);
  s["counters"] = lng({best_epoch_, stopped_epoch_, checks_});
  std::vector<int64_t> reason;
  for (char ch : stop_reason_) reason.push_back(static_cast<unsigned char>(ch));
  s["stop_reason"] = lng(reason);
  for (size_t p = 0; p < best_params_.size(); ++p) {
    s["best_params." + std::to_string(p)] = best_params_[p].detach().clone();
  }
  return s;
}

void NNKEarlyStopping::load_state_dict(const std::map<std::string, at::Tensor>& state) {
  const char* who = "NNKEarlyStopping.load_state_dict";
  // Everything is read into locals and checked first; the members change only at the end,
  // so a refused state cannot leave the object half-loaded.
  auto get = [&](const std::string& key, bool integral) -> at::Tensor {
    auto it = state.find(key);
    TORCH_CHECK(it != state.end(), who, ": missing key \"", key, "\"");
    const at::Tensor& t = it->second;
    TORCH_CHECK(t.defined() && t.dim() == 1, who, ": \"", key,
                "\" should be a 1-D tensor, got ", t.defined() ? t.sizes() : at::IntArrayRef{});
    if (integral) {
      TORCH_CHECK(!at::isFloatingType(t.scalar_type()) && !t.is_complex() &&
                      t.scalar_type() != at::kBool,
                  who, ": \"", key, "\" should hold integers, got ", t.scalar_type());
    } else {
      TORCH_CHECK(at::isFloatingType(t.scalar_type()), who, ": \"", key,
                  "\" should hold floating-point scores, got ", t.scalar_type());
    }
    return t.detach().to(at::kCPU, integral ? at::kLong : at::kDouble).contiguous();
  };
  auto dbl = [&](const std::string& key) {
    at::Tensor c = get(key, false);
    return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
  };
  auto lng = [&](const std::string& key) {
    at::Tensor c = get(key, true);
    return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
  };
  std::vector<double> best = dbl("best_scores");
  std::vector<double> last = dbl("last_scores");
  std::vector<int64_t> wait = lng("wait");
  std::vector<int64_t> frozen = lng("frozen_epoch");
  const std::vector<int64_t> counters = lng("counters");
  const std::vector<int64_t> reason = lng("stop_reason");
  TORCH_CHECK(counters.size() == 3, who,
              ": \"counters\" should hold 3 values (best_epoch, stopped_epoch, checks), got ",
              counters.size());
  // Counts are incremented at the next check: bounded far beyond any training so that the
  // increment cannot overflow.
  constexpr int64_t kMaxCount = int64_t(1) << 62;
  TORCH_CHECK(counters[0] >= -1 && counters[1] >= -1 && counters[2] >= 0 &&
                  counters[2] < kMaxCount, who,
              ": \"counters\" should be best_epoch >= -1, stopped_epoch >= -1, "
              "0 <= checks < 2^62, got ", at::IntArrayRef(counters));
  const size_t c = best.size();
  TORCH_CHECK(wait.size() == c && frozen.size() == c, who, ": \"best_scores\", \"wait\" and "
              "\"frozen_epoch\" should have one entry per score, got ", c, ", ", wait.size(),
              " and ", frozen.size());
  TORCH_CHECK(last.size() == c, who, ": \"last_scores\" has ", last.size(), " entries for ", c,
              " best scores");
  TORCH_CHECK(c == 0 || counters[2] > 0, who, ": scores but no checks in \"counters\"");
  for (size_t i = 0; i < c; ++i) {
    TORCH_CHECK(wait[i] >= 0 && wait[i] < kMaxCount, who, ": \"wait\" should be in [0, 2^62), got ",
                wait[i]);
    TORCH_CHECK(frozen[i] >= -1, who, ": \"frozen_epoch\" should be >= -1, got ", frozen[i]);
    TORCH_CHECK(!std::isnan(best[i]), who, ": \"best_scores\" holds NaN");
  }
  for (int64_t ch : reason) {
    // -128..-1: bytes >= 0x80 as signed chars, as earlier versions wrote them.
    TORCH_CHECK(ch >= -128 && ch <= 255, who, ": \"stop_reason\" should hold bytes, got ", ch);
  }
  std::string reason_text;
  for (int64_t ch : reason) reason_text.push_back(static_cast<char>(ch));

  std::lock_guard<std::mutex> lock(mutex_);
  if (options_.mode == "layer") {
    TORCH_CHECK(c <= 1, who, ": a layer-mode state has at most one score, got ", c,
                " (is it a channel-mode state?)");
  } else {
    for (const auto& p : params_) {
      TORCH_CHECK(c == 0 || (p.dim() >= 1 && static_cast<size_t>(p.size(0)) == c), who,
                  ": the state has ", c, " channels, the watched parameter has shape ",
                  p.sizes());
    }
  }
  size_t n_params = 0;
  while (state.count("best_params." + std::to_string(n_params))) ++n_params;
  TORCH_CHECK(n_params == params_.size(), who, ": the state holds ", n_params,
              " parameter snapshots but ", params_.size(), " parameters are watched; call watch() "
              "with the same parameters before loading");
  std::vector<at::Tensor> snapshots;
  for (size_t p = 0; p < n_params; ++p) {
    const at::Tensor& t = state.at("best_params." + std::to_string(p));
    TORCH_CHECK(t.defined() && t.sizes() == params_[p].sizes(), who, ": snapshot ", p,
                " has shape ", t.defined() ? t.sizes() : at::IntArrayRef{},
                ", the watched parameter ", params_[p].sizes());
    TORCH_CHECK(at::isFloatingType(t.scalar_type()), who, ": snapshot ", p,
                " should be floating point, got ", t.scalar_type());
    snapshots.push_back(t.detach().to(params_[p].device(), params_[p].scalar_type()).clone());
  }
  best_ = std::move(best);
  last_scores_ = std::move(last);
  wait_ = std::move(wait);
  frozen_epoch_ = std::move(frozen);
  best_epoch_ = counters[0];
  stopped_epoch_ = counters[1];
  checks_ = counters[2];
  stop_reason_ = std::move(reason_text);
  best_params_ = std::move(snapshots);
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
  at::Tensor y_device = y;  // y on the device of the last model's activations
  std::vector<std::pair<std::string, double>> out;
  for (size_t m = 0; m < names.size(); ++m) {
    TORCH_CHECK(activations[m].size(0) == y.size(0), "rank_models: model \"", names[m], "\" has ",
                activations[m].size(0), " probe activations for ", y.size(0), " labels");
    const at::Tensor x = reduce_activations(activations[m], reduce);
    TORCH_CHECK(all_finite(x), "rank_models: model \"", names[m],
                "\" has non-finite activations");
    // The graph is built where the activations are; the labels go there, not the reverse.
    if (y_device.device() != x.device()) y_device = y.to(x.device());
    out.emplace_back(names[m], layer_loo_error(x, y_device, num_classes, k, kernel));
  }
  std::stable_sort(out.begin(), out.end(),
                   [](const auto& a, const auto& b) { return a.second < b.second; });
  return out;
}

} // namespace hooks
} // namespace torch_geometry
