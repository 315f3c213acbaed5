#include "native_cuda.h"

#include <torch/library.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace torch_geometry {
namespace generic {

namespace {

bool env_enabled() {
  const char* v = std::getenv("TORCH_GEOMETRY_NATIVE_CUDA");
  return v != nullptr && std::strcmp(v, "1") == 0;
}

// Set once from the environment, then by _set_native_cuda.
std::atomic<bool>& enabled_flag() {
  static std::atomic<bool> flag(native_cuda_compiled() && env_enabled());
  return flag;
}

void set_native_cuda(bool enabled) {
  TORCH_CHECK(
      !enabled || native_cuda_compiled(),
      "_set_native_cuda: this build of torch_geometry has no native CUDA kernels (they are "
      "compiled by the CMake build with -DTORCH_GEOMETRY_CUDA=ON); CUDA tensors use the "
      "device-generic kernels");
  enabled_flag().store(enabled);
}

bool get_native_cuda() {
  return native_cuda_enabled();
}

} // namespace

bool native_cuda_compiled() {
#ifdef TORCH_GEOMETRY_WITH_NATIVE_CUDA
  return true;
#else
  return false;
#endif
}

bool native_cuda_enabled() {
  return enabled_flag().load();
}

bool use_native_cuda(const at::Tensor& x) {
  return native_cuda_enabled() && x.is_cuda() && x.scalar_type() == at::kFloat;
}

TORCH_LIBRARY_FRAGMENT(torch_geometry, m) {
  m.def("_set_native_cuda(bool enabled) -> ()", &set_native_cuda);
  m.def("_native_cuda_enabled() -> bool", &get_native_cuda);
}

} // namespace generic
} // namespace torch_geometry
