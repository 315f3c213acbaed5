#include "geometry_tracker.h"

#include <cmath>
#include <iomanip>
#include <limits>
#include <set>
#include <sstream>

#include "../csrc/common.h"
#include "../csrc/graph_overlap.h"
#include "../csrc/label_metrics.h"
#include "../csrc/manifold_metrics.h"
#include "../csrc/nnk_graph.h"
#include "json.h"

namespace torch_geometry {
namespace hooks {

using json::number;
using json::quoted;

at::Tensor reduce_activations(const at::Tensor& activations, const std::string& reduce) {
  const Reduce mode = parse_reduce(reduce, "GeometryTracker");
  TORCH_CHECK(activations.dim() >= 2,
              "GeometryTracker: activations should be [N, ...] with at least 2 dims, got shape ",
              activations.sizes());
  at::Tensor a = activations.detach().to(at::kCPU);
  if (a.scalar_type() != at::kDouble) a = a.to(at::kFloat);
  if (a.dim() == 2) return a;
  if (mode == Reduce::AvgPool) {
    std::vector<int64_t> dims;
    for (int64_t d = 2; d < a.dim(); ++d) dims.push_back(d);
    return a.mean(dims);
  }
  return a.flatten(1);
}

GeometryTracker::GeometryTracker(std::vector<std::string> layers, TrackerOptions options)
    : layers_(std::move(layers)), options_(std::move(options)) {
  TORCH_CHECK(!layers_.empty(), "GeometryTracker: layers should name at least one layer");
  std::set<std::string> seen;
  for (const auto& l : layers_) {
    TORCH_CHECK(seen.insert(l).second, "GeometryTracker: layer \"", l, "\" is listed twice");
  }
  TORCH_CHECK(options_.k >= 1, "GeometryTracker: k should be >= 1, got ", options_.k);
  parse_kernel(options_.kernel, "GeometryTracker");
  parse_reduce(options_.reduce, "GeometryTracker");
  TORCH_CHECK(options_.alpha > 0 && options_.alpha < 1,
              "GeometryTracker: alpha should be in (0, 1), got ", options_.alpha);
  TORCH_CHECK(options_.bins >= 1, "GeometryTracker: bins should be >= 1, got ", options_.bins);
}

void GeometryTracker::set_labels(const at::Tensor& labels) {
  const Labels lab = check_labels(labels, -1, "GeometryTracker");
  num_classes_ = lab.num_classes;
  labels_ = lab.y;
}

std::vector<HistoryRow> GeometryTracker::step(
    int64_t epoch,
    const std::map<std::string, at::Tensor>& activations) {
  for (const auto& kv : activations) {
    bool known = false;
    for (const auto& l : layers_) known = known || l == kv.first;
    TORCH_CHECK(known, "GeometryTracker.step: \"", kv.first, "\" is not a tracked layer");
  }
  int64_t n = -1;
  for (const auto& l : layers_) {
    auto it = activations.find(l);
    TORCH_CHECK(it != activations.end(), "GeometryTracker.step: no activations for layer \"",
                l, "\" at epoch ", epoch);
    const int64_t ln = it->second.dim() > 0 ? it->second.size(0) : 0;
    TORCH_CHECK(n < 0 || ln == n, "GeometryTracker.step: layer \"", l, "\" has ", ln,
                " inputs, the others ", n, ": every layer must see the same probe set");
    n = ln;
  }
  TORCH_CHECK(n > options_.k, "GeometryTracker.step: the probe set has ", n,
              " inputs; it needs more than k = ", options_.k);
  if (labels_.has_value()) {
    TORCH_CHECK(labels_->size(0) == n, "GeometryTracker.step: ", labels_->size(0),
                " labels for a probe set of ", n, " inputs");
  }

  std::vector<HistoryRow> rows;
  auto add = [&](const std::string& layer, const std::string& metric, const at::Tensor& v,
                 const c10::optional<at::Tensor>& include = c10::nullopt) {
    rows.push_back({epoch, layer, metric, summarize(v, options_.bins, include)});
  };
  std::map<std::string, LayerGraph> current;
  const LayerGraph* prev_layer = nullptr;
  for (const auto& layer : layers_) {
    const at::Tensor x = reduce_activations(activations.at(layer), options_.reduce);
    TORCH_CHECK(all_finite(x), "GeometryTracker.step: layer \"", layer,
                "\" has non-finite activations at epoch ", epoch);
    at::Tensor nbr, w, err;
    std::tie(nbr, w, err) = ops::nnk_graph(x, options_.k, options_.kernel, c10::nullopt,
                                           kDefaultSigmaMode, c10::nullopt,
                                           kDefaultThreshold);
    at::Tensor degree, diameter, local_dim, log_volume, curvature;
    std::tie(degree, diameter, local_dim, log_volume, curvature) =
        ops::manifold_metrics(x, nbr, w, options_.kernel, options_.alpha);
    // Isolated nodes' diameter, local_dim, log_volume and curvature are conventions (0),
    // not measurements: they stay out of those summaries and are counted by "isolated".
    const at::Tensor connected = degree > 0;
    add(layer, "degree", degree);
    add(layer, "diameter", diameter, connected);
    add(layer, "local_dim", local_dim, connected);
    add(layer, "log_volume", log_volume, connected);
    add(layer, "curvature", curvature, connected);
    add(layer, "error", err);
    add(layer, "isolated", (degree == 0).to(at::kDouble));
    if (labels_.has_value()) {
      at::Tensor hard, soft;
      std::tie(hard, soft) = ops::nnk_loo_error(nbr, w, *labels_, num_classes_);
      add(layer, "loo_error", hard);
      add(layer, "loo_soft_error", soft);
      const double smooth = ops::label_smoothness(nbr, w, *labels_);
      add(layer, "label_smoothness", at::full({1}, smooth, at::kDouble));
    }
    auto prev = previous_.find(layer);
    if (prev != previous_.end() && prev->second.neighbors.size(0) == n) {
      add(layer, "epoch_overlap",
          std::get<0>(ops::neighborhood_overlap(nbr, w, prev->second.neighbors,
                                                prev->second.weights)));
    }
    if (prev_layer != nullptr) {
      add(layer, "layer_overlap",
          std::get<0>(ops::neighborhood_overlap(nbr, w, prev_layer->neighbors,
                                                prev_layer->weights)));
    }
    current[layer] = {nbr, w};
    prev_layer = &current[layer];
  }
  previous_ = std::move(current);
  history_.insert(history_.end(), rows.begin(), rows.end());
  return rows;
}

std::string GeometryTracker::to_json() const {
  std::ostringstream os;
  os << "{\n  \"options\": {\"k\": " << options_.k << ", \"kernel\": " << quoted(options_.kernel)
     << ", \"reduce\": " << quoted(options_.reduce) << ", \"alpha\": " << number(options_.alpha)
     << ", \"bins\": " << options_.bins << "},\n  \"layers\": [";
  for (size_t i = 0; i < layers_.size(); ++i) os << (i ? ", " : "") << quoted(layers_[i]);
  os << "],\n  \"history\": [";
  for (size_t i = 0; i < history_.size(); ++i) {
    const HistoryRow& r = history_[i];
    const Summary& s = r.summary;
    os << (i ? ",\n    " : "\n    ") << "{\"epoch\": " << r.epoch << ", \"layer\": " << quoted(r.layer)
       << ", \"metric\": " << quoted(r.metric) << ", \"count\": " << s.count
       << ", \"mean\": " << number(s.mean) << ", \"median\": " << number(s.median)
       << ", \"q25\": " << number(s.q25) << ", \"q75\": " << number(s.q75)
       << ", \"min\": " << number(s.min) << ", \"max\": " << number(s.max) << "}";
  }
  os << "\n  ]\n}\n";
  return os.str();
}

std::string GeometryTracker::to_csv() const {
  std::ostringstream os;
  os << "epoch,layer,metric,count,mean,median,q25,q75,min,max\n";
  auto num = [](double v) { return std::isfinite(v) ? number(v) : std::string(""); };
  for (const HistoryRow& r : history_) {
    const Summary& s = r.summary;
    os << r.epoch << "," << r.layer << "," << r.metric << "," << s.count << "," << num(s.mean)
       << "," << num(s.median) << "," << num(s.q25) << "," << num(s.q75) << "," << num(s.min)
       << "," << num(s.max) << "\n";
  }
  return os.str();
}

} // namespace hooks
} // namespace torch_geometry
