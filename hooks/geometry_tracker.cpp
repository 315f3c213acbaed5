#include "geometry_tracker.h"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <limits>
#include <set>
#include <sstream>

#include "../csrc/common.h"
#include "../csrc/graph_input.h"
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
  // Stays on the activations' device: the graph is built there. float16/bfloat16 (AMP)
  // become float32 before the pooling, so neither the mean nor the graph runs in half
  // precision.
  at::Tensor a = activations.detach();
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
  TORCH_CHECK(options_.candidate_metric == "kernel" || options_.candidate_metric == "euclidean",
              "GeometryTracker: candidate_metric should be \"kernel\" or \"euclidean\", got \"",
              options_.candidate_metric, "\"");
  parse_reduce(options_.reduce, "GeometryTracker");
  TORCH_CHECK(options_.alpha > 0 && options_.alpha < 1,
              "GeometryTracker: alpha should be in (0, 1), got ", options_.alpha);
  TORCH_CHECK(options_.bins >= 1, "GeometryTracker: bins should be >= 1, got ", options_.bins);
}

void GeometryTracker::set_labels(const at::Tensor& labels) {
  const Labels lab = check_labels(labels, -1, "GeometryTracker");
  std::lock_guard<std::mutex> lock(mutex_);
  num_classes_ = lab.num_classes;
  labels_ = lab.y;
}

at::Tensor GeometryTracker::labels_on(const at::Tensor& labels, const at::Device& device) const {
  if (labels.device() == device) return labels;
  std::lock_guard<std::mutex> lock(mutex_);
  if (!device_labels_source_.is_same(labels)) {  // new labels: the old copies are stale
    device_labels_.clear();
    device_labels_source_ = labels;
  }
  for (const auto& copy : device_labels_) {
    if (copy.device() == device) return copy;
  }
  device_labels_.push_back(labels.to(device));
  return device_labels_.back();
}

std::vector<HistoryRow> GeometryTracker::step(
    int64_t epoch,
    const std::map<std::string, at::Tensor>& activations) {
  return step(epoch, activations, {});
}

