// Replays activations saved by Python through the C++ GeometryTracker and prints its
// history as JSON (to_json) on stdout: the C++ half of tests/python/test_cpp_parity.py.
//
// Usage: torch_geometry_tracker_replay ACTIVATIONS.pt
// ACTIVATIONS.pt is a scripted module with attributes layers (List[str]), epochs (List[int]),
// k (int), kernel (str), reduce (str), alpha (float), bins (int), has_labels (bool) and
// buffers labels [N] and act_<e>_<l> (epoch index e, layer index l) [N, ...].
#include <torch/script.h>

#include <iostream>
#include <map>
#include <string>
#include <vector>

#include <torch_geometry/hooks/geometry_tracker.h>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: " << argv[0] << " ACTIVATIONS.pt\n";
    return 2;
  }
  namespace hk = torch_geometry::hooks;
  try {
    torch::jit::script::Module saved = torch::jit::load(argv[1]);
    std::vector<std::string> layers;
    const auto layer_list = saved.attr("layers").toList();
    for (size_t i = 0; i < layer_list.size(); ++i) layers.push_back(layer_list.get(i).toStringRef());
    std::vector<int64_t> epochs;
    const auto epoch_list = saved.attr("epochs").toList();
    for (size_t i = 0; i < epoch_list.size(); ++i) epochs.push_back(epoch_list.get(i).toInt());
    hk::TrackerOptions options;
    options.k = saved.attr("k").toInt();
    options.kernel = saved.attr("kernel").toStringRef();
    options.reduce = saved.attr("reduce").toStringRef();
    options.alpha = saved.attr("alpha").toDouble();
    options.bins = saved.attr("bins").toInt();
    hk::GeometryTracker tracker(layers, options);
    if (saved.attr("has_labels").toBool()) tracker.set_labels(saved.attr("labels").toTensor());
    for (size_t e = 0; e < epochs.size(); ++e) {
      std::map<std::string, at::Tensor> acts;
      for (size_t l = 0; l < layers.size(); ++l) {
        acts[layers[l]] =
            saved.attr("act_" + std::to_string(e) + "_" + std::to_string(l)).toTensor();
      }
      tracker.step(epochs[e], acts);
    }
    std::cout << tracker.to_json();
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
