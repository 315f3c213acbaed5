// Validation-free early stopping by the NNK leave-one-out error of a probe set (DESIGN §5):
// the state and the decisions behind torch_geometry.callbacks.NNKEarlyStopping (Python binds
// this class) and behind LibTorch trainers.
//
// mode "channel" (channel-wise DeepNNK): one patience counter per channel of a conv layer's
//   output [N, C, H, W], scored by the LOO error of that channel's NNK graph (DESIGN §4). A
//   channel that has not improved for `patience` checks is frozen: at its current weights
//   (default, as published) or, with restore_best_weights, at its best check's weights; from
//   then on enforce() keeps its parameters (filter and bias) at those values whatever the
//   optimiser does. Training stops when every channel is frozen; restore_on_stop
//   "last_improvement" (default) then returns the watched tensors to their values at the last
//   check at which any channel improved, as the published method returns its model.
// mode "layer" (DeepNNK): one counter on the LOO error of the whole layer's output; when it
//   runs out, training stops and (restore_on_stop "best" = "last_improvement", the default)
//   the watched tensors return to their values at the best check.
//
// Improvement. A check's score for a channel (or the layer) is the mean of its last
// `smoothing` LOO errors (fewer at the first checks; smoothing 1 = the error itself). It
// improves when score < best - delta, best = the lowest score so far. delta is min_delta, or
// with auto_min_delta the binomial standard error of a LOO error estimated on N probe nodes
// at the best error e so far, sqrt(e (1 - e) / N): a change smaller than the estimate's own
// sampling noise never counts as an improvement.
//
// Every public method takes one lock, so one object can be shared by threads (a training
// thread stepping the optimiser and enforcing, another checking or saving the state); the
// NNK scoring itself runs outside the lock.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Optional.h>

#include <deque>
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
  // Threshold sqrt(e (1 - e) / N) instead of min_delta (which must then be 0): e = the best
  // score so far, N = the probe's node count (set_labels()).
  bool auto_min_delta = false;
  int64_t smoothing = 1;          // score = mean of the last `smoothing` checks' LOO errors
  int64_t k = 25;                 // NNK candidates per node
  std::string kernel = "cosine";  // "cosine" | "gaussian"
  // How candidates are ranked before the kernel weighs them: "kernel" (by the kernel's
  // similarity) or "euclidean" (by L2 distance on the raw features, as published).
  std::string candidate_metric = "kernel";
  std::string reduce = kDefaultReduce;  // layer mode: "avgpool" | "flatten" for [N, C, ...]
  // Channel mode: a channel being frozen returns to its best check's weights (true) or is
  // frozen where it stands (false, as published). Layer mode: shorthand for restore_on_stop
  // "best" (true) or "none" (false). Unset: false in channel mode, true in layer mode.
  c10::optional<bool> restore_best_weights;
  // What the watched tensors return to when training stops: "none", "best" (layer mode: the
  // best check) or "last_improvement" (the last check at which any channel, or the layer,
  // improved; in layer mode the same check as "best"). Unset: "last_improvement" in channel
  // mode; in layer mode "best", or "none" when restore_best_weights is false. A non-finite
  // score stops training without restoring anything.
  c10::optional<std::string> restore_on_stop;
};

class NNKEarlyStopping {
 public:
  // Checks and resolves the options (options() returns them with both optionals set).
  explicit NNKEarlyStopping(EarlyStoppingOptions options = EarlyStoppingOptions());

  // Integer class labels [N] of the probe set (any device; moved to the activations' device
  // at each check). N is also the node count of auto_min_delta's standard error.
  void set_labels(const at::Tensor& labels);

  // The tensors the callback freezes and restores, held by reference (they share storage
  // with the model's tensors).
  //   params: channel mode: the conv producing the layer's channels, weight [C, ...] and
  //     optional bias [C] (channel c = index c of dim 0), and per-channel normalisation
  //     parameters after it; layer mode: any tensors (typically all of the model's
  //     parameters). Their current values become the best-weight snapshots.
  //   extra: the rest of the model's state (channel mode: its other parameters; both modes:
  //     buffers such as BatchNorm running statistics), any shapes and dtypes. Never frozen;
  //     restored with params by restore_on_stop, so that the whole model returns to the
  //     chosen check.
  void watch(const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& extra = {});

  // Points the callback at the model's current tensors, keeping the snapshots (converted to
  // the new tensors' dtype and device). Moving a model (`.double()`, `.to()`,
  // `.to(memory_format=...)`) replaces its tensors, so callers pass the tensors looked up
  // through the model before every enforce() and step(); counts and shapes must match
  // watch().
  void rebind(const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& extra = {});

  // One check, with the layer's probe activations [N, C, ...] (channel mode) or [N, ...]
  // (layer mode) for `epoch`: score() then update(). Returns true when training should
  // stop: every channel frozen (channel mode), patience exhausted (layer mode), or
  // non-finite activations or scores (then nothing is frozen or restored, and
  // stop_reason() says why).
  bool step(int64_t epoch, const at::Tensor& activations);

  // The LOO errors step() would decide on, in [0, 1]: one per channel of activations
  // [N, C, ...] (channel mode) or one for the layer (layer mode). Activations stay on their
  // device (the graphs are built there); float16/bfloat16 are scored in float32, float64
  // in float64. Does not change the state.
  std::vector<double> score(const at::Tensor& activations) const;

  // The decision of one check from its LOO errors (as score() returns them; a non-finite
  // one stops training): under torch.distributed every rank passes the same errors (rank
  // 0's) so that every rank freezes the same channels and stops at the same epoch.
  bool update(int64_t epoch, const std::vector<double>& scores);