std::vector<HistoryRow> GeometryTracker::step(
    int64_t epoch,
    const std::map<std::string, at::Tensor>& activations,
    const std::map<std::string, Graph>& graphs) {
  c10::optional<at::Tensor> labels;
  int64_t num_classes = 0;
  std::map<std::string, LayerGraph> previous;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (last_epoch_.has_value()) {
      if (epoch == *last_epoch_) return rows_of_locked(epoch);
      TORCH_CHECK(epoch > *last_epoch_, "GeometryTracker.step: epoch ", epoch,
                  " comes before the last recorded epoch ", *last_epoch_,
                  "; epochs must increase (after resuming from an older checkpoint, load the "
                  "tracker's state_dict() saved with it)");
    }
    labels = labels_;
    num_classes = num_classes_;
    previous = previous_;
  }
  for (const auto& kv : activations) {
    bool known = false;
    for (const auto& l : layers_) known = known || l == kv.first;
    TORCH_CHECK(known, "GeometryTracker.step: \"", kv.first, "\" is not a tracked layer");
  }
  for (const auto& kv : graphs) {
    TORCH_CHECK(activations.count(kv.first), "GeometryTracker.step: a graph is given for \"",
                kv.first, "\", which has no activations (or is not a tracked layer)");
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
  if (labels.has_value()) {
    TORCH_CHECK(labels->size(0) == n, "GeometryTracker.step: ", labels->size(0),
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
    const at::Tensor y = labels.has_value() ? labels_on(*labels, x.device()) : at::Tensor();
    TORCH_CHECK(all_finite(x), "GeometryTracker.step: layer \"", layer,
                "\" has non-finite activations at epoch ", epoch);
    at::Tensor nbr, w, err;
    auto given = graphs.find(layer);
    if (given == graphs.end()) {
      std::tie(nbr, w, err) = ops::nnk_graph(x, options_.k, options_.kernel, c10::nullopt,
                                             kDefaultSigmaMode, c10::nullopt,
                                             kDefaultThreshold, options_.candidate_metric);
    } else {
      std::tie(nbr, w, err) = given->second;
      const std::string who = "GeometryTracker.step (graph of layer \"" + layer + "\")";
      TORCH_CHECK(nbr.dim() == 2 && nbr.size(0) == x.size(0) && nbr.size(1) == options_.k,
                  who, ": neighbors should be [N, k] = [", x.size(0), ", ", options_.k,
                  "], got shape ", nbr.sizes());
      check_directed_graph(nbr, w, err, who.c_str());
      nbr = nbr.to(x.device());
      w = w.to(x.device(), x.scalar_type());
      err = err.to(x.device(), x.scalar_type());
    }
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
    if (labels.has_value()) {
      at::Tensor hard, soft;
      std::tie(hard, soft) = ops::nnk_loo_error(nbr, w, y, num_classes);
      add(layer, "loo_error", hard);
      add(layer, "loo_soft_error", soft);
      const double smooth = ops::label_smoothness(nbr, w, y);
      add(layer, "label_smoothness", at::full({1}, smooth, at::kDouble));
    }
    auto prev = previous.find(layer);
    if (prev != previous.end() && prev->second.neighbors.size(0) == n) {
      // The previous graph is on this graph's device unless the model moved since, or it
      // came from a checkpoint (kept on the CPU): [N, k] is moved, never the activations.
      add(layer, "epoch_overlap",
          std::get<0>(ops::neighborhood_overlap(
              nbr, w, prev->second.neighbors.to(nbr.device()),
              prev->second.weights.to(w.device(), w.scalar_type()))));
    }
    if (prev_layer != nullptr) {
      // Layers of one model may sit on different devices (pipeline parallelism).
      add(layer, "layer_overlap",
          std::get<0>(ops::neighborhood_overlap(
              nbr, w, prev_layer->neighbors.to(nbr.device()),
              prev_layer->weights.to(w.device(), w.scalar_type()))));
    }
    current[layer] = {nbr, w};
    prev_layer = &current[layer];
  }
  std::lock_guard<std::mutex> lock(mutex_);
  // Another thread may have recorded this epoch, or a later one, while the graphs were built.
  if (last_epoch_.has_value()) {
    if (epoch == *last_epoch_) return rows_of_locked(epoch);
    TORCH_CHECK(epoch > *last_epoch_, "GeometryTracker.step: epoch ", last_epoch_.value(),
                " was recorded while epoch ", epoch, " was being measured; epochs must increase");
  }
  previous_ = std::move(current);
  history_.insert(history_.end(), rows.begin(), rows.end());
  last_epoch_ = epoch;
  return rows;
}

std::vector<HistoryRow> GeometryTracker::rows_of_locked(int64_t epoch) const {
  std::vector<HistoryRow> rows;
  for (const auto& r : history_) {
    if (r.epoch == epoch) rows.push_back(r);
  }
  return rows;
}

std::vector<HistoryRow> GeometryTracker::history() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return history_;
}

c10::optional<int64_t> GeometryTracker::last_epoch() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return last_epoch_;
}

