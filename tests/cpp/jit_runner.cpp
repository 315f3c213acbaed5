// Loads a TorchScript module whose forward() calls torch.ops.torch_geometry.* and prints
// the sum of each returned tensor, one per line, so a test can compare with Python.
// Usage: torch_geometry_jit_runner MODULE.pt
#include <torch/script.h>

#include <iomanip>
#include <iostream>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: " << argv[0] << " MODULE.pt\n";
    return 2;
  }
  try {
    torch::jit::script::Module module = torch::jit::load(argv[1]);
    c10::IValue out = module.forward({});
    std::cout << std::setprecision(17);
    for (const auto& v : out.toTuple()->elements()) {
      std::cout << v.toTensor().to(torch::kDouble).sum().item<double>() << "\n";
    }
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
