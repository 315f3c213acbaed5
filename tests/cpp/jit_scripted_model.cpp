// TorchScript round trip (a ctest test): loads the model that tests/cpp/make_scripted_model.py
// scripted (its forward calls torch.ops.torch_geometry.*) with torch::jit::load, runs it on
// the inputs Python saved and compares every output with Python's.
// Usage: torch_geometry_jit_test DIR   (DIR holds model.pt and expected.pt)
// Without DIR it fails: a build that cannot script the model must not pass this test.
#include <torch/script.h>

#include <iostream>
#include <string>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "FAIL: no scripted model to load. Configure with "
                 "-DTORCH_GEOMETRY_PYTHON=/path/to/python (a python with torch and "
                 "torch_geometry) so that ctest scripts the model this test runs\n";
    return 1;
  }
  const std::string dir = argv[1];
  try {
    torch::jit::script::Module model = torch::jit::load(dir + "/model.pt");
    torch::jit::script::Module expected = torch::jit::load(dir + "/expected.pt");
    const int64_t n = expected.attr("num_outputs").toInt();
    c10::IValue out = model.forward({expected.attr("x").toTensor(),
                                     expected.attr("labels").toTensor(),
                                     expected.attr("maps").toTensor()});
    const auto& got = out.toTuple()->elements();
    if (static_cast<int64_t>(got.size()) != n) {
      std::cerr << "FAIL: " << got.size() << " outputs, Python had " << n << "\n";
      return 1;
    }
    int failures = 0;
    for (int64_t i = 0; i < n; ++i) {
      const at::Tensor g = got[i].toTensor();
      const at::Tensor e = expected.attr("out_" + std::to_string(i)).toTensor();
      bool ok = g.sizes() == e.sizes() && g.scalar_type() == e.scalar_type();
      if (ok) {
        ok = at::isFloatingType(e.scalar_type())
                 ? at::allclose(g, e, /*rtol=*/1e-9, /*atol=*/1e-12, /*equal_nan=*/true)
                 : at::equal(g, e);
      }
      std::cout << (ok ? "ok   " : "FAIL ") << "output " << i << " " << g.sizes() << " "
                << g.scalar_type() << "\n";
      failures += ok ? 0 : 1;
    }
    if (failures) {
      std::cerr << failures << " of " << n << " outputs differ from Python's\n";
      return 1;
    }
    std::cout << "all " << n << " outputs equal to Python's\n";
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