namespace {

at::Tensor names_to_bytes(const std::vector<std::string>& names) {
  std::string joined;
  for (size_t i = 0; i < names.size(); ++i) joined += (i ? "\n" : "") + names[i];
  at::Tensor t = at::empty({static_cast<int64_t>(joined.size())}, at::kByte);
  std::copy(joined.begin(), joined.end(), reinterpret_cast<char*>(t.data_ptr<uint8_t>()));
  return t;
}

std::vector<std::string> bytes_to_names(const at::Tensor& bytes, const char* who,
                                        const char* key) {
  TORCH_CHECK(bytes.dim() == 1 && bytes.scalar_type() == at::kByte, who, ": \"", key,
              "\" should be a 1-D uint8 tensor, got ", bytes.scalar_type(), " of shape ",
              bytes.sizes());
  const at::Tensor b = bytes.to(at::kCPU).contiguous();
  const std::string joined(reinterpret_cast<const char*>(b.data_ptr<uint8_t>()),
                           static_cast<size_t>(b.numel()));
  std::vector<std::string> out;
  if (joined.empty()) return out;
  size_t start = 0;
  while (true) {
    const size_t end = joined.find('\n', start);
    out.push_back(joined.substr(start, end == std::string::npos ? std::string::npos : end - start));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return out;
}

} // namespace

std::map<std::string, at::Tensor> GeometryTracker::state_dict() const {
  std::lock_guard<std::mutex> lock(mutex_);
  const int64_t r = static_cast<int64_t>(history_.size());
  const int64_t bins = options_.bins;
  std::vector<std::string> metrics;
  std::map<std::string, int64_t> metric_index;
  at::Tensor epoch = at::empty({r}, at::kLong), layer = at::empty({r}, at::kLong),
             metric = at::empty({r}, at::kLong), count = at::empty({r}, at::kLong),
             stats = at::empty({r, 6}, at::kDouble), edges = at::empty({r, bins + 1}, at::kDouble),
             hist = at::empty({r, bins}, at::kLong);
  for (int64_t i = 0; i < r; ++i) {
    const HistoryRow& row = history_[i];
    auto m = metric_index.find(row.metric);
    if (m == metric_index.end()) {
      m = metric_index.emplace(row.metric, static_cast<int64_t>(metrics.size())).first;
      metrics.push_back(row.metric);
    }
    const auto l = std::find(layers_.begin(), layers_.end(), row.layer) - layers_.begin();
    epoch[i] = row.epoch;
    layer[i] = static_cast<int64_t>(l);
    metric[i] = m->second;
    const Summary& s = row.summary;
    count[i] = s.count;
    stats[i] = at::tensor({s.mean, s.median, s.q25, s.q75, s.min, s.max}, at::kDouble);
    edges[i] = at::tensor(s.bin_edges, at::kDouble);
    hist[i] = at::tensor(s.hist, at::kLong);
  }
  std::map<std::string, at::Tensor> out;
  out["layers"] = names_to_bytes(layers_);
  out["metrics"] = names_to_bytes(metrics);
  out["history.epoch"] = epoch;
  out["history.layer"] = layer;
  out["history.metric"] = metric;
  out["history.count"] = count;
  out["history.stats"] = stats;
  out["history.bin_edges"] = edges;
  out["history.hist"] = hist;
  out["last_epoch"] = last_epoch_.has_value() ? at::full({1}, *last_epoch_, at::kLong)
                                              : at::empty({0}, at::kLong);
  // On the CPU, so that a checkpoint loads on any machine ([N, k] each, once per save).
  for (const auto& kv : previous_) {
    out["previous." + kv.first + ".neighbors"] = kv.second.neighbors.to(at::kCPU).clone();
    out["previous." + kv.first + ".weights"] = kv.second.weights.to(at::kCPU).clone();
  }
  return out;
}

void GeometryTracker::load_state_dict(const std::map<std::string, at::Tensor>& state) {
  const char* who = "GeometryTracker.load_state_dict";
  auto get = [&](const std::string& key) -> const at::Tensor& {
    auto it = state.find(key);
    TORCH_CHECK(it != state.end(), who, ": missing key \"", key, "\"");
    TORCH_CHECK(it->second.defined(), who, ": \"", key, "\" is an undefined tensor");
    return it->second;
  };
  auto as = [&](const std::string& key, at::ScalarType dtype, std::vector<int64_t> shape) {
    const at::Tensor& t = get(key);
    TORCH_CHECK(t.scalar_type() == dtype, who, ": \"", key, "\" should be ", dtype, ", got ",
                t.scalar_type());
    TORCH_CHECK(t.sizes() == at::IntArrayRef(shape), who, ": \"", key, "\" should have shape ",
                at::IntArrayRef(shape), ", got ", t.sizes());
    return t.detach().to(at::kCPU).contiguous();
  };
  const std::vector<std::string> layers = bytes_to_names(get("layers"), who, "layers");
  TORCH_CHECK(layers == layers_, who, ": the state tracks layers ", at::ArrayRef<std::string>(layers),
              ", this tracker ", at::ArrayRef<std::string>(layers_));
  const std::vector<std::string> metrics = bytes_to_names(get("metrics"), who, "metrics");
  const int64_t r = get("history.epoch").dim() == 1 ? get("history.epoch").size(0) : -1;
  TORCH_CHECK(r >= 0, who, ": \"history.epoch\" should be 1-D, got shape ",
              get("history.epoch").sizes());
  const int64_t bins = options_.bins;
  const at::Tensor epoch = as("history.epoch", at::kLong, {r});
  const at::Tensor layer = as("history.layer", at::kLong, {r});
  const at::Tensor metric = as("history.metric", at::kLong, {r});
  const at::Tensor count = as("history.count", at::kLong, {r});
  const at::Tensor stats = as("history.stats", at::kDouble, {r, 6});
  const at::Tensor edges = as("history.bin_edges", at::kDouble, {r, bins + 1});
  const at::Tensor hist = as("history.hist", at::kLong, {r, bins});
  const at::Tensor last = get("last_epoch");
  TORCH_CHECK(last.scalar_type() == at::kLong && last.dim() == 1 && last.size(0) <= 1, who,
              ": \"last_epoch\" should be int64 of shape [0] or [1], got ", last.scalar_type(),
              " of shape ", last.sizes());
  TORCH_CHECK((last.size(0) == 1) == (r > 0), who,
              ": \"last_epoch\" should be set exactly when the history has rows");
  c10::optional<int64_t> last_epoch;
  if (last.size(0) == 1) last_epoch = last[0].item<int64_t>();

  std::vector<HistoryRow> history(r);
  const int64_t* ep = epoch.data_ptr<int64_t>();
  const int64_t* ly = layer.data_ptr<int64_t>();
  const int64_t* mt = metric.data_ptr<int64_t>();
  const int64_t* ct = count.data_ptr<int64_t>();
  const double* st = stats.data_ptr<double>();
  const double* ed = edges.data_ptr<double>();
  const int64_t* hs = hist.data_ptr<int64_t>();
  for (int64_t i = 0; i < r; ++i) {
    TORCH_CHECK(ly[i] >= 0 && ly[i] < static_cast<int64_t>(layers_.size()), who,
                ": \"history.layer\" row ", i, " is ", ly[i], ", outside [0, ", layers_.size(), ")");
    TORCH_CHECK(mt[i] >= 0 && mt[i] < static_cast<int64_t>(metrics.size()), who,
                ": \"history.metric\" row ", i, " is ", mt[i], ", outside [0, ", metrics.size(), ")");
    TORCH_CHECK(ct[i] >= 0, who, ": \"history.count\" row ", i, " is negative");
    TORCH_CHECK(ep[i] <= *last_epoch, who, ": row ", i, " has epoch ", ep[i],
                " after \"last_epoch\" ", *last_epoch);
    HistoryRow& row = history[i];
    row.epoch = ep[i];
    row.layer = layers_[ly[i]];
    row.metric = metrics[mt[i]];
    Summary& s = row.summary;
    s.count = ct[i];
    s.mean = st[6 * i];
    s.median = st[6 * i + 1];
    s.q25 = st[6 * i + 2];
    s.q75 = st[6 * i + 3];
    s.min = st[6 * i + 4];
    s.max = st[6 * i + 5];
    s.bin_edges.assign(ed + (bins + 1) * i, ed + (bins + 1) * (i + 1));
    s.hist.assign(hs + bins * i, hs + bins * (i + 1));
  }
  std::map<std::string, LayerGraph> previous;
  int64_t n = -1;
  for (const auto& l : layers_) {
    const std::string key = "previous." + l + ".neighbors";
    if (!state.count(key)) continue;
    const at::Tensor& nbr = get(key);
    const at::Tensor& w = get("previous." + l + ".weights");
    TORCH_CHECK(nbr.scalar_type() == at::kLong && nbr.dim() == 2 && nbr.size(1) == options_.k,
                who, ": \"", key, "\" should be int64 [N, k = ", options_.k, "], got ",
                nbr.scalar_type(), " of shape ", nbr.sizes());
    TORCH_CHECK(at::isFloatingType(w.scalar_type()) && w.sizes() == nbr.sizes(), who,
                ": \"previous.", l, ".weights\" should be floating point of shape ", nbr.sizes(),
                ", got ", w.scalar_type(), " of shape ", w.sizes());
    TORCH_CHECK(n < 0 || nbr.size(0) == n, who, ": the previous graphs have different N");
    n = nbr.size(0);
    TORCH_CHECK(nbr.numel() == 0 ||
                    (nbr.min().item<int64_t>() >= -1 && nbr.max().item<int64_t>() < n),
                who, ": \"", key, "\" should hold indices in [-1, ", n, ")");
    previous[l] = {nbr.detach().to(at::kCPU).clone(), w.detach().to(at::kCPU).clone()};
  }
  std::lock_guard<std::mutex> lock(mutex_);
  if (labels_.has_value() && n >= 0) {
    TORCH_CHECK(labels_->size(0) == n, who, ": the state's graphs have ", n,
                " nodes, the probe set ", labels_->size(0));
  }
  history_ = std::move(history);
  previous_ = std::move(previous);
  last_epoch_ = last_epoch;
}

std::string GeometryTracker::to_json() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::ostringstream os;
  os << "{\n  \"options\": {\"k\": " << options_.k << ", \"kernel\": " << quoted(options_.kernel)
     << ", \"candidate_metric\": " << quoted(options_.candidate_metric)
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
  std::lock_guard<std::mutex> lock(mutex_);
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
