// Native CUDA candidate selection for the kNN search (declared in native_kernels.h).
//
// Score tiles come from cuBLAS (at::mm); one warp per query row then merges the tile into
// the row's running top-kk, in the spirit of FAISS's block select (this is our own code):
// lanes read the tile row in coalesced strides of 32, a ballot keeps only the scores that
// beat the row's current kk-th best, those go to a per-warp buffer in shared memory, and a
// full buffer is merged by a warp-wide bitonic sort of (running list + buffer). After the
// first tiles few scores beat the threshold, so the pass runs at the speed of reading the
// tile. Order: larger score first, ties to the smaller index (the CPU kernel's rule).
//
// Unverified until a GPU run: off by default (csrc/generic/native_cuda.h).
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <cstdint>
#include <limits>

#include "native_kernels.h"

namespace torch_geometry {
namespace cuda {

namespace {

constexpr int kWarp = 32;
constexpr int kWarpsPerBlock = 4;
constexpr int kMaxKK = 256;   // running list per row
constexpr int kBuffer = 256;  // new candidates held before a merge
constexpr int kSlots = kMaxKK + kBuffer;  // a power of two, for the bitonic sort
constexpr int64_t kTileColumns = 4096;

__device__ __forceinline__ bool before(double sa, int64_t ia, double sb, int64_t ib) {
  return sa > sb || (sa == sb && ia < ib);
}

// Sorts s/id[0, kSlots) by `before` with the 32 lanes of one warp.
__device__ void warp_bitonic_sort(double* s, int64_t* id, int lane) {
  for (int size = 2; size <= kSlots; size <<= 1) {
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      for (int t = lane; t < kSlots / 2; t += kWarp) {
        const int lo = 2 * t - (t & (stride - 1));
        const int hi = lo + stride;
        const bool up = (lo & size) == 0;  // this run sorts in `before` order
        const bool swap = up ? before(s[hi], id[hi], s[lo], id[lo])
                             : before(s[lo], id[lo], s[hi], id[hi]);
        if (swap) {
          const double ts = s[lo];
          s[lo] = s[hi];
          s[hi] = ts;
          const int64_t ti = id[lo];
          id[lo] = id[hi];
          id[hi] = ti;
        }
      }
      __syncwarp();
    }
  }
}

// Merges the buffer [kk, kk + count) into the running list [0, kk): sorts everything and
// resets the slots after kk to empty.
__device__ void merge(double* s, int64_t* id, int kk, int lane) {
  warp_bitonic_sort(s, id, lane);
  for (int t = kk + lane; t < kSlots; t += kWarp) {
    s[t] = -INFINITY;
    id[t] = INT64_MAX;
  }
  __syncwarp();
}

__global__ void select_tile_kernel(
    const float* __restrict__ tile,  // [nr, nc], row stride ld
    int64_t ld,
    int64_t nr,
    int64_t nc,
    int64_t r0,
    int64_t c0,
    const float* __restrict__ a,
    const float* __restrict__ c,
    const bool* __restrict__ valid,
    double* __restrict__ best_s,      // [nr, kk]
    int64_t* __restrict__ best_i,     // [nr, kk]
    int kk) {
  __shared__ double sh_s[kWarpsPerBlock][kSlots];
  __shared__ int64_t sh_i[kWarpsPerBlock][kSlots];
  const int warp = threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + warp;
  if (r >= nr) {
    return;
  }
  const int64_t i = r0 + r;
  double* s = sh_s[warp];
  int64_t* id = sh_i[warp];
  for (int t = lane; t < kSlots; t += kWarp) {
    s[t] = t < kk ? best_s[r * kk + t] : -INFINITY;
    id[t] = t < kk ? best_i[r * kk + t] : INT64_MAX;
  }
  __syncwarp();
  if (!valid[i]) {
    return;  // an invalid query keeps no candidate (its list stays empty)
  }
  double thr = s[kk - 1];
  int64_t thr_i = id[kk - 1];
  int count = 0;
  const float* row = tile + r * ld;
  for (int64_t base = 0; base < nc; base += kWarp) {
    const int64_t col = base + lane;
    const int64_t j = c0 + col;
    bool ok = col < nc && j != i && valid[j];
    double v = -INFINITY;
    if (ok) {
      v = static_cast<double>(a[j]) * static_cast<double>(row[col]) + static_cast<double>(c[j]);
    }
    bool take = ok && before(v, j, thr, thr_i);
    unsigned mask = __ballot_sync(0xffffffffu, take);
    int fresh = __popc(mask);
    if (count + fresh > kBuffer) {
      merge(s, id, kk, lane);
      count = 0;
      thr = s[kk - 1];
      thr_i = id[kk - 1];
      take = ok && before(v, j, thr, thr_i);
      mask = __ballot_sync(0xffffffffu, take);
      fresh = __popc(mask);
    }
    if (take) {
      const int pos = kk + count + __popc(mask & ((1u << lane) - 1u));
      s[pos] = v;
      id[pos] = j;
    }
    count += fresh;
    __syncwarp();
  }
  if (count > 0) {
    merge(s, id, kk, lane);
  }
  for (int t = lane; t < kk; t += kWarp) {
    best_s[r * kk + t] = s[t];
    best_i[r * kk + t] = id[t];
  }
}

} // namespace

at::Tensor knn_select(
    const at::Tensor& x,
    const at::Tensor& a,
    const at::Tensor& c,
    const at::Tensor& valid,
    int64_t r0,
    int64_t nr,
    int64_t kk) {
  TORCH_CHECK(x.is_cuda() && x.scalar_type() == at::kFloat && x.is_contiguous(),
              "knn_select: x should be a contiguous float32 CUDA tensor");
  TORCH_CHECK(kk >= 1 && kk <= kMaxKK, "knn_select: kk should be in [1, ", kMaxKK, "], got ", kk);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t n = x.size(0);
  const at::Tensor af = a.to(at::kFloat).contiguous();
  const at::Tensor cf = c.to(at::kFloat).contiguous();
  const at::Tensor vb = valid.contiguous();
  at::Tensor best_s = at::full({nr, kk}, -std::numeric_limits<double>::infinity(),
                               x.options().dtype(at::kDouble));
  at::Tensor best_i = at::full({nr, kk}, std::numeric_limits<int64_t>::max(),
                               x.options().dtype(at::kLong));
  const at::Tensor xq = x.narrow(0, r0, nr);
  const auto stream = at::cuda::getCurrentCUDAStream();
  const dim3 block(kWarp * kWarpsPerBlock);
  const dim3 grid(static_cast<unsigned>((nr + kWarpsPerBlock - 1) / kWarpsPerBlock));
  for (int64_t c0 = 0; c0 < n; c0 += kTileColumns) {
    const int64_t nc = std::min(kTileColumns, n - c0);
    const at::Tensor tile = at::mm(xq, x.narrow(0, c0, nc).t()).contiguous();
    select_tile_kernel<<<grid, block, 0, stream>>>(
        tile.data_ptr<float>(), tile.stride(0), nr, nc, r0, c0, af.data_ptr<float>(),
        cf.data_ptr<float>(), vb.data_ptr<bool>(), best_s.data_ptr<double>(),
        best_i.data_ptr<int64_t>(), static_cast<int>(kk));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return best_i.masked_fill(best_s == -std::numeric_limits<double>::infinity(), -1);
}

} // namespace cuda
} // namespace torch_geometry
