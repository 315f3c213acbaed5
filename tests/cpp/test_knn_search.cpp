// The exact kNN search's two selections (csrc/cpu/knn_search.h, SearchEngine): the fused
// register kernels (AVX-512 and AVX2) and the tiled GEMM search must return the same
// neighbours, equal to a brute-force ranking computed independently in double.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdlib>
#include <numeric>
#include <string>
#include <tuple>
#include <vector>

#include "csrc/cpu/knn_fused.h"
#include "csrc/cpu/knn_search.h"

namespace {

namespace cpu = torch_geometry::cpu;
using torch_geometry::Kernel;
using cpu::SearchEngine;

// Brute force in double on the caller's x: for every row, the other rows ranked by cosine
// (larger first) or squared L2 distance (smaller first), ties to the smaller index; zero
// rows take no part under the cosine kernel. -1 pads.
at::Tensor brute_force(const at::Tensor& x, Kernel kernel, int64_t k) {
  const at::Tensor xd = x.to(at::kDouble).contiguous();
  const int64_t n = xd.size(0), d = xd.size(1);
  const double* X = xd.data_ptr<double>();
  std::vector<double> norm(n, 0.0);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t t = 0; t < d; ++t) norm[i] += X[i * d + t] * X[i * d + t];
    norm[i] = std::sqrt(norm[i]);
  }
  const bool cosine = kernel == Kernel::Cosine;
  at::Tensor out = at::full({n, k}, -1, at::kLong);
  for (int64_t i = 0; i < n; ++i) {
    if (cosine && norm[i] == 0) continue;
    std::vector<std::pair<double, int64_t>> c;  // (badness, j): smaller is better
    for (int64_t j = 0; j < n; ++j) {
      if (j == i || (cosine && norm[j] == 0)) continue;
      double dot = 0, dist = 0;
      for (int64_t t = 0; t < d; ++t) {
        dot += X[i * d + t] * X[j * d + t];
        dist += (X[i * d + t] - X[j * d + t]) * (X[i * d + t] - X[j * d + t]);
      }
      c.emplace_back(cosine ? -dot / (norm[i] * norm[j]) : dist, j);
    }
    std::sort(c.begin(), c.end());
    for (int64_t l = 0; l < k && l < static_cast<int64_t>(c.size()); ++l) {
      out[i][l] = c[l].second;
    }
  }
  return out;
}

// The brute-force score (cosine, or minus the squared distance) of pair (i, j), in double.
double pair_score(const at::Tensor& x, Kernel kernel, int64_t i, int64_t j) {
  const at::Tensor a = x[i].to(at::kDouble), b = x[j].to(at::kDouble);
  return kernel == Kernel::Cosine ? (a.dot(b) / (a.norm() * b.norm())).item<double>()
                                  : -(a - b).pow(2).sum().item<double>();
}

// idx equals the brute-force ranking ref, except where float rounding may have ordered a
// near-tie differently: there, rank by rank, the scores must agree to 1e-5 relative.
void expect_ranking(const at::Tensor& idx, const at::Tensor& ref, const at::Tensor& x,
                    Kernel kernel, const std::string& what) {
  ASSERT_EQ(idx.sizes(), ref.sizes()) << what;
  for (int64_t i = 0; i < idx.size(0); ++i) {
    for (int64_t l = 0; l < idx.size(1); ++l) {
      const int64_t a = idx[i][l].item<int64_t>(), b = ref[i][l].item<int64_t>();
      if (a == b) continue;
      ASSERT_TRUE(a >= 0 && b >= 0) << what << ": row " << i << " rank " << l;
      const double sa = pair_score(x, kernel, i, a), sb = pair_score(x, kernel, i, b);
      EXPECT_NEAR(sa, sb, 1e-5 * std::max(1.0, std::abs(sb)))
          << what << ": row " << i << " rank " << l << " took " << a << ", not " << b;
    }
  }
}

std::tuple<at::Tensor, at::Tensor> search(const at::Tensor& x, Kernel kernel, int64_t k,
                                          SearchEngine engine) {
  return cpu::knn_search(cpu::prepare_points(x, kernel), kernel, k, engine);
}

std::vector<SearchEngine> engines() {
  std::vector<SearchEngine> e{SearchEngine::Tiled};
  if (cpu::fused_select_available()) {
    e.push_back(SearchEngine::Fused);
    e.push_back(SearchEngine::FusedAvx2);
  }
  return e;
}

const char* name(SearchEngine e) {
  return e == SearchEngine::Tiled ? "tiled" : e == SearchEngine::Fused ? "fused" : "fused-avx2";
}

