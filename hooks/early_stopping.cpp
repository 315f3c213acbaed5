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

// Float32 unless the activations are float64: half-precision activations (AMP training)
// would build graphs from rounded kernels.
at::Tensor scoring_dtype(const at::Tensor& a) {
  return a.scalar_type() == at::kDouble ? a : a.to(at::kFloat);
}

double layer_loo_error(const at::Tensor& x, const at::Tensor& labels, int64_t num_classes,
                       int64_t k, const std::string& kernel,
                       const std::string& candidate_metric) {
  at::Tensor nbr, w, err;
  std::tie(nbr, w, err) = ops::nnk_graph(x, k, kernel, c10::nullopt, kDefaultSigmaMode,
                                         c10::nullopt, kDefaultThreshold, candidate_metric);
  const at::Tensor y = labels.to(x.device());
  return std::get<0>(ops::nnk_loo_error(nbr, w, y, num_classes)).to(at::kDouble).mean()
      .item<double>();
}

std::vector<double> channel_loo_errors(const at::Tensor& a, const at::Tensor& labels,
                                       int64_t num_classes, int64_t k,
                                       const std::string& kernel,
                                       const std::string& candidate_metric) {
  at::Tensor nbr, w, err;
  std::tie(nbr, w, err) = ops::channel_nnk_graph(a, k, kernel, kDefaultThreshold, candidate_metric);
  const at::Tensor y = labels.to(a.device());
  std::vector<at::Tensor> per_channel;
  for (int64_t c = 0; c < a.size(1); ++c) {
    per_channel.push_back(
        std::get<0>(ops::nnk_loo_error(nbr[c], w[c], y, num_classes)).to(at::kDouble).mean());
  }
  // One transfer of C numbers, not one per channel.
  const at::Tensor means = at::stack(per_channel).to(at::kCPU).contiguous();
  return std::vector<double>(means.data_ptr<double>(), means.data_ptr<double>() + means.numel());
}

void check_same_tensors(const std::vector<at::Tensor>& now, const std::vector<at::Tensor>& was,
                        const char* who, const char* what) {
  TORCH_CHECK(now.size() == was.size(), who, ": ", now.size(), " ", what, " given, ",
              was.size(), " are watched; the model's tensors changed since watch()");
  for (size_t p = 0; p < now.size(); ++p) {
    TORCH_CHECK(now[p].sizes() == was[p].sizes(), who, ": ", what, " ", p, " has shape ",
                now[p].sizes(), ", it had ", was[p].sizes(), " when watched");
  }
}

// Follows moved tensors: snapshots take the dtype and device of the tensor they restore.
void follow(std::vector<at::Tensor>& snapshots, const std::vector<at::Tensor>& tensors) {
  for (size_t p = 0; p < snapshots.size(); ++p) {
    const at::Tensor& s = snapshots[p];
    if (s.dtype() != tensors[p].dtype() || s.device() != tensors[p].device()) {
      snapshots[p] = s.to(tensors[p].device(), tensors[p].scalar_type());
    }
  }
}

std::vector<at::Tensor> clones(const std::vector<at::Tensor>& tensors) {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> out;
  for (const auto& t : tensors) out.push_back(t.detach().clone());
  return out;
}

void copy_all(const std::vector<at::Tensor>& dst, const std::vector<at::Tensor>& src) {
  at::NoGradGuard no_grad;
  for (size_t p = 0; p < dst.size(); ++p) dst[p].copy_(src[p]);
}

} // namespace

