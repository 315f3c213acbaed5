// Shared argument parsing and input checks for the torch_geometry operators.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Optional.h>
#include <c10/util/string_view.h>

#include <string>

namespace torch_geometry {

// The similarity kernels of DESIGN §2. Both give kappa(x, x) = 1 and values in [0, 1].
enum class Kernel {
  Cosine,    // (1 + cos(x, y)) / 2 on unit-normalised rows; distance 1 - cos
  Gaussian,  // exp(-||x - y||^2 / (2 sigma^2)); distance ||x - y||
};

enum class SigmaMode {
  Fixed,  // a number given by the caller
  Mean,   // mean over nodes of (distance to the k-th neighbour) / 3
  Local,  // per query node, (distance to its k-th neighbour) / 3
};

// Parses "cosine" / "gaussian"; `op` names the operator in the error message.
Kernel parse_kernel(c10::string_view kernel, const char* op);

// Resolves the sigma arguments of the Gaussian kernel: a number wins (it must be finite
// and > 0); otherwise `sigma_mode` ("mean" or "local"). For the cosine kernel a number is
// refused, since it would be silently ignored.
SigmaMode parse_sigma(
    Kernel kernel,
    const c10::optional<double>& sigma,
    c10::string_view sigma_mode,
    const char* op);

// Whether every value of x is finite. For float32/float64 CPU tensors it streams over x
// (at::isfinite(x).all() materialises |x| and two bool tensors: ~280 MiB at N = 60,000,
// D = 784); other tensors fall back to at::isfinite.
bool all_finite(const at::Tensor& x);

// Checks a point set: 2-D, floating (float32/float64), N >= 1, D >= 1, every value finite.
void check_points(const at::Tensor& x, const char* op);

// Checks 1 <= k < N (k is refused, not clamped, when there are not k other points).
void check_k(int64_t k, int64_t n, const char* op);

} // namespace torch_geometry
