// Native CUDA NNK solve (declared in native_kernels.h): one warp per node runs the CPU
// solver's Lawson-Hanson active set (csrc/cpu/nnk_solver.h) step for step, in float64,
// with the Cholesky factor of the active block grown one row at a time. The lanes share
// the vector work (gradient, entering choice, the dot products of the factor updates and
// of the triangular solves); the active-set logic is the same serial sequence as on CPU.
//
// Unverified until a GPU run: off by default (csrc/generic/native_cuda.h).
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <cstdint>

#include "native_kernels.h"

namespace torch_geometry {
namespace cuda {

namespace {

constexpr int kWarp = 32;
constexpr int kWarpsPerBlock = 2;
constexpr int kMaxK = 128;
constexpr double kTiny = 1e-15;

__device__ __forceinline__ double warp_sum(double v) {
  for (int o = kWarp / 2; o > 0; o >>= 1) {
    v += __shfl_xor_sync(0xffffffffu, v, o);
  }
  return v;
}

// Per-warp state in shared memory.
struct NodeState {
  double theta[kMaxK];
  double w[kMaxK];
  double z[kMaxK];
  double y[kMaxK];
  int active[kMaxK];  // factor order
  char in_active[kMaxK];
  char skipped[kMaxK];
};

// Appends j to the factor L (row-major, stride k) of the active block: the CPU solver's
// chol_append. Returns false (factor unchanged) for a pivot below half the ridge.
__device__ bool chol_append(NodeState& st, int& p, double* L, const double* K, int k, int j,
                            double ridge, int lane) {
  double* row = L + static_cast<int64_t>(p) * k;
  double s = K[static_cast<int64_t>(j) * k + j] + ridge;
  for (int a = 0; a < p; ++a) {
    const double* La = L + static_cast<int64_t>(a) * k;
    double part = 0.0;
    for (int c = lane; c < a; c += kWarp) {
      part += La[c] * row[c];
    }
    const double v = (K[static_cast<int64_t>(j) * k + st.active[a]] - warp_sum(part)) / La[a];
    if (lane == 0) {
      row[a] = v;
    }
    __syncwarp();
    s -= v * v;
  }
  if (!(s > 0.5 * ridge)) {
    return false;
  }
  if (lane == 0) {
    row[p] = sqrt(s);
    st.active[p] = j;
  }
  __syncwarp();
  ++p;
  return true;
}

// Solves (K_PP + ridge I) z = b_P with the factor; z in factor order.
__device__ void chol_solve(NodeState& st, int p, const double* L, int k, const double* b,
                           int lane) {
  for (int a = 0; a < p; ++a) {
    const double* La = L + static_cast<int64_t>(a) * k;
    double part = 0.0;
    for (int c = lane; c < a; c += kWarp) {
      part += La[c] * st.y[c];
    }
    const double v = (b[st.active[a]] - warp_sum(part)) / La[a];
    if (lane == 0) {
      st.y[a] = v;
    }
    __syncwarp();
  }
  for (int a = p - 1; a >= 0; --a) {
    double part = 0.0;
    for (int c = a + 1 + lane; c < p; c += kWarp) {
      part += L[static_cast<int64_t>(c) * k + a] * st.z[c];
    }
    const double v = (st.y[a] - warp_sum(part)) / L[static_cast<int64_t>(a) * k + a];
    if (lane == 0) {
      st.z[a] = v;
    }
    __syncwarp();
  }
}

__global__ void nnk_solve_kernel(
    const double* __restrict__ Kall,  // [B, k, k]
    const double* __restrict__ ball,  // [B, k]
    const int* __restrict__ mall,     // [B]
    double* __restrict__ theta_out,   // [B, k]
    double* __restrict__ Lall,        // [B, k, k] scratch
    int64_t nodes,
    int k,
    double tol,
    double ridge) {
  __shared__ NodeState states[kWarpsPerBlock];
  const int warp = threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  const int64_t node = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + warp;
  if (node >= nodes) {
    return;
  }
  NodeState& st = states[warp];
  const double* K = Kall + node * k * k;
  const double* b = ball + node * k;
  double* L = Lall + node * k * k;
  const int m = mall[node];
  for (int l = lane; l < k; l += kWarp) {
    st.theta[l] = 0.0;
    st.w[l] = l < m ? b[l] : 0.0;
    st.in_active[l] = 0;
    st.skipped[l] = 0;
  }
  __syncwarp();
  int p = 0;
  const int max_iter = 5 * m + 20;
  for (int it = 0; it < max_iter; ++it) {
    // Entering index: the largest w above tol among candidates neither active nor skipped
    // (ties to the smaller index, as the CPU's strict > scan).
    double best = tol;
    int j = -1;
    for (int l = lane; l < m; l += kWarp) {
      if (!st.in_active[l] && !st.skipped[l] && st.w[l] > best) {
        best = st.w[l];
        j = l;
      }
    }
    for (int o = kWarp / 2; o > 0; o >>= 1) {
      const double ob = __shfl_xor_sync(0xffffffffu, best, o);
      const int oj = __shfl_xor_sync(0xffffffffu, j, o);
      if (oj >= 0 && (j < 0 || ob > best || (ob == best && oj < j))) {
        best = ob;
        j = oj;
      }
    }
    if (j < 0) {
      break;
    }
    if (!chol_append(st, p, L, K, k, j, ridge, lane)) {
      if (lane == 0) {
        st.skipped[j] = 1;
      }
      __syncwarp();
      continue;
    }
    if (lane == 0) {
      st.in_active[j] = 1;
    }
    __syncwarp();
    bool first = true;
    while (true) {
      chol_solve(st, p, L, k, b, lane);
      bool feasible = true;
      for (int a = 0; a < p; ++a) {
        feasible = feasible && st.z[a] > 0.0;
      }
      if (feasible) {
        for (int a = lane; a < p; a += kWarp) {
          st.theta[st.active[a]] = st.z[a];
        }
        __syncwarp();
        break;
      }
      if (first && !(st.z[p - 1] > 0.0)) {
        // The entering index cannot take a positive weight: skip it rather than cycle.
        --p;
        if (lane == 0) {
          st.in_active[j] = 0;
          st.skipped[j] = 1;
        }
        __syncwarp();
        break;
      }
      first = false;
      double alpha = 1.0;
      int hit = -1;
      for (int a = 0; a < p; ++a) {
        if (!(st.z[a] > 0.0)) {
          const double t = st.theta[st.active[a]];
          const double r = t / (t - st.z[a]);
          if (r < alpha) {
            alpha = r;
            hit = a;
          }
        }
      }
      for (int a = lane; a < p; a += kWarp) {
        double& t = st.theta[st.active[a]];
        t += alpha * (st.z[a] - t);
      }
      __syncwarp();
      // Keep the indices that stay, then refactorise them in order.
      int kept = 0;
      for (int a = 0; a < p; ++a) {
        const int idx = st.active[a];
        const bool drop = a == hit || st.theta[idx] <= kTiny;
        __syncwarp();
        if (lane == 0) {
          if (drop) {
            st.theta[idx] = 0.0;
            st.in_active[idx] = 0;
          } else {
            st.y[kept] = idx;  // y is free here: the kept list
          }
        }
        kept += drop ? 0 : 1;
        __syncwarp();
      }
      p = 0;
      for (int a = 0; a < kept; ++a) {
        const int idx = static_cast<int>(st.y[a]);
        if (!chol_append(st, p, L, K, k, idx, ridge, lane)) {
          if (lane == 0) {
            st.theta[idx] = 0.0;
            st.in_active[idx] = 0;
          }
          __syncwarp();
        }
      }
      if (p == 0) {
        break;
      }
    }
    if (st.in_active[j]) {
      for (int l = lane; l < k; l += kWarp) {
        st.skipped[l] = 0;
      }
      __syncwarp();
    }
    // w = b - K_{:,P} theta_P - ridge theta.
    for (int l = lane; l < m; l += kWarp) {
      double v = b[l];
      for (int a = 0; a < p; ++a) {
        const int idx = st.active[a];
        v -= K[static_cast<int64_t>(idx) * k + l] * st.theta[idx];
      }
      st.w[l] = v - ridge * st.theta[l];
    }
    __syncwarp();
  }
  for (int l = lane; l < k; l += kWarp) {
    theta_out[node * k + l] = st.theta[l];
  }
}

} // namespace

at::Tensor nnk_solve(
    const at::Tensor& K,
    const at::Tensor& b,
    const at::Tensor& m,
    double tol,
    double ridge) {
  TORCH_CHECK(K.is_cuda() && K.scalar_type() == at::kDouble && K.dim() == 3,
              "nnk_solve: K should be a float64 CUDA tensor [B, k, k]");
  const int64_t nodes = K.size(0);
  const int64_t k = K.size(1);
  TORCH_CHECK(k <= kMaxK, "nnk_solve: k should be <= ", kMaxK, " on the native path, got ", k);
  const c10::cuda::CUDAGuard guard(K.device());
  const at::Tensor Kc = K.contiguous();
  const at::Tensor bc = b.to(at::kDouble).contiguous();
  const at::Tensor mc = m.to(at::kInt).contiguous();
  at::Tensor theta = at::zeros({nodes, k}, Kc.options());
  if (nodes == 0) {
    return theta;
  }
  at::Tensor L = at::empty_like(Kc);
  const auto stream = at::cuda::getCurrentCUDAStream();
  const dim3 block(kWarp * kWarpsPerBlock);
  const dim3 grid(static_cast<unsigned>((nodes + kWarpsPerBlock - 1) / kWarpsPerBlock));
  nnk_solve_kernel<<<grid, block, 0, stream>>>(
      Kc.data_ptr<double>(), bc.data_ptr<double>(), mc.data_ptr<int>(), theta.data_ptr<double>(),
      L.data_ptr<double>(), nodes, static_cast<int>(k), tol, ridge);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return theta;
}

} // namespace cuda
} // namespace torch_geometry