NNKEarlyStopping::NNKEarlyStopping(EarlyStoppingOptions options) : options_(std::move(options)) {
  const char* who = "NNKEarlyStopping";
  auto& o = options_;
  TORCH_CHECK(o.mode == "channel" || o.mode == "layer", who,
              ": mode should be \"channel\" or \"layer\", got \"", o.mode, "\"");
  TORCH_CHECK(o.patience >= 1, who, ": patience should be >= 1, got ", o.patience);
  TORCH_CHECK(std::isfinite(o.min_delta) && o.min_delta >= 0, who,
              ": min_delta should be a finite number >= 0, got ", o.min_delta);
  TORCH_CHECK(!o.auto_min_delta || o.min_delta == 0, who,
              ": min_delta=\"auto\" sets the threshold from the probe's standard error; it "
              "cannot be combined with a fixed min_delta (got ", o.min_delta, ")");
  TORCH_CHECK(o.smoothing >= 1, who, ": smoothing should be >= 1 (1 = off), got ",
              o.smoothing);
  TORCH_CHECK(o.k >= 1, who, ": k should be >= 1, got ", o.k);
  parse_kernel(o.kernel, who);
  parse_reduce(o.reduce, who);
  TORCH_CHECK(o.candidate_metric == "kernel" || o.candidate_metric == "euclidean", who,
              ": candidate_metric should be \"kernel\" or \"euclidean\", got \"",
              o.candidate_metric, "\"");
  if (o.restore_on_stop.has_value()) {
    const std::string& r = *o.restore_on_stop;
    TORCH_CHECK(r == "none" || r == "best" || r == "last_improvement", who,
                ": restore_on_stop should be \"none\", \"best\" or \"last_improvement\", got \"",
                r, "\"");
  }
  if (o.mode == "channel") {
    TORCH_CHECK(o.restore_on_stop.value_or("") != "best", who,
                ": restore_on_stop=\"best\" is for layer mode; in channel mode each channel "
                "keeps the weights it froze with (its best check's with "
                "restore_best_weights=True), and restore_on_stop=\"last_improvement\" returns "
                "the model to the last check at which any channel improved");
    if (!o.restore_best_weights.has_value()) o.restore_best_weights = false;
    if (!o.restore_on_stop.has_value()) o.restore_on_stop = std::string("last_improvement");
  } else {
    // Layer mode: restore_best_weights is the Lightning-style name of restoring on stop.
    if (o.restore_on_stop.has_value() && o.restore_best_weights.has_value()) {
      TORCH_CHECK(*o.restore_best_weights == (*o.restore_on_stop != "none"), who,
                  ": in layer mode restore_best_weights=",
                  *o.restore_best_weights ? "True" : "False", " contradicts restore_on_stop=\"",
                  *o.restore_on_stop, "\" (give one of them)");
    } else if (o.restore_on_stop.has_value()) {
      o.restore_best_weights = *o.restore_on_stop != "none";
    } else {
      if (!o.restore_best_weights.has_value()) o.restore_best_weights = true;
      o.restore_on_stop = std::string(*o.restore_best_weights ? "best" : "none");
    }
  }
}

void NNKEarlyStopping::set_labels(const at::Tensor& labels) {
  int64_t num_classes = 0;
  at::Tensor y = check_labels(labels, "NNKEarlyStopping", &num_classes);
  std::lock_guard<std::mutex> lock(mutex_);
  labels_ = y;
  num_classes_ = num_classes;
}

bool NNKEarlyStopping::keeps_improved_snapshots() const {
  return *options_.restore_on_stop != "none";
}

void NNKEarlyStopping::watch(const std::vector<at::Tensor>& params,
                             const std::vector<at::Tensor>& extra) {
  std::vector<at::Tensor> best = clones(params);
  std::vector<at::Tensor> improved_params, improved_extra;
  if (keeps_improved_snapshots()) {
    if (options_.mode == "channel") improved_params = clones(params);
    improved_extra = clones(extra);
  }
  std::lock_guard<std::mutex> lock(mutex_);
  params_ = params;
  extra_ = extra;
  best_params_ = std::move(best);
  improved_params_ = std::move(improved_params);
  improved_extra_ = std::move(improved_extra);
}

void NNKEarlyStopping::rebind(const std::vector<at::Tensor>& params,
                              const std::vector<at::Tensor>& extra) {
  const char* who = "NNKEarlyStopping.rebind";
  std::lock_guard<std::mutex> lock(mutex_);
  check_same_tensors(params, params_, who, "parameters");
  check_same_tensors(extra, extra_, who, "extra tensors");
  for (size_t p = 0; p < params.size(); ++p) {
    if (!params[p].is_same(params_[p])) params_[p] = params[p];
  }
  for (size_t p = 0; p < extra.size(); ++p) {
    if (!extra[p].is_same(extra_[p])) extra_[p] = extra[p];
  }
  follow(best_params_, params_);
  follow(improved_params_, params_);
  follow(improved_extra_, extra_);
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
  const auto& o = options_;
  if (o.mode == "layer") {
    // Diverged training: a NaN score, which update() turns into a stop.
    if (!all_finite(activations)) return {nan};
    const at::Tensor x = scoring_dtype(reduce_activations(activations, o.reduce));
    return {layer_loo_error(x, labels, num_classes, o.k, o.kernel, o.candidate_metric)};
  }
  TORCH_CHECK(activations.dim() >= 3, who,
              ": channel mode needs conv activations [N, C, H, W], got shape ",
              activations.sizes(), "; use mode=\"layer\" for other layers");
  if (!all_finite(activations)) return std::vector<double>(activations.size(1), nan);
  return channel_loo_errors(scoring_dtype(activations.detach()), labels, num_classes, o.k,
                            o.kernel, o.candidate_metric);
}

