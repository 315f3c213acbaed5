// Geometry tracking across epochs: the state behind torch_geometry.GeometryTracker (Python
// binds this class) and behind LibTorch trainers.
//
// Each call to step(epoch, activations) takes the probe set's activations of every tracked
// layer, reduces conv maps, builds the NNK graph of each layer, computes the manifold graph
// metrics, compares each layer's graph with its graph at the previous tracked epoch
// (geometric drift) and with the previous layer's graph in the same epoch, and appends one
// summary row per (epoch, layer, metric) to the history.
//
// One object can be shared by threads: the state is behind a lock, the graphs and metrics
// of a step are computed outside it.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Optional.h>

#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "summary.h"

namespace torch_geometry {
namespace hooks {

// How conv maps [N, C, ...] become points when nobody says: the tracker, layer-mode early
// stopping and model selection all read this one default, so that one layer gets one LOO
// error. "avgpool" (-> [N, C]) rather than "flatten" (-> [N, C*H*W]): it keeps a channel's
// meaning under translation and costs H*W times less per kernel entry.
constexpr const char* kDefaultReduce = "avgpool";

struct TrackerOptions {
  int64_t k = 25;                   // NNK candidates per node
  std::string kernel = "cosine";    // "cosine" | "gaussian"
  // How a node's k candidates are ranked before the kernel weighs them (nnk_graph's
  // candidate_metric): "kernel" (kernel similarity) | "euclidean" (L2 on the raw points,
  // as the published DeepNNK code does).
  std::string candidate_metric = "kernel";
  std::string reduce = kDefaultReduce;  // conv maps [N, C, ...]: "avgpool" (mean over
                                       // spatial dims -> [N, C]) or "flatten" (-> [N, C*H*W])
  double alpha = 0.05;              // Fukunaga-Olsen threshold of local_dim
  int64_t bins = 20;                // histogram bins per summary
};

// One line of the history: the summary of one metric of one layer at one epoch.
struct HistoryRow {
  int64_t epoch = 0;
  std::string layer;
  std::string metric;
  Summary summary;
};

// Reduces activations [N, ...] to points [N, D] on the activations' device (float64 kept;
// float32, float16, bfloat16 and other dtypes become float32, so that no graph is built in
// half precision): [N, D] unchanged; [N, C, ...] by "avgpool" or "flatten".
at::Tensor reduce_activations(const at::Tensor& activations, const std::string& reduce);

class GeometryTracker {
 public:
  // `layers`: the tracked layers, in model order (the "previous layer" comparison follows it).
  GeometryTracker(std::vector<std::string> layers, TrackerOptions options = TrackerOptions());

  // Integer class labels [N] of the probe set, enabling loo_error, loo_soft_error and
  // label_smoothness. Must match N of the activations passed to step().
  void set_labels(const at::Tensor& labels);

  // Records one epoch. `activations` maps each tracked layer to its probe activations
  // [N, ...] (same N for all layers, N > k; any device, float16/bfloat16 included). Each
  // layer's graph and metrics are computed on its activations' device, in float32 (float64
  // activations: float64); only the per-node metrics [N] that the summaries read come to the
  // host. The labels are copied to that device once and kept there while it does not change.
  // Returns the rows appended for this epoch.
  // Epochs must increase; stepping the last recorded epoch again (a repeated end-of-epoch
  // call, a resumed run) records nothing and returns that epoch's rows.
  // Metrics recorded per layer: degree, diameter, local_dim, log_volume, curvature, error,
  // isolated (1 for nodes without edges), epoch_overlap (Jaccard of NNK neighbourhoods with
  // the previous recorded epoch; 1 = no drift), layer_overlap (with the previous layer),
  // and with labels: loo_error, loo_soft_error, label_smoothness.
  std::vector<HistoryRow> step(int64_t epoch, const std::map<std::string, at::Tensor>& activations);

  // A layer's NNK graph built elsewhere: (neighbors [N, k] int64, weights [N, k], error [N]).
  using Graph = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
  // The same, with the graphs of some layers given instead of built here (e.g. built across
  // ranks by torch_geometry.distributed, bit for bit the graph this tracker would build):
  // `graphs[layer]` must be the NNK graph of that layer's activations as reduced by this
  // tracker's `reduce`, with its k and kernel; it is checked as a graph of N nodes with k
  // columns and moved to the activations' device. The metrics are computed from it as from
  // a graph built here.
  std::vector<HistoryRow> step(int64_t epoch, const std::map<std::string, at::Tensor>& activations,
                               const std::map<std::string, Graph>& graphs);

  std::vector<HistoryRow> history() const;  // a copy: other threads may be stepping
  c10::optional<int64_t> last_epoch() const;  // the last recorded epoch, if any
  const std::vector<std::string>& layers() const { return layers_; }  // immutable
  const TrackerOptions& options() const { return options_; }  // immutable

  // Everything needed to resume (the history and the last epoch's graphs, which the next
  // epoch_overlap compares with), as tensors for torch.save / torch::save:
  //   "layers", "metrics": UTF-8 bytes of the names joined by '\n' (uint8);
  //   "history.epoch", "history.layer", "history.metric" (index into layers / metrics),
  //   "history.count": int64 [R]; "history.stats": float64 [R, 6] (mean, median, q25, q75,
  //   min, max); "history.bin_edges": float64 [R, bins + 1]; "history.hist": int64 [R, bins];
  //   "last_epoch": int64 [0] or [1]; "previous.<layer>.neighbors" int64 [N, k] and
  //   "previous.<layer>.weights" [N, k] for each layer of the last recorded epoch.
  std::map<std::string, at::Tensor> state_dict() const;
  // Checks the whole state against this tracker (layers, bins, k, probe size) before
  // changing anything; a refused state leaves the tracker as it was.
  void load_state_dict(const std::map<std::string, at::Tensor>& state);

  // History as JSON: {"options": {...}, "layers": [...], "history": [{epoch, layer, metric,
  // count, mean, median, q25, q75, min, max}, ...]}; non-finite numbers are written as null.
  std::string to_json() const;
  // History as CSV with a header line: epoch,layer,metric,count,mean,median,q25,q75,min,max.
  std::string to_csv() const;

 private:
  struct LayerGraph {
    at::Tensor neighbors, weights;
  };

  std::vector<std::string> layers_;
  TrackerOptions options_;
  c10::optional<at::Tensor> labels_;  // on the CPU, as checked
  // Copies of device_labels_source_ (a labels_ value) on the devices that activations came
  // from, one per device: layers of one model may sit on different devices.
  mutable at::Tensor device_labels_source_;
  mutable std::vector<at::Tensor> device_labels_;
  int64_t num_classes_ = 0;
  std::map<std::string, LayerGraph> previous_;  // on the device the graphs were built on
  std::vector<HistoryRow> history_;
  c10::optional<int64_t> last_epoch_;
  mutable std::mutex mutex_;

  std::vector<HistoryRow> rows_of_locked(int64_t epoch) const;
  // `labels` (a snapshot of labels_) on `device`, copied there once per device.
  at::Tensor labels_on(const at::Tensor& labels, const at::Device& device) const;
};

} // namespace hooks
} // namespace torch_geometry
