// Switch between the device-generic kernels and the native CUDA kernels (csrc/cuda/).
//
// The native kernels are compiled only in a CUDA build (CMake option TORCH_GEOMETRY_CUDA,
// which defines TORCH_GEOMETRY_WITH_NATIVE_CUDA) and are OFF by default: they have not yet
// been checked on a GPU against the CPU kernels. CUDA tensors get the generic path unless
// the environment sets TORCH_GEOMETRY_NATIVE_CUDA=1 or a caller enables them with
// torch.ops.torch_geometry._set_native_cuda(True).
#pragma once

#include <ATen/ATen.h>

namespace torch_geometry {
namespace generic {

// Whether this build carries the native CUDA kernels.
bool native_cuda_compiled();

// Whether the native kernels are to be used for CUDA tensors (compiled and enabled).
bool native_cuda_enabled();

// Whether a tensor should take a native kernel: enabled, on CUDA, float32 (the native
// kernels' dtype; float64 stays on the generic path).
bool use_native_cuda(const at::Tensor& x);

} // namespace generic
} // namespace torch_geometry