void NNKEarlyStopping::snapshot_channel(int64_t c) {
  at::NoGradGuard no_grad;
  for (size_t p = 0; p < params_.size(); ++p) best_params_[p][c].copy_(params_[p][c]);
}

void NNKEarlyStopping::snapshot_all() {
  copy_all(best_params_, params_);
}

void NNKEarlyStopping::snapshot_improvement() {
  if (!keeps_improved_snapshots()) return;
  if (options_.mode == "channel") copy_all(improved_params_, params_);
  copy_all(improved_extra_, extra_);
}

void NNKEarlyStopping::restore_channel(int64_t c) {
  at::NoGradGuard no_grad;
  for (size_t p = 0; p < params_.size(); ++p) params_[p][c].copy_(best_params_[p][c]);
}

void NNKEarlyStopping::restore_on_stop() {
  if (!keeps_improved_snapshots()) return;
  if (options_.mode == "layer") {
    copy_all(params_, best_params_);  // the best check is the last improving one
  } else {
    copy_all(params_, improved_params_);
    // Every channel is frozen: the restored values are what enforce() keeps from now on.
    snapshot_all();
  }
  copy_all(extra_, improved_extra_);
}

double NNKEarlyStopping::threshold_locked(double best) const {
  if (!options_.auto_min_delta) return options_.min_delta;
  TORCH_CHECK(labels_.defined(), "NNKEarlyStopping.update: min_delta=\"auto\" needs the probe's "
              "node count: call set_labels() first");
  if (!std::isfinite(best)) return 0.0;  // nothing to beat yet
  const double n = static_cast<double>(labels_.size(0));
  return std::sqrt(std::max(best * (1.0 - best), 0.0) / n);
}

bool NNKEarlyStopping::step(int64_t epoch, const at::Tensor& activations) {
  if (should_stop()) return true;
  const std::vector<double> scores = score(activations);
  std::lock_guard<std::mutex> lock(mutex_);
  return update_locked(epoch, scores);
}

