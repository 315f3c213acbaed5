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
//
// Every public method takes one lock, so one object can be shared by threads (a training
// thread stepping the optimiser and enforcing, another checking or saving the state); the
// NNK scoring itself runs outside the lock.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Optional.h>

#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "geometry_tracker.h"

namespace torch_geometry {
namespace hooks {

struct EarlyStoppingOptions {
  std::string mode = "channel";   // "channel" | "layer"
  int64_t patience = 5;           // checks without improvement before freezing / stopping
  double min_delta = 0.0;         // improvement = score < best - min_delta
  int64_t k = 25;                 // NNK candidates per node
  std::string kernel = "cosine";  // "cosine" | "gaussian"
  std::string reduce = kDefaultReduce;  // layer mode: "avgpool" | "flatten" for [N, C, ...]
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
  // by reference (they share storage with the model's parameters) and their current values
  // become the best-weight snapshots.
  void watch(const std::vector<at::Tensor>& params);

  // Points the callback at the model's current parameter tensors, keeping the snapshots
  // (converted to the new tensors' dtype and device). Moving a model (`.double()`, `.to()`,
  // `.to(memory_format=...)`) replaces its tensors, so callers pass the tensors looked up
  // through the model before every enforce() and step(); the shapes must match watch().
  void rebind(const std::vector<at::Tensor>& params);

  // One check, with the layer's probe activations [N, C, ...] (channel mode) or [N, ...]
  // (layer mode) for `epoch`: score() then update(). Returns true when training should
  // stop: every channel frozen (channel mode), patience exhausted (layer mode), or
  // non-finite activations or scores (then nothing is frozen or restored, and
  // stop_reason() says why).
  bool step(int64_t epoch, const at::Tensor& activations);

  // The scores step() would decide on: NNK leave-one-out errors in [0, 1], one per channel
  // of activations [N, C, ...] (channel mode) or one for the layer (layer mode). Does not
  // change the state.
  std::vector<double> score(const at::Tensor& activations) const;

  // The decision of one check from its scores (as score() returns them; a non-finite score
  // stops training): under torch.distributed every rank passes the same scores (rank 0's)
  // so that every rank freezes the same channels and stops at the same epoch.
  bool update(int64_t epoch, const std::vector<double>& scores);

  // Rewrites the parameters of frozen channels with their frozen values (under no_grad).
  // Call after every optimiser step (the Python callback does it for you).
  void enforce();
  // Zeroes the gradients of frozen channels (saves optimiser work; enforce() is what
  // guarantees the values).
  void mask_gradients();

  // Copies, so that a reader never sees a vector another thread is changing.
  std::vector<double> last_scores() const;
  std::vector<double> best_scores() const;
  std::vector<int64_t> wait_counts() const;
  std::vector<int64_t> frozen_channels() const;
  // Epoch at which each channel froze, -1 = not frozen (channel mode; [C], empty before
  // the first check).
  std::vector<int64_t> frozen_epochs() const;
  double best_score() const;          // layer mode: best; channel mode: mean of the bests
  int64_t best_epoch() const;         // layer mode
  int64_t stopped_epoch() const;      // -1 while running
  bool should_stop() const;
  int64_t checks() const;
  std::string stop_reason() const;
  const EarlyStoppingOptions& options() const { return options_; }  // immutable

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
  // Checks the whole state (keys, dtypes, sizes against the mode, the channel count and
  // the watched parameters, value ranges) before changing anything: a refused state
  // leaves the object as it was.
  void load_state_dict(const std::map<std::string, at::Tensor>& state);

 private:
  // The *_locked helpers expect mutex_ to be held.
  bool update_locked(int64_t epoch, const std::vector<double>& scores);
  bool should_stop_locked() const { return stopped_epoch_ >= 0; }
  double best_score_locked() const;
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
  mutable std::mutex mutex_;
};

// Ranks models by the NNK leave-one-out error of their probe activations (lowest first),
// from training data only. `activations[m]` is model m's activations [N, ...] of the probe
// set, `names[m]` its name (any device, float16/bfloat16 included: reduced as
// reduce_activations does, the graph built on that device in float32). Returns
// (name, loo_error) pairs, best first; ties keep order.
std::vector<std::pair<std::string, double>> rank_models(
    const std::vector<std::string>& names,
    const std::vector<at::Tensor>& activations,
    const at::Tensor& labels,
    int64_t k = 25,
    const std::string& kernel = "cosine",
    const std::string& reduce = kDefaultReduce);

} // namespace hooks
} // namespace torch_geometry