  // The end of training without a stop (the epoch budget ran out at `epoch`): the model
  // returns to what restore_on_stop names, as at a stop ("last_improvement": its state at
  // the last check at which any channel, or the layer, improved; the published channel-wise
  // method returns that model whether or not every channel froze), and the object reads as
  // stopped (stopped_epoch() = epoch, stop_reason() says training ended there). Nothing is
  // restored before the first check or with restore_on_stop "none". Returns true when the
  // watched tensors were restored; after a stop it does nothing and returns false.
  bool finish(int64_t epoch);

  // Rewrites the parameters of frozen channels with their frozen values (under no_grad).
  // Call after every optimiser step (the Python callback does it for you).
  void enforce();
  // Zeroes the gradients of frozen channels (saves optimiser work; enforce() is what
  // guarantees the values).
  void mask_gradients();

  // Copies, so that a reader never sees a vector another thread is changing.
  std::vector<double> last_scores() const;      // the last check's LOO errors
  std::vector<double> smoothed_scores() const;  // what the last check compared (smoothing)
  std::vector<double> best_scores() const;      // lowest smoothed scores
  std::vector<int64_t> wait_counts() const;
  std::vector<int64_t> frozen_channels() const;
  // Epoch at which each channel froze, -1 = not frozen (channel mode; [C], empty before
  // the first check).
  std::vector<int64_t> frozen_epochs() const;
  double best_score() const;          // layer mode: best; channel mode: mean of the bests
  int64_t best_epoch() const;         // layer mode
  // The last check at which any channel (or the layer) improved, -1 before the first.
  int64_t last_improvement_epoch() const;
  int64_t stopped_epoch() const;      // -1 while running
  bool should_stop() const;
  int64_t checks() const;
  std::string stop_reason() const;
  const EarlyStoppingOptions& options() const { return options_; }  // immutable

  // The state as JSON, for logs and reports (resuming goes through state_dict()):
  //   {"options": {mode, patience, min_delta (number or "auto"), smoothing, k, kernel,
  //                candidate_metric, reduce, restore_best_weights, restore_on_stop},
  //    "checks": int, "last_scores": [float], "smoothed_scores": [float],
  //    "best_scores": [float], "best_score": float, "best_epoch": int|null (layer mode),
  //    "last_improvement_epoch": int|null, "wait_counts": [int],
  //    "frozen": [{"channel": int, "epoch": int}, ...] (channel mode, by channel),
  //    "should_stop": bool, "stopped_epoch": int|null, "stop_reason": str}
  // Scores are NNK leave-one-out errors in [0, 1], one per channel (channel mode) or one
  // (layer mode); best scores not yet reached (before the first check) and other
  // non-finite numbers are written as null.
  std::string to_json() const;

  // Everything needed to resume, as tensors (for torch.save / torch::save): counters,
  // scores, the last `smoothing` checks' errors, the best/frozen snapshots of params
  // ("best_params.<i>") and the last-improvement snapshots ("improved_params.<i>" in
  // channel mode, "improved_extra.<i>"; only with restore_on_stop "last_improvement" or
  // "best").
  std::map<std::string, at::Tensor> state_dict() const;
  // Checks the whole state (keys, dtypes, sizes against the mode, the channel count, the
  // smoothing window and the watched tensors, value ranges) before changing anything: a
  // refused state leaves the object as it was.
  void load_state_dict(const std::map<std::string, at::Tensor>& state);

 private:
  // The *_locked helpers expect mutex_ to be held.
  bool update_locked(int64_t epoch, const std::vector<double>& scores);
  bool should_stop_locked() const { return stopped_epoch_ >= 0; }
  double best_score_locked() const;
  double threshold_locked(double best) const;
  bool keeps_improved_snapshots() const;
  void snapshot_channel(int64_t c);
  void snapshot_all();
  void snapshot_improvement();
  void restore_channel(int64_t c);
  void restore_on_stop();

  EarlyStoppingOptions options_;
  at::Tensor labels_;
  int64_t num_classes_ = 0;
  std::vector<at::Tensor> params_, extra_;
  std::vector<at::Tensor> best_params_;      // same shapes as params_
  // Values at the last improving check: of params_ (channel mode; in layer mode that check
  // is the best one, whose snapshot is best_params_) and of extra_.
  std::vector<at::Tensor> improved_params_, improved_extra_;
  std::vector<double> last_scores_, smoothed_, best_;
  std::deque<std::vector<double>> recent_;   // the last <= smoothing checks' errors
  std::vector<int64_t> wait_, frozen_epoch_;  // frozen_epoch_ -1 = not frozen
  int64_t best_epoch_ = -1, improved_epoch_ = -1, stopped_epoch_ = -1, checks_ = 0;
  std::string stop_reason_;
  mutable std::mutex mutex_;
};

// Ranks models by the NNK leave-one-out error of their probe activations (lowest first),
// from training data only. `activations[m]` is model m's activations [N, ...] of the probe
// set, `names[m]` its name (any device, float16/bfloat16 included: reduced as
// reduce_activations does, the graph built on that device in float32). Returns
// (name, loo_error) pairs, best first; ties keep order. `candidate_metric` ranks each node's
// k candidates as nnk_graph's does ("kernel" or "euclidean").
std::vector<std::pair<std::string, double>> rank_models(
    const std::vector<std::string>& names,
    const std::vector<at::Tensor>& activations,
    const at::Tensor& labels,
    int64_t k = 25,
    const std::string& kernel = "cosine",
    const std::string& reduce = kDefaultReduce,
    const std::string& candidate_metric = "kernel");

} // namespace hooks
} // namespace torch_geometry