bool NNKEarlyStopping::finish(int64_t epoch) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (should_stop_locked()) return false;
  TORCH_CHECK(epoch >= 0, "NNKEarlyStopping.finish: epoch should be >= 0, got ", epoch);
  stopped_epoch_ = epoch;
  const bool restore = improved_epoch_ >= 0 && keeps_improved_snapshots();
  stop_reason_ = "training ended at epoch " + std::to_string(epoch) +
                 (checks_ == 0 ? " before the first check" : " before a stop");
  if (restore) restore_on_stop();
  return restore;
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
  TORCH_CHECK(!options_.auto_min_delta || labels_.defined(), who, ": min_delta=\"auto\" needs "
              "the probe's node count: call set_labels() first");
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
  recent_.push_back(scores);
  while (static_cast<int64_t>(recent_.size()) > options_.smoothing) recent_.pop_front();
  smoothed_.assign(c, 0.0);
  for (const auto& r : recent_) {
    for (int64_t ch = 0; ch < c; ++ch) smoothed_[ch] += r[ch];
  }
  for (double& s : smoothed_) s /= static_cast<double>(recent_.size());

  if (options_.mode == "layer") {
    if (smoothed_[0] < best_[0] - threshold_locked(best_[0])) {
      best_[0] = smoothed_[0];
      wait_[0] = 0;
      best_epoch_ = improved_epoch_ = epoch;
      snapshot_all();
      snapshot_improvement();
    } else if (++wait_[0] >= options_.patience) {
      stopped_epoch_ = epoch;
      stop_reason_ = "the layer's NNK leave-one-out error has not improved for " +
                     std::to_string(options_.patience) + " checks";
      restore_on_stop();
    }
    return should_stop_locked();
  }
  bool all_frozen = true, improved = false;
  for (size_t ch = 0; ch < best_.size(); ++ch) {
    if (frozen_epoch_[ch] >= 0) continue;
    if (smoothed_[ch] < best_[ch] - threshold_locked(best_[ch])) {
      best_[ch] = smoothed_[ch];
      wait_[ch] = 0;
      improved = true;
      snapshot_channel(static_cast<int64_t>(ch));
    } else if (++wait_[ch] >= options_.patience) {
      frozen_epoch_[ch] = epoch;
      if (*options_.restore_best_weights) {
        restore_channel(static_cast<int64_t>(ch));
      } else {
        snapshot_channel(static_cast<int64_t>(ch));  // frozen where it stands
      }
    }
    all_frozen = all_frozen && frozen_epoch_[ch] >= 0;
  }
  if (improved) {
    improved_epoch_ = epoch;
    // After the freezes above, so that the snapshot holds what the model is at this check.
    snapshot_improvement();
  }
  if (all_frozen) {
    stopped_epoch_ = epoch;
    stop_reason_ = "every channel is frozen";
    restore_on_stop();
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

std::vector<double> NNKEarlyStopping::smoothed_scores() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return smoothed_;
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

int64_t NNKEarlyStopping::last_improvement_epoch() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return improved_epoch_;
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
     << ", \"min_delta\": " << (o.auto_min_delta ? std::string("\"auto\"") : number(o.min_delta))
     << ", \"smoothing\": " << o.smoothing << ", \"k\": " << o.k
     << ", \"kernel\": " << quoted(o.kernel)
     << ", \"candidate_metric\": " << quoted(o.candidate_metric)
     << ", \"reduce\": " << quoted(o.reduce)
     << ", \"restore_best_weights\": " << (*o.restore_best_weights ? "true" : "false")
     << ", \"restore_on_stop\": " << quoted(*o.restore_on_stop) << "},\n";
  os << "  \"checks\": " << checks_ << ",\n";
  os << "  \"last_scores\": " << json::array(last_scores_) << ",\n";
  os << "  \"smoothed_scores\": " << json::array(smoothed_) << ",\n";
  os << "  \"best_scores\": " << json::array(best_) << ",\n";
  os << "  \"best_score\": " << number(best_score_locked()) << ",\n";
  os << "  \"best_epoch\": " << (best_epoch_ >= 0 ? std::to_string(best_epoch_) : "null") << ",\n";
  os << "  \"last_improvement_epoch\": "
     << (improved_epoch_ >= 0 ? std::to_string(improved_epoch_) : "null") << ",\n";
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
  s["counters"] = lng({best_epoch_, stopped_epoch_, checks_, improved_epoch_});
  std::vector<double> recent;
  for (const auto& r : recent_) recent.insert(recent.end(), r.begin(), r.end());
  s["recent_scores"] = dbl(recent);
  std::vector<int64_t> reason;
  for (char ch : stop_reason_) reason.push_back(static_cast<unsigned char>(ch));
  s["stop_reason"] = lng(reason);
  for (size_t p = 0; p < best_params_.size(); ++p) {
    s["best_params." + std::to_string(p)] = best_params_[p].detach().clone();
  }
  for (size_t p = 0; p < improved_params_.size(); ++p) {
    s["improved_params." + std::to_string(p)] = improved_params_[p].detach().clone();
  }
  for (size_t p = 0; p < improved_extra_.size(); ++p) {
    s["improved_extra." + std::to_string(p)] = improved_extra_[p].detach().clone();
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
  const std::vector<double> recent = dbl("recent_scores");
  TORCH_CHECK(counters.size() == 4, who,
              ": \"counters\" should hold 4 values (best_epoch, stopped_epoch, checks, "
              "last_improvement_epoch), got ", counters.size());
  // Counts are incremented at the next check: bounded far beyond any training so that the
  // increment cannot overflow.
  constexpr int64_t kMaxCount = int64_t(1) << 62;
  TORCH_CHECK(counters[0] >= -1 && counters[1] >= -1 && counters[2] >= 0 &&
                  counters[2] < kMaxCount && counters[3] >= -1, who,
              ": \"counters\" should be best_epoch >= -1, stopped_epoch >= -1, "
              "0 <= checks < 2^62, last_improvement_epoch >= -1, got ",
              at::IntArrayRef(counters));
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
  // The smoothing window: whole checks of c errors each, at most `smoothing` of them and no
  // more than the checks made.
  TORCH_CHECK(c == 0 ? recent.empty() : recent.size() % c == 0, who, ": \"recent_scores\" has ",
              recent.size(), " entries, not a whole number of checks of ", c, " scores");
  const int64_t window = c == 0 ? 0 : static_cast<int64_t>(recent.size() / c);
  TORCH_CHECK(window <= options_.smoothing && window <= counters[2], who,
              ": \"recent_scores\" holds ", window, " checks; at most smoothing = ",
              options_.smoothing, " and the ", counters[2], " checks made");
  for (double v : recent) {
    TORCH_CHECK(std::isfinite(v), who, ": \"recent_scores\" should be finite, got ", v);
  }
  std::deque<std::vector<double>> recent_checks;
  for (int64_t r = 0; r < window; ++r) {
    recent_checks.emplace_back(recent.begin() + r * c, recent.begin() + (r + 1) * c);
  }
  std::vector<double> smoothed(recent_checks.empty() ? 0 : c, 0.0);
  for (const auto& r : recent_checks) {
    for (size_t i = 0; i < c; ++i) smoothed[i] += r[i];
  }
  // Summed, then divided, as update() does: the same rounding.
  for (double& v : smoothed) v /= static_cast<double>(window);
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
  // Snapshots "<prefix>.0", "<prefix>.1", ...: exactly `count`, each with its watched
  // tensor's shape, moved to its dtype and device.
  auto snapshots = [&](const std::string& prefix, const std::vector<at::Tensor>& watched,
                       size_t count) {
    size_t n = 0;
    while (state.count(prefix + "." + std::to_string(n))) ++n;
    TORCH_CHECK(n == count, who, ": the state holds ", n, " \"", prefix, "\" snapshots, ",
                count, " expected for the ", watched.size(), " tensors watched (restore_on_stop=\"",
                *options_.restore_on_stop, "\"); call watch() with the same tensors and "
                "options before loading");
    std::vector<at::Tensor> out;
    for (size_t p = 0; p < n; ++p) {
      const at::Tensor& t = state.at(prefix + "." + std::to_string(p));
      TORCH_CHECK(t.defined() && t.sizes() == watched[p].sizes(), who, ": snapshot \"", prefix,
                  ".", p, "\" has shape ", t.defined() ? t.sizes() : at::IntArrayRef{},
                  ", the watched tensor ", watched[p].sizes());
      TORCH_CHECK(at::isFloatingType(t.scalar_type()) ==
                          at::isFloatingType(watched[p].scalar_type()) &&
                      t.is_complex() == watched[p].is_complex(),
                  who, ": snapshot \"", prefix, ".", p, "\" is ", t.scalar_type(),
                  ", the watched tensor ", watched[p].scalar_type());
      out.push_back(t.detach().to(watched[p].device(), watched[p].scalar_type()).clone());
    }
    return out;
  };
  const bool keeps = keeps_improved_snapshots();
  std::vector<at::Tensor> best_params = snapshots("best_params", params_, params_.size());
  std::vector<at::Tensor> improved_params = snapshots(
      "improved_params", params_, keeps && options_.mode == "channel" ? params_.size() : 0);
  std::vector<at::Tensor> improved_extra =
      snapshots("improved_extra", extra_, keeps ? extra_.size() : 0);
  best_ = std::move(best);
  last_scores_ = std::move(last);
  wait_ = std::move(wait);
  frozen_epoch_ = std::move(frozen);
  best_epoch_ = counters[0];
  stopped_epoch_ = counters[1];
  checks_ = counters[2];
  improved_epoch_ = counters[3];
  recent_ = std::move(recent_checks);
  smoothed_ = std::move(smoothed);
  stop_reason_ = std::move(reason_text);
  best_params_ = std::move(best_params);
  improved_params_ = std::move(improved_params);
  improved_extra_ = std::move(improved_extra);
}

std::vector<std::pair<std::string, double>> rank_models(
    const std::vector<std::string>& names,
    const std::vector<at::Tensor>& activations,
    const at::Tensor& labels,
    int64_t k,
    const std::string& kernel,
    const std::string& reduce,
    const std::string& candidate_metric) {
  TORCH_CHECK(candidate_metric == "kernel" || candidate_metric == "euclidean",
              "rank_models: candidate_metric should be \"kernel\" or \"euclidean\", got \"",
              candidate_metric, "\"");
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
    out.emplace_back(names[m], layer_loo_error(x, y_device, num_classes, k, kernel,
                                                   candidate_metric));
  }
  std::stable_sort(out.begin(), out.end(),
                   [](const auto& a, const auto& b) { return a.second < b.second; });
  return out;
}

} // namespace hooks
} // namespace torch_geometry