TEST(KnnSearch, EnginesMatchBruteForce) {
  if (!cpu::fused_select_available()) {
    GTEST_SKIP() << "this CPU has no AVX2 + FMA: only the tiled search exists";
  }
  at::manual_seed(0);
  // Sizes that leave partial register blocks (R = 6 or 12 rows) and panels (16 or 32
  // candidates); D from 2 to past fused_max_dim() (forced: Fused ignores the limit). (At
  // D = 1 every cosine is +-1: float rounding, not the data, would order the ties.)
  for (int64_t n : {13, 97, 301}) {
    for (int64_t d : {2, 3, 49, 130}) {
      for (Kernel kernel : {Kernel::Cosine, Kernel::Gaussian}) {
        const at::Tensor x = at::randn({n, d}, at::kFloat);
        const int64_t k = std::min<int64_t>(7, n - 1);
        const at::Tensor ref = brute_force(x, kernel, k);
        const at::Tensor tiled = std::get<0>(search(x, kernel, k, SearchEngine::Tiled));
        for (SearchEngine e : engines()) {
          const std::string what = std::string(name(e)) + " n=" + std::to_string(n) +
                                   " d=" + std::to_string(d) +
                                   (kernel == Kernel::Cosine ? " cosine" : " gaussian");
          const at::Tensor idx = std::get<0>(search(x, kernel, k, e));
          expect_ranking(idx, ref, x, kernel, what);
          // Both selections end in the same exact rescoring: the same neighbours.
          EXPECT_TRUE(at::equal(idx, tiled)) << what;
        }
      }
    }
  }
}

TEST(KnnSearch, TiesGoToTheSmallerIndexInEveryEngine) {
  if (!cpu::fused_select_available()) GTEST_SKIP() << "no AVX2 + FMA on this CPU";
  at::manual_seed(1);
  // L2: small integers, rows y and -y (column means exactly 0, N = 128 a power of two), so
  // the prepared copy and every squared distance are exact in float and equidistant points
  // tie exactly.
  const at::Tensor y = at::randint(-2, 3, {64, 4}, at::kFloat);
  const at::Tensor xi = at::cat({y, -y});
  // Cosine: every point three times (identical rows give bitwise identical scores).
  const at::Tensor z = at::randn({50, 6}, at::kFloat);
  const at::Tensor xc = at::cat({z, z, z}).index_select(0, at::randperm(150));
  for (Kernel kernel : {Kernel::Gaussian, Kernel::Cosine}) {
    const at::Tensor& x = kernel == Kernel::Gaussian ? xi : xc;
    const at::Tensor ref = brute_force(x, kernel, 20);
    for (SearchEngine e : engines()) {
      EXPECT_TRUE(at::equal(std::get<0>(search(x, kernel, 20, e)), ref))
          << name(e) << (kernel == Kernel::Cosine ? " cosine" : " gaussian");
    }
  }
}

TEST(KnnSearch, EveryOtherPointAndZeroRows) {
  if (!cpu::fused_select_available()) GTEST_SKIP() << "no AVX2 + FMA on this CPU";
  at::manual_seed(2);
  at::Tensor x = at::randn({37, 5}, at::kFloat);
  x[4].zero_();
  x[30].zero_();
  // k = n - 1: every slot of every row is used (cosine: two rows have no direction, so the
  // others get 34 candidates and two -1 pads; the zero rows get only pads).
  for (Kernel kernel : {Kernel::Cosine, Kernel::Gaussian}) {
    const at::Tensor ref = brute_force(x, kernel, 36);
    for (SearchEngine e : engines()) {
      at::Tensor idx, score;
      std::tie(idx, score) = search(x, kernel, 36, e);
      EXPECT_TRUE(at::equal(idx, ref)) << name(e);
    }
  }
  const at::Tensor idx = std::get<0>(search(x, Kernel::Cosine, 36, SearchEngine::Fused));
  EXPECT_TRUE((idx[4] == -1).all().item<bool>());
  EXPECT_FALSE((idx == 30).any().item<bool>());
}

