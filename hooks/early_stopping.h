// Validation-free early stopping by the NNK leave-one-out error of a probe set (DESIGN §5):
// the state and the decisions behind torch_geometry.callbacks.NNKEarlyStopping (Python binds
// this class) and behind LibTorch trainers.
//
// mode "channel": one patience counter per channel of a conv layer's output [N, C, H, W],
//   scored by the LOO error of that channel's NNK graph (DESIGN §4). A channel that has not
//   improved by min_delta for `patience` checks is frozen: its best weights come back (with
//   restore_best_weights) and enforce() keeps its parameters (filter and bias) at those
//   values whatever the optimiser does. Training stops when every channel is frozen.
// mode "layer": one counter on the LOO error of the whole layer's output; when it runs out,
//   training stops and, with restore_best_weights, the watched parameters return to their
//   values at the best check.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Optional.h>

#include <map>
#include <string>
#include <vector>

namespace torch_geometry {
namespace hooks {

struct EarlyStoppingOptions {
  std::string mode = "channel";   // "channel" | "layer"
  int64_t patience = 5;           // checks without improvement before freezing / stopping
  double min_delta = 0.0;         // improvement = score < best - min_delta
  int64_t k = 25;                 // NNK candidates per node
  std::string kernel = "cosine";  // "cosine" | "gaussian"
  std::string reduce = "flatten"; // layer mode: "flatten" | "avgpool" for [N, C, ...] outputs
  bool restore_best_weights = true;
};

class NNKEarlyStopping {
 public:
  explicit NNKEarlyStopping(EarlyStoppingOptions options = EarlyStoppingOptions());

  // Integer class labels [N] of the probe set.
  void set_labels(const at::Tensor& labels);

  // The parameters the callback restores and freezes. Channel mode: the conv producing the
  // layer's channels, weight [C, ...] and optional bias [C] (channel c = index c of dim 0).
  // Layer mode: any tensors (typically all of the model's parameters). The tensors are held
  // by reference (they share storage with the model's parameters).
  void watch(const std::vector<at::Tensor>& params);

  // One check, with the layer's probe activations [N, C, ...] (channel mode) or [N, ...]
  // (layer mode) for `epoch`. Returns true when training should stop: every channel frozen
  // (channel mode), patience exhausted (layer mode), or non-finite activations or scores
  // (then nothing is frozen or restored, and stop_reason() says why).
  bool step(int64_t epoch, const at::Tensor& activations);

  // Rewrites the parameters of frozen channels with their frozen values (under no_grad).
  // Call after every optimiser step (the Python callback does it for you).
  void enforce();
  // Zeroes the gradients of frozen channels (saves optimiser work; enforce() is what
  // guarantees the values).
  void mask_gradients();

  const std::vector<double>& last_scores() const { return last_scores_; }
  const std::vector<double>& best_scores() const { return best_; }
  const std::vector<int64_t>& wait_counts() const { return wait_; }
  std::vector<int64_t> frozen_channels() const;
  double best_score() const;          // layer mode: best; channel mode: mean of the bests
  int64_t best_epoch() const { return best_epoch_; }  // layer mode
  int64_t stopped_epoch() const { return stopped_epoch_; }  // -1 while running
  bool should_stop() const { return stopped_epoch_ >= 0; }
  int64_t checks() const { return checks_; }
  const std::string& stop_reason() const { return stop_reason_; }
  const EarlyStoppingOptions& options() const { return options_; }

  // The state as JSON, for logs and reports (resuming goes through state_dict()):
  //   {"options": {mode, patience, min_delta, k, kernel, reduce, restore_best_weights},
  //    "checks": int, "last_scores": [float], "best_scores": [float], "best_score": float,
  //    "best_epoch": int|null (layer mode), "wait_counts": [int],
  //    "frozen": [{"channel": int, "epoch": int}, ...] (channel mode, by channel),
  //    "should_stop": bool, "stopped_epoch": int|null, "stop_reason": str}
  // Scores are NNK leave-one-out errors in [0, 1], one per channel (channel mode) or one
  // (layer mode); best scores not yet reached (before the first check) and other
  // non-finite numbers are written as null.
  std::string to_json() const;

  // Everything needed to resume, as tensors (for torch.save / torch::save).
  std::map<std::string, at::Tensor> state_dict() const;
  void load_state_dict(const std::map<std::string, at::Tensor>& state);

 private:
  std::vector<double> score(const at::Tensor& activations) const;
  void snapshot_channel(int64_t c);
  void snapshot_all();
  void restore_channel(int64_t c);

  EarlyStoppingOptions options_;
  at::Tensor labels_;
  int64_t num_classes_ = 0;
  std::vector<at::Tensor> params_;
  std::vector<at::Tensor> best_params_;  // same shapes as params_
  std::vector<double> last_scores_, best_;
  std::vector<int64_t> wait_, frozen_epoch_;  // frozen_epoch_ -1 = not frozen
  int64_t best_epoch_ = -1, stopped_epoch_ = -1, checks_ = 0;
  std::string stop_reason_;
};

// Ranks models by the NNK leave-one-out error of their probe activations (lowest first),
// from training data only. `activations[m]` is model m's activations [N, ...] of the probe
// set, `names[m]` its name. Returns (name, loo_error) pairs, best first; ties keep order.
std::vector<std::pair<std::string, double>> rank_models(
    const std::vector<std::string>& names,
    const std::vector<at::Tensor>& activations,
    const at::Tensor& labels,
    int64_t k = 25,
    const std::string& kernel = "cosine",
    const std::string& reduce = "flatten");

} // namespace hooks
} // namespace torch_geometry
