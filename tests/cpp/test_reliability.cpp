// Reliability rules of the operator layer: errors inside parallel regions reach the caller,
// labels are checked in one place, summaries survive values spanning more than DBL_MAX.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include <atomic>
#include <cmath>
#include <limits>
#include <new>
#include <vector>

#include "csrc/common.h"
#include "csrc/label_metrics.h"
#include "hooks/summary.h"

namespace {

namespace tg = torch_geometry;

TEST(ParallelChunks, CoversEveryIndexOnce) {
  at::set_num_threads(2);
  for (int64_t n : {0, 1, 15, 16, 17, 1000}) {
    std::vector<std::atomic<int>> seen(static_cast<size_t>(n));
    for (auto& s : seen) s = 0;
    tg::parallel_chunks(n, 16, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) ++seen[i];
    });
    for (int64_t i = 0; i < n; ++i) EXPECT_EQ(seen[i].load(), 1) << "n " << n << " i " << i;
  }
}

TEST(ParallelChunks, ErrorsInsideTheRegionReachTheCaller) {
  at::set_num_threads(2);
  EXPECT_THROW(
      tg::parallel_chunks(1000, 16, [](int64_t i0, int64_t) {
        TORCH_CHECK(i0 != 496, "node ", i0, " is bad");
      }),
      c10::Error);
  EXPECT_THROW(
      tg::parallel_chunks(1000, 16, [](int64_t i0, int64_t) {
        if (i0 == 0) throw std::bad_alloc();
      }),
      std::bad_alloc);
}

TEST(CheckLabels, OneRuleForEveryCaller) {
  const auto y = torch::tensor({0, 3, 1}, torch::kInt);
  const tg::Labels lab = tg::check_labels(y, 3, "op");
  EXPECT_EQ(lab.num_classes, 4);
  EXPECT_EQ(lab.y.scalar_type(), torch::kLong);
  EXPECT_TRUE(torch::equal(lab.y, torch::tensor({0, 3, 1}, torch::kLong)));
  EXPECT_EQ(tg::check_labels(y, -1, "op", 7).num_classes, 7);
  EXPECT_THROW(tg::check_labels(y, 4, "op"), c10::Error);
  EXPECT_THROW(tg::check_labels(y.to(torch::kBool), 3, "op"), c10::Error);
  EXPECT_THROW(tg::check_labels(y.to(torch::kFloat), 3, "op"), c10::Error);
  EXPECT_THROW(tg::check_labels(torch::empty({0}, torch::kLong), -1, "op"), c10::Error);
  EXPECT_THROW(tg::check_labels(y, 3, "op", 3), c10::Error);
  EXPECT_THROW(tg::check_labels(torch::tensor({int64_t(1) << 40}), 1, "op"), c10::Error);
}

TEST(LabelMetrics, HugeLabelIdIsAnErrorNotAnAbort) {
  const auto nb = torch::tensor({{1}, {0}}, torch::kLong);
  const auto w = torch::tensor({{1.0}, {1.0}}, torch::kDouble);
  const auto y = torch::tensor({int64_t(0), int64_t(1000000000000)});
  EXPECT_THROW(tg::ops::nnk_loo_error(nb, w, y), c10::Error);
  // Sparse ids below the bound: no per-class memory, and the right answer.
  const auto y2 = torch::tensor({int64_t(0), int64_t(16000000)});
  auto [hard, soft] = tg::ops::nnk_loo_error(nb, w, y2);
  EXPECT_TRUE(torch::equal(hard, torch::ones({2}, torch::kDouble)));
}

TEST(Summary, ValuesSpanningMoreThanDblMax) {
  const double big = 1.7e308;
  const auto v = torch::tensor({-big, -1.0, 0.0, 2.0, big}, torch::kDouble);
  const auto s = tg::hooks::summarize(v, 4, c10::nullopt);
  EXPECT_EQ(s.count, 5);
  int64_t total = 0;
  for (int64_t h : s.hist) total += h;
  EXPECT_EQ(total, 5);
  EXPECT_EQ(s.hist[0], 1);  // -big
  EXPECT_EQ(s.hist[1] + s.hist[2], 3);  // -1, 0, 2 around the middle edge
  EXPECT_EQ(s.hist[3], 1);  // big
  for (double e : s.bin_edges) EXPECT_TRUE(std::isfinite(e)) << e;
  EXPECT_EQ(s.bin_edges.front(), -big);
  EXPECT_EQ(s.bin_edges.back(), big);
  EXPECT_TRUE(std::isfinite(s.mean));
  EXPECT_LE(std::abs(s.mean), 1.0);  // -big and big cancel; the rest is below rounding
  EXPECT_EQ(s.median, 0.0);
  EXPECT_EQ(s.q25, -1.0);
  EXPECT_EQ(s.q75, 2.0);
  // Between two samples of opposite sign near DBL_MAX: the interpolation stays finite.
  const auto s2 = tg::hooks::summarize(torch::tensor({-big, big}, torch::kDouble), 2, c10::nullopt);
  EXPECT_EQ(s2.median, 0.0);
  EXPECT_EQ(s2.hist[0] + s2.hist[1], 2);
}

} // namespace
