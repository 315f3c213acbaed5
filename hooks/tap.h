// Activation capture for LibTorch models.
//
// torch::nn::Module has no forward hooks in C++, so a model says itself where its
// activations may be read: a `Tap` is an identity module, placed in a Sequential or called
// in forward(), that records its input under its name while a probe recording is active on
// the calling thread, and does nothing otherwise (one thread-local pointer test per call,
// so taps can stay in the model for training and deployment). Why not the alternatives:
//   * wrapping layers in a recording decorator changes the model's module tree and its
//     parameter names, so checkpoints stop matching;
//   * returning intermediate outputs from forward() changes its signature for every caller;
//   * a global registry would record during training too and is not thread-safe.
// A `ProbeRecording` is an RAII scope: while it lives, taps run on its thread record into
// it (recordings nest; the innermost one receives). Taps called on other threads (e.g. by
// a data-parallel replica) do not record. Recorded tensors are detached copies (the probe
// pass keeps no autograd graph, and later in-place layers do not change them) on the device
// the model produced them on: the tracker and the callbacks build their graphs there, and
// only small results come back to the host.
//
//   struct Net : torch::nn::Module {
//     torch::nn::Sequential features{
//         torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 16, 3).padding(1)),
//         torch::nn::ReLU(), torch_geometry::hooks::Tap("conv1"), ...};
//   };
//   auto acts = torch_geometry::hooks::run_probe(net, probe_x);   // {"conv1": [N,16,28,28]}
//   tracker.step(epoch, acts);
#pragma once

#include <torch/torch.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

namespace torch_geometry {
namespace hooks {

// While alive, receives what the taps of its thread record: name -> tensors in call order
// (one per forward call, e.g. per batch). Not copyable or movable (taps find it by address).
class ProbeRecording {
 public:
  ProbeRecording();
  ~ProbeRecording();
  ProbeRecording(const ProbeRecording&) = delete;
  ProbeRecording& operator=(const ProbeRecording&) = delete;

  // The innermost recording alive on the calling thread, or nullptr.
  static ProbeRecording* current();

  // Appends a copy of `x` (any shape, dtype and device) under `name`, detached, on x's
  // device.
  void record(const std::string& name, const at::Tensor& x);

  // The recorded chunks, by name.
  const std::map<std::string, std::vector<at::Tensor>>& chunks() const { return chunks_; }

  // Concatenates each name's chunks along dim 0 (e.g. batches -> [N, ...]; chunks must
  // agree on the other dims) and clears the recording. A name recorded with 0-dim tensors
  // gets them stacked ([calls]).
  std::map<std::string, at::Tensor> collect();

 private:
  std::map<std::string, std::vector<at::Tensor>> chunks_;
  ProbeRecording* previous_;
};

// Identity module: forward(x) returns x unchanged (same tensor, autograd intact) and, while
// a ProbeRecording is active on the thread, records x under name(). No parameters, no
// buffers. Use through the TORCH_MODULE holder: `Tap("conv1")`.
class TapImpl : public torch::nn::Cloneable<TapImpl> {
 public:
  explicit TapImpl(std::string name);
  void reset() override {}
  at::Tensor forward(const at::Tensor& x);
  const std::string& name() const { return name_; }
  void pretty_print(std::ostream& stream) const override;

 private:
  std::string name_;
};
TORCH_MODULE(Tap);

// Runs a probe pass: `inputs` [N, ...] (on any device) in batches of `batch_size` along
// dim 0, each moved to the model's device and passed to `forward`, with the model in eval
// mode and under NoGradGuard. The model's device and floating dtype are read at each call
// from its first floating parameter (or buffer; CPU if it has none), so a model moved with
// ->to(device) or ->to(at::kDouble) after the probe set was made keeps working: floating
// inputs take that dtype, integer inputs (token ids) keep theirs. Returns what the model's
// taps recorded, name -> [N, ...] on the model's device (the dtype the layer produced). The
// model's training mode is restored afterwards, exceptions included. `forward` is how the
// model is called (nn::Module has no virtual forward); the overload below passes
// `model->forward`.
std::map<std::string, at::Tensor> run_probe(
    torch::nn::Module& model,
    const std::function<void(const at::Tensor&)>& forward,
    const at::Tensor& inputs,
    int64_t batch_size = 500);

// Same, for a module holder or shared_ptr whose forward takes one tensor:
// `run_probe(net, probe_x)`.
template <typename ModulePtr>
std::map<std::string, at::Tensor> run_probe(
    ModulePtr& model,
    const at::Tensor& inputs,
    int64_t batch_size = 500) {
  return run_probe(
      *model, [&model](const at::Tensor& x) { model->forward(x); }, inputs, batch_size);
}

} // namespace hooks
} // namespace torch_geometry
