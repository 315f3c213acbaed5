#include "summary.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace torch_geometry {
namespace hooks {

namespace {

double quantile_sorted(const std::vector<double>& v, double q) {
  const double pos = q * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, v.size() - 1);
  const double frac = pos - static_cast<double>(lo);
  const double gap = v[hi] - v[lo];
  // gap overflows when the two have opposite signs near DBL_MAX (and inf * 0 is NaN).
  if (!std::isfinite(gap)) {
    return frac == 0.0 ? v[lo] : v[lo] * (1.0 - frac) + v[hi] * frac;
  }
  return v[lo] + gap * frac;
}

} // namespace

Summary summarize(const at::Tensor& values, int64_t bins, const c10::optional<at::Tensor>& include) {
  TORCH_CHECK(bins >= 1, "summarize: bins should be >= 1, got ", bins);
  TORCH_CHECK(!values.is_complex(), "summarize: values should be real, got ", values.scalar_type());
  const at::Tensor flat = values.detach().to(at::kCPU, at::kDouble).reshape({-1}).contiguous();
  const double* p = flat.data_ptr<double>();
  at::Tensor keep;
  if (include.has_value() && include->defined()) {
    TORCH_CHECK(include->numel() == flat.numel(), "summarize: include should have ", flat.numel(),
                " elements like values, got ", include->numel());
    keep = include->to(at::kCPU, at::kBool).reshape({-1}).contiguous();
  }
  const bool* k = keep.defined() ? keep.data_ptr<bool>() : nullptr;
  std::vector<double> v;
  v.reserve(flat.numel());
  for (int64_t i = 0; i < flat.numel(); ++i) {
    if (std::isfinite(p[i]) && (k == nullptr || k[i])) v.push_back(p[i]);
  }
  Summary s;
  s.count = static_cast<int64_t>(v.size());
  s.hist.assign(bins, 0);
  if (v.empty()) {
    const double nan = std::numeric_limits<double>::quiet_NaN();
    s.mean = s.median = s.q25 = s.q75 = s.min = s.max = nan;
    s.bin_edges.assign(bins + 1, nan);
    return s;
  }
  std::sort(v.begin(), v.end());
  // Sums and ranges are taken relative to a power of two near the largest magnitude (exact,
  // so ordinary values give the same bits): a sum of values near DBL_MAX, or a range
  // max - min above DBL_MAX, would overflow, and an infinite bin width made NaN bin
  // indices (cast to int64).
  const double top = std::max(std::abs(v.front()), std::abs(v.back()));
  const double unit = top > 0 ? std::ldexp(1.0, std::ilogb(top)) : 1.0;
  double sum = 0.0;
  for (double x : v) sum += x / unit;
  s.mean = sum / static_cast<double>(v.size()) * unit;
  s.median = quantile_sorted(v, 0.5);
  s.q25 = quantile_sorted(v, 0.25);
  s.q75 = quantile_sorted(v, 0.75);
  s.min = v.front();
  s.max = v.back();
  const double lo = s.min / unit;
  const double width = (s.max / unit - lo) / static_cast<double>(bins);  // finite
  s.bin_edges.resize(bins + 1);
  for (int64_t b = 0; b <= bins; ++b) {
    s.bin_edges[b] = (lo + width * static_cast<double>(b)) * unit;
  }
  for (double x : v) {
    const int64_t b = width > 0 ? static_cast<int64_t>((x / unit - lo) / width) : 0;
    s.hist[std::min(b, bins - 1)] += 1;
  }
  return s;
}

} // namespace hooks
} // namespace torch_geometry
