#include "tap.h"

#include <utility>

namespace torch_geometry {
namespace hooks {

namespace {

thread_local ProbeRecording* g_current = nullptr;

// Puts the model back in its training mode on every way out of the probe pass.
struct TrainingModeGuard {
  torch::nn::Module& model;
  bool was_training;
  explicit TrainingModeGuard(torch::nn::Module& m) : model(m), was_training(m.is_training()) {}
  ~TrainingModeGuard() { model.train(was_training); }
};

// Where the model's tensors are and their floating dtype (none if it has no floating
// tensor): what each probe batch is converted to.
struct ModelPlacement {
  at::Device device = at::Device(at::kCPU);
  c10::optional<at::ScalarType> dtype;
};

ModelPlacement model_placement(const torch::nn::Module& model) {
  std::vector<at::Tensor> tensors = model.parameters();
  for (auto& b : model.buffers()) tensors.push_back(b);
  ModelPlacement out;
  for (const auto& t : tensors) {
    if (at::isFloatingType(t.scalar_type())) {
      out.device = t.device();
      out.dtype = t.scalar_type();
      return out;
    }
  }
  if (!tensors.empty()) out.device = tensors.front().device();
  return out;
}

} // namespace

ProbeRecording::ProbeRecording() : previous_(g_current) { g_current = this; }

ProbeRecording::~ProbeRecording() { g_current = previous_; }

ProbeRecording* ProbeRecording::current() { return g_current; }

void ProbeRecording::record(const std::string& name, const at::Tensor& x) {
  // A copy: a later in-place layer (ReLU with inplace) would change the tap's input.
  chunks_[name].push_back(x.detach().clone());
}

std::map<std::string, at::Tensor> ProbeRecording::collect() {
  std::map<std::string, at::Tensor> out;
  for (auto& kv : chunks_) {
    if (kv.second.empty()) continue;
    out[kv.first] = kv.second.front().dim() == 0 ? at::stack(kv.second) : at::cat(kv.second);
  }
  chunks_.clear();
  return out;
}

TapImpl::TapImpl(std::string name) : name_(std::move(name)) {
  TORCH_CHECK(!name_.empty(), "Tap: name should not be empty");
}

at::Tensor TapImpl::forward(const at::Tensor& x) {
  if (ProbeRecording* rec = ProbeRecording::current()) rec->record(name_, x);
  return x;
}

void TapImpl::pretty_print(std::ostream& stream) const {
  stream << "torch_geometry::Tap(" << name_ << ")";
}

std::map<std::string, at::Tensor> run_probe(
    torch::nn::Module& model,
    const std::function<void(const at::Tensor&)>& forward,
    const at::Tensor& inputs,
    int64_t batch_size) {
  TORCH_CHECK(batch_size >= 1, "run_probe: batch_size should be >= 1, got ", batch_size);
  TORCH_CHECK(inputs.dim() >= 1 && inputs.size(0) > 0,
              "run_probe: inputs should be [N, ...] with N > 0, got shape ", inputs.sizes());
  TrainingModeGuard mode(model);
  model.eval();
  torch::NoGradGuard no_grad;
  const ModelPlacement place = model_placement(model);
  ProbeRecording recording;
  const int64_t n = inputs.size(0);
  for (int64_t s = 0; s < n; s += batch_size) {
    at::Tensor batch = inputs.slice(/*dim=*/0, s, std::min(n, s + batch_size));
    if (place.dtype.has_value() && at::isFloatingType(batch.scalar_type())) {
      batch = batch.to(place.device, *place.dtype);
    } else {
      batch = batch.to(place.device);
    }
    forward(batch);
  }
  return recording.collect();
}

} // namespace hooks
} // namespace torch_geometry
