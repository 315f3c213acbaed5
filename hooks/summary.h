// Summary statistics of a per-node metric: what the tracker records per epoch and layer.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Optional.h>

#include <cstdint>
#include <vector>

namespace torch_geometry {
namespace hooks {

struct Summary {
  int64_t count = 0;   // values summarised (finite ones)
  double mean = 0.0;
  double median = 0.0;
  double q25 = 0.0;    // quartiles by linear interpolation between order statistics
  double q75 = 0.0;    // (numpy's and torch.quantile's default)
  double min = 0.0;
  double max = 0.0;
  std::vector<double> bin_edges;  // bins + 1 edges spanning [min, max]
  std::vector<int64_t> hist;      // bins counts
};

// Summarises `values` (any shape, any real dtype, any device; copied to the host as float64:
// per-node metrics [N] are what comes back from a device, never activations). Non-finite
// values are left out of every statistic, and so are entries where `include` (bool, same
// number of elements) is false, e.g. isolated nodes whose metric values are conventions. An
// input with nothing left gives count 0 and NaN statistics, so "nothing to summarise" cannot
// pass for a zero.
Summary summarize(const at::Tensor& values, int64_t bins = 20,
                  const c10::optional<at::Tensor>& include = c10::nullopt);

} // namespace hooks
} // namespace torch_geometry
