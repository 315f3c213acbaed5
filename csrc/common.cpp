#include "common.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

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

SymmetrizeMode parse_symmetrize(c10::string_view mode, const char* op) {
  if (mode == "none") {
    return SymmetrizeMode::None;
  }
  if (mode == "max") {
    return SymmetrizeMode::Max;
  }
  if (mode == "mean") {
    return SymmetrizeMode::Mean;
  }
  if (mode == "min_error") {
    return SymmetrizeMode::MinError;
  }
  TORCH_CHECK(
      false,
      op,
      ": mode should be \"none\", \"max\", \"mean\" or \"min_error\", got \"",
      std::string(mode.data(), mode.size()),
      "\"");
}

Reduce parse_reduce(c10::string_view reduce, const char* op) {
  if (reduce == "flatten") {
    return Reduce::Flatten;
  }
  if (reduce == "avgpool") {
    return Reduce::AvgPool;
  }
  TORCH_CHECK(
      false,
      op,
      ": reduce should be \"flatten\" or \"avgpool\", got \"",
      std::string(reduce.data(), reduce.size()),
      "\"");
}

void check_no_grad(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(
      !t.requires_grad(),
      op,
      ": ",
      name,
      " requires grad, but torch_geometry operators are not differentiable: pass ",
      name,
      ".detach()");
}

Labels check_labels(
    const at::Tensor& labels,
    int64_t n,
    const char* op,
    int64_t num_classes) {
  TORCH_CHECK(
      labels.dim() == 1,
      op,
      ": labels should be a 1-D tensor [N], got shape ",
      labels.sizes());
  const auto dtype = labels.scalar_type();
  TORCH_CHECK(
      at::isIntegralType(dtype, /*includeBool=*/false),
      op,
      ": labels should be integer class indices (int64, int32, ...), got ",
      dtype);
  TORCH_CHECK(
      n < 0 || labels.size(0) == n,
      op,
      ": labels should have shape [N] = [",
      n,
      "] (one per node), got ",
      labels.sizes());
  TORCH_CHECK(labels.size(0) >= 1, op, ": labels are empty (N = 0)");
  TORCH_CHECK(
      num_classes < 0 || (num_classes >= 1 && num_classes <= kMaxClasses),
      op,
      ": num_classes should be in [1, ",
      kMaxClasses,
      "], got ",
      num_classes);
  at::Tensor y = labels.detach().to(at::kCPU, at::kLong).contiguous();
  const int64_t* p = y.data_ptr<int64_t>();
  int64_t lo = p[0];
  int64_t hi = p[0];
  for (int64_t i = 1; i < y.numel(); ++i) {
    lo = std::min(lo, p[i]);
    hi = std::max(hi, p[i]);
  }
  TORCH_CHECK(lo >= 0, op, ": labels should be >= 0, got ", lo);
  TORCH_CHECK(
      hi < kMaxClasses,
      op,
      ": labels should be class indices < ",
      kMaxClasses,
      ", got ",
      hi);
  TORCH_CHECK(
      num_classes < 0 || hi < num_classes,
      op,
      ": labels should be < num_classes = ",
      num_classes,
      ", got ",
      hi);
  return Labels{y, num_classes < 0 ? hi + 1 : num_classes};
}

bool all_finite(const at::Tensor& x) {
  if (!x.device().is_cpu() || (x.scalar_type() != at::kFloat && x.scalar_type() != at::kDouble)) {
    return at::isfinite(x).all().item<bool>();
  }
  const at::Tensor xc = x.contiguous();
  const int64_t total = xc.numel();
  constexpr int64_t kChunk = 1 << 16;
  const int64_t chunks = (total + kChunk - 1) / kChunk;
  std::vector<char> ok(static_cast<size_t>(chunks), 1);
  AT_DISPATCH_FLOATING_TYPES(xc.scalar_type(), "all_finite", [&] {
    const scalar_t* p = xc.data_ptr<scalar_t>();
    at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t lo = c * kChunk, hi = std::min(total, lo + kChunk);
        // v * 0 is 0 for a finite v and NaN for NaN or +-Inf; 8 lanes keep it vectorised.
        scalar_t acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        int64_t j = lo;
        for (; j + 8 <= hi; j += 8) {
          for (int l = 0; l < 8; ++l) {
            acc[l] += p[j + l] * scalar_t(0);
          }
        }
        scalar_t s = 0;
        for (; j < hi; ++j) {
          s += p[j] * scalar_t(0);
        }
        for (int l = 0; l < 8; ++l) {
          s += acc[l];
        }
        ok[c] = s == scalar_t(0);
      }
    });
  });
  return std::all_of(ok.begin(), ok.end(), [](char v) { return v != 0; });
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
  check_no_grad(x, op, "x");
  TORCH_CHECK(x.size(0) >= 1, op, ": x is empty (N = 0 points)");
  TORCH_CHECK(x.size(1) >= 1, op, ": x has no features (D = 0)");
  TORCH_CHECK(all_finite(x), op, ": x should hold finite values, got NaN or Inf");
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
