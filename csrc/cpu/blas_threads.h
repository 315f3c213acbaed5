// The BLAS behind at::mm follows torch's thread count while a kernel runs.
//
// torch.set_num_threads() sets OpenMP's (and MKL's) thread count but not OpenBLAS's, which
// keeps one thread per core: a caller who asked torch for 1 thread would still get every
// core in the GEMM tiles of the kNN search, and OpenBLAS's idle threads would spin against
// the OpenMP threads of the selection. BlasThreadsGuard sets OpenBLAS (when it is the BLAS
// in the process, found at run time: nothing is linked) to at::get_num_threads() for its
// scope and restores the previous count after. OpenBLAS's count is process-wide: two
// threads of the caller running such kernels at once with different torch thread counts
// leave the last count set until both return.
#pragma once

namespace torch_geometry {
namespace cpu {

class BlasThreadsGuard {
 public:
  BlasThreadsGuard();
  ~BlasThreadsGuard();
  BlasThreadsGuard(const BlasThreadsGuard&) = delete;
  BlasThreadsGuard& operator=(const BlasThreadsGuard&) = delete;

 private:
  int previous_ = -1;  // -1: nothing to restore
};

} // namespace cpu
} // namespace torch_geometry
