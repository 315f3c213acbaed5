#include "probe.h"

#include <algorithm>
#include <map>
#include <numeric>
#include <random>
#include <vector>

#include "../csrc/common.h"

namespace torch_geometry {
namespace hooks {

at::Tensor probe_subset(
    int64_t n,
    int64_t max_points,
    const c10::optional<at::Tensor>& labels,
    uint64_t seed) {
  TORCH_CHECK(n >= 0, "probe_subset: n should be >= 0, got ", n);
  TORCH_CHECK(max_points >= 1, "probe_subset: max_points should be >= 1, got ", max_points);
  std::vector<int64_t> picked;
  if (n <= max_points) {
    picked.resize(n);
    std::iota(picked.begin(), picked.end(), 0);
  } else {
    std::mt19937_64 rng(seed);
    if (labels.has_value() && labels->defined()) {
      const at::Tensor yl = check_labels(*labels, n, "probe_subset").y;
      const int64_t* p = yl.data_ptr<int64_t>();
      std::map<int64_t, std::vector<int64_t>> by_class;
      for (int64_t i = 0; i < n; ++i) by_class[p[i]].push_back(i);
      // Largest-remainder apportionment of max_points among classes.
      std::vector<std::pair<double, int64_t>> remainders;
      std::map<int64_t, int64_t> quota;
      int64_t given = 0;
      for (auto& kv : by_class) {
        const double exact = static_cast<double>(kv.second.size()) * max_points / n;
        quota[kv.first] = static_cast<int64_t>(exact);
        given += quota[kv.first];
        remainders.emplace_back(exact - static_cast<double>(quota[kv.first]), kv.first);
      }
      std::stable_sort(remainders.begin(), remainders.end(),
                       [](const auto& a, const auto& b) { return a.first > b.first; });
      for (size_t r = 0; given < max_points && r < remainders.size(); ++r, ++given) {
        quota[remainders[r].second] += 1;
      }
      for (auto& kv : by_class) {
        std::vector<int64_t>& idx = kv.second;
        std::shuffle(idx.begin(), idx.end(), rng);
        const int64_t q = std::min<int64_t>(quota[kv.first], static_cast<int64_t>(idx.size()));
        picked.insert(picked.end(), idx.begin(), idx.begin() + q);
      }
    } else {
      std::vector<int64_t> idx(n);
      std::iota(idx.begin(), idx.end(), 0);
      std::shuffle(idx.begin(), idx.end(), rng);
      picked.assign(idx.begin(), idx.begin() + max_points);
    }
    std::sort(picked.begin(), picked.end());
  }
  at::Tensor out = at::empty({static_cast<int64_t>(picked.size())}, at::kLong);
  std::copy(picked.begin(), picked.end(), out.data_ptr<int64_t>());
  return out;
}

} // namespace hooks
} // namespace torch_geometry
