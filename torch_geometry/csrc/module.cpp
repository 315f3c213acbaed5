// The Python extension module torch_geometry._C. Importing it runs the operator
// registrations (TORCH_LIBRARY_FRAGMENT / TORCH_LIBRARY_IMPL) compiled into it; the
// C++ training state of hooks/ is bound here as it lands.
#include <torch/extension.h>

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "torch_geometry C++ core: operators are in torch.ops.torch_geometry";
  m.attr("__version__") = "0.1.0";
}
