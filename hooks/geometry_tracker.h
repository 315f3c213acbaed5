// Geometry tracking across epochs: the state behind torch_geometry.GeometryTracker (Python
// binds this class) and behind LibTorch trainers.
//
// Each call to step(epoch, activations) takes the probe set's activations of every tracked
// layer, reduces conv maps, builds the NNK graph of each layer, computes the manifold graph
// metrics, compares each layer's graph with its graph at the previous tracked epoch
// (geometric drift) and with the previous layer's graph in the same epoch, and appends one
// summary row per (epoch, layer, metric) to the history.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Optional.h>

#include <map>
#include <string>
#include <vector>

#include "summary.h"

namespace torch_geometry {
namespace hooks {

struct TrackerOptions {
  int64_t k = 25;                   // NNK candidates per node
  std::string kernel = "cosine";    // "cosine" | "gaussian"
  std::string reduce = "avgpool";   // conv maps [N, C, ...]: "avgpool" (mean over spatial
                                    // dims -> [N, C]) or "flatten" (-> [N, C*H*W])
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

// Reduces activations [N, ...] to points [N, D] (float32 or float64 kept, other dtypes
// become float32): [N, D] unchanged; [N, C, ...] by "avgpool" or "flatten".
at::Tensor reduce_activations(const at::Tensor& activations, const std::string& reduce);

class GeometryTracker {
 public:
  // `layers`: the tracked layers, in model order (the "previous layer" comparison follows it).
  GeometryTracker(std::vector<std::string> layers, TrackerOptions options = TrackerOptions());

  // Integer class labels [N] of the probe set, enabling loo_error, loo_soft_error and
  // label_smoothness. Must match N of the activations passed to step().
  void set_labels(const at::Tensor& labels);

  // Records one epoch. `activations` maps each tracked layer to its probe activations
  // [N, ...] (same N for all layers, N > k). Returns the rows appended for this epoch.
  // Metrics recorded per layer: degree, diameter, local_dim, log_volume, curvature, error,
  // isolated (1 for nodes without edges), epoch_overlap (Jaccard of NNK neighbourhoods with
  // the previous recorded epoch; 1 = no drift), layer_overlap (with the previous layer),
  // and with labels: loo_error, loo_soft_error, label_smoothness.
  std::vector<HistoryRow> step(int64_t epoch, const std::map<std::string, at::Tensor>& activations);

  const std::vector<HistoryRow>& history() const { return history_; }
  const std::vector<std::string>& layers() const { return layers_; }
  const TrackerOptions& options() const { return options_; }

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
  c10::optional<at::Tensor> labels_;
  int64_t num_classes_ = 0;
  std::map<std::string, LayerGraph> previous_;
  std::vector<HistoryRow> history_;
};

} // namespace hooks
} // namespace torch_geometry
