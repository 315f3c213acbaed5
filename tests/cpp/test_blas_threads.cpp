// BlasThreadsGuard (csrc/cpu/blas_threads.h): inside its scope OpenBLAS runs with torch's
// thread count; afterwards it has its own count back. OpenBLAS's count is read here through
// its own API, found independently of the guard.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <dlfcn.h>

#include "csrc/cpu/blas_threads.h"
#include "csrc/knn_graph.h"

namespace {

struct OpenBlas {
  int (*get)() = nullptr;
  void (*set)(int) = nullptr;
};

// The OpenBLAS torch loaded (Debian: libblas.so.3 -> libopenblas0-pthread); never loads one.
OpenBlas loaded_openblas() {
  for (const char* name : {"libopenblas.so.0", "libblas.so.3"}) {
    void* h = dlopen(name, RTLD_LAZY | RTLD_NOLOAD);
    if (h == nullptr) continue;
    OpenBlas f;
    f.get = reinterpret_cast<int (*)()>(dlsym(h, "openblas_get_num_threads"));
    f.set = reinterpret_cast<void (*)(int)>(dlsym(h, "openblas_set_num_threads"));
    if (f.get != nullptr && f.set != nullptr) return f;
  }
  return {};
}

// Restores both counts whatever a test does.
class BlasThreads : public ::testing::Test {
 protected:
  void SetUp() override {
    // A torch built with MKL has no OpenBLAS to steer (MKL follows torch's count itself);
    // every other build here uses the system BLAS, which the test environment makes OpenBLAS.
    blas_ = loaded_openblas();
    torch_threads_ = at::get_num_threads();
    if (blas_.get != nullptr) blas_threads_ = blas_.get();
  }
  void TearDown() override {
    at::set_num_threads(torch_threads_);
    if (blas_.set != nullptr) blas_.set(blas_threads_);
  }
  OpenBlas blas_;
  int torch_threads_ = 1, blas_threads_ = 1;
};

bool torch_uses_mkl() {
  return at::show_config().find("BLAS_INFO=mkl") != std::string::npos;
}

} // namespace

TEST_F(BlasThreads, GuardSetsTorchsCountAndRestoresOpenBlasCount) {
  if (torch_uses_mkl()) {
    EXPECT_EQ(blas_.get, nullptr) << "torch uses MKL, yet an OpenBLAS is loaded too";
    return;
  }
  ASSERT_NE(blas_.get, nullptr)
      << "OpenBLAS is not loaded: the test environment's BLAS is OpenBLAS (libopenblas0-pthread)";
  for (const auto& counts : {std::make_pair(2, 1), std::make_pair(1, 2)}) {
    blas_.set(counts.first);
    at::set_num_threads(counts.second);
    ASSERT_EQ(blas_.get(), counts.first);
    {
      torch_geometry::cpu::BlasThreadsGuard guard;
      EXPECT_EQ(blas_.get(), counts.second) << "inside the guard OpenBLAS should follow torch";
    }
    EXPECT_EQ(blas_.get(), counts.first) << "the guard should give OpenBLAS its count back";
  }
}

TEST_F(BlasThreads, KnnSearchLeavesOpenBlasCountAsItWas) {
  if (torch_uses_mkl()) return;  // checked by the test above
  ASSERT_NE(blas_.get, nullptr);
  const at::Tensor x = at::randn({300, 16}, at::kFloat);
  blas_.set(2);
  at::set_num_threads(1);
  torch_geometry::ops::knn_graph(x, 5, "cosine", c10::nullopt, "mean");
  EXPECT_EQ(blas_.get(), 2);
  // A refused call (k >= N) restores it too.
  EXPECT_THROW(torch_geometry::ops::knn_graph(x, 300, "cosine", c10::nullopt, "mean"), c10::Error);
  EXPECT_EQ(blas_.get(), 2);
}
