#include "common.h"

#include <cmath>

namespace torch_geometry {

Kernel parse_kernel(c10::string_view kernel, const char* op) {
  if (kernel == "cosine") {
    return Kernel::Cosine;
  }
  if (kernel == "gaussian") {
    return Kernel::Gaussian;
  }
  TORCH_CHECK(
      false,
      op,
      ": kernel should be \"cosine\" or \"gaussian\", got \"",
      std::string(kernel.data(), kernel.size()),
      "\"");
}

SigmaMode parse_sigma(
    Kernel kernel,
    const c10::optional<double>& sigma,
    c10::string_view sigma_mode,
    const char* op) {
  const bool mode_ok = sigma_mode == "mean" || sigma_mode == "local";
  TORCH_CHECK(
      mode_ok,
      op,
      ": sigma_mode should be \"mean\" or \"local\", got \"",
      std::string(sigma_mode.data(), sigma_mode.size()),
      "\"");
  if (sigma.has_value()) {
    TORCH_CHECK(
        kernel == Kernel::Gaussian,
        op,
        ": sigma applies to the gaussian kernel only, got sigma=",
        *sigma,
        " with the cosine kernel");
    TORCH_CHECK(
        std::isfinite(*sigma) && *sigma > 0,
        op,
        ": sigma should be a finite number > 0, got ",
        *sigma);
    return SigmaMode::Fixed;
  }
  return sigma_mode == "local" ? SigmaMode::Local : SigmaMode::Mean;
}

void check_points(const at::Tensor& x, const char* op) {
  TORCH_CHECK(
      x.dim() == 2,
      op,
      ": x should be a 2-D tensor [N, D], got ",
      x.dim(),
      "-D with shape ",
      x.sizes());
  TORCH_CHECK(
      x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
      op,
      ": x should be float32 or float64, got ",
      x.scalar_type());
  TORCH_CHECK(x.size(0) >= 1, op, ": x is empty (N = 0 points)");
  TORCH_CHECK(x.size(1) >= 1, op, ": x has no features (D = 0)");
  TORCH_CHECK(
      at::isfinite(x).all().item<bool>(),
      op,
      ": x should hold finite values, got NaN or Inf");
}

void check_k(int64_t k, int64_t n, const char* op) {
  TORCH_CHECK(k >= 1, op, ": k should be >= 1, got ", k);
  TORCH_CHECK(
      k < n,
      op,
      ": k should be smaller than the number of points (each point has N - 1 = ",
      n - 1,
      " others), got k=",
      k,
      " with N=",
      n);
}

} // namespace torch_geometry