TEST(KnnSearch, FusedScoresEqualTiledAndIgnoreThreadCount) {
  if (!cpu::fused_select_available()) GTEST_SKIP() << "no AVX2 + FMA on this CPU";
  at::manual_seed(3);
  const at::Tensor x = at::rand({1000, 49}, at::kFloat);  // non-negative, as ReLU maps
  const int threads = at::get_num_threads();
  for (Kernel kernel : {Kernel::Cosine, Kernel::Gaussian}) {
    at::Tensor i1, s1, i2, s2, it, st;
    at::set_num_threads(1);
    std::tie(i1, s1) = search(x, kernel, 25, SearchEngine::Fused);
    at::set_num_threads(std::max(2, threads));
    std::tie(i2, s2) = search(x, kernel, 25, SearchEngine::Fused);
    std::tie(it, st) = search(x, kernel, 25, SearchEngine::Tiled);
    EXPECT_TRUE(at::equal(i1, i2));
    EXPECT_TRUE(at::equal(s1, s2));
    // The returned scores come from the exact rescoring, whichever engine selected.
    EXPECT_TRUE(at::equal(i1, it));
    EXPECT_TRUE(at::equal(s1, st));
    expect_ranking(i1, brute_force(x, kernel, 25), x, kernel, "rand 1000 x 49");
  }
  at::set_num_threads(threads);
}

TEST(KnnSearch, FusedSelectKeepsTheBestByItsScore) {
  if (!cpu::fused_select_available()) GTEST_SKIP() << "no AVX2 + FMA on this CPU";
  // Small integers and integer offsets: every score <x_i, a_j x_j> + c_j is exact in float,
  // so the kk best (ties to the smaller index) are known exactly.
  at::manual_seed(4);
  const int64_t n = 211, d = 5, kk = 13;
  const at::Tensor x = at::randint(-3, 4, {n, d}, at::kFloat).contiguous();
  const at::Tensor a = at::randint(1, 3, {n}, at::kFloat).contiguous();
  const at::Tensor c = at::randint(-20, 21, {n}, at::kFloat).contiguous();
  std::vector<char> valid(n, 1);
  for (int64_t j : {0, 17, 100, 210}) valid[j] = 0;
  const float* X = x.data_ptr<float>();
  for (cpu::FusedIsa isa : {cpu::FusedIsa::Best, cpu::FusedIsa::Avx2}) {
    std::vector<double> hs(n * kk);
    std::vector<int64_t> hi(n * kk);
    cpu::fused_select(X, n, d, a.data_ptr<float>(), c.data_ptr<float>(), valid.data(), kk,
                      hs.data(), hi.data(), isa);
    for (int64_t i = 0; i < n; ++i) {
      std::vector<std::pair<double, int64_t>> want;  // (-score, j)
      if (valid[i]) {
        for (int64_t j = 0; j < n; ++j) {
          if (j == i || !valid[j]) continue;
          double s = c[j].item<float>();
          for (int64_t t = 0; t < d; ++t) s += X[i * d + t] * a[j].item<float>() * X[j * d + t];
          want.emplace_back(-s, j);
        }
        std::sort(want.begin(), want.end());
        want.resize(kk);
      }
      std::vector<std::pair<double, int64_t>> got;
      for (int64_t l = 0; l < kk; ++l) {
        if (hi[i * kk + l] >= 0) got.emplace_back(-hs[i * kk + l], hi[i * kk + l]);
      }
      std::sort(got.begin(), got.end());
      EXPECT_EQ(got, want) << "row " << i << (isa == cpu::FusedIsa::Avx2 ? " avx2" : " best");
    }
  }
}

// ATEN_CPU_CAPABILITY caps the fused selection as it caps ATen ("default": off, "avx2": the
// AVX2 kernel). CMake also runs this test with the variable set to each of those values.
TEST(KnnSearch, CapabilityCapIsHonoured) {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  const bool cpu_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const bool cpu_avx512 = cpu_avx2 && __builtin_cpu_supports("avx512f");
  const char* v = std::getenv("ATEN_CPU_CAPABILITY");
  const std::string cap = v == nullptr ? "" : v;
  EXPECT_EQ(cpu::fused_select_available(), cpu_avx2 && cap != "default") << "cap " << cap;
  EXPECT_EQ(cpu::fused_max_dim(), cpu_avx512 && cap != "default" && cap != "avx2" ? 256 : 128)
      << "cap " << cap;
#else
  EXPECT_FALSE(cpu::fused_select_available());
#endif
}

TEST(KnnSearch, FusedRefusesWhatItCannotSearch) {
  const at::Tensor xd = at::randn({20, 3}, at::kDouble);
  EXPECT_THROW(search(xd, Kernel::Cosine, 3, SearchEngine::Fused), c10::Error);
  // Auto takes the tiled search for float64 and for D above the fused kernels' limit.
  EXPECT_TRUE(at::equal(std::get<0>(search(xd, Kernel::Cosine, 3, SearchEngine::Auto)),
                        brute_force(xd, Kernel::Cosine, 3)));
}

} // namespace
