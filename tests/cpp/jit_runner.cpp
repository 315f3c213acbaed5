// Loads a TorchScript module whose forward() calls torch.ops.torch_geometry.* and writes
// the returned tuple of tensors, pickled (torch.load reads it), so that a test can compare
// every tensor with Python's result.
// Usage: torch_geometry_jit_runner MODULE.pt OUT.pt
#include <torch/script.h>

#include <fstream>
#include <iostream>

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: " << argv[0] << " MODULE.pt OUT.pt\n";
    return 2;
  }
  try {
    torch::jit::script::Module module = torch::jit::load(argv[1]);
    c10::IValue out = module.forward({});
    const std::vector<char> bytes = torch::jit::pickle_save(out);
    std::ofstream file(argv[2], std::ios::binary);
    file.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!file) {
      std::cerr << "error: cannot write " << argv[2] << "\n";
      return 1;
    }
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
