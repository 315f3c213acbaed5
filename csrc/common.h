// Shared argument parsing and input checks for the torch_geometry operators.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Optional.h>
#include <c10/util/string_view.h>

#include <cstdint>
#include <string>

namespace torch_geometry {

// The similarity kernels of DESIGN §2. Both give kappa(x, x) = 1 and values in [0, 1].
enum class Kernel {
  Cosine,    // (1 + cos(x, y)) / 2 on unit-normalised rows; distance 1 - cos
  Gaussian,  // exp(-||x - y||^2 / (2 sigma^2)); distance ||x - y||
};

enum class SigmaMode {
  Fixed,  // a number given by the caller
  Mean,   // mean over nodes of (distance to the k-th neighbour) / 3
  Local,  // per query node, (distance to its k-th neighbour) / 3
};

// How nnk_symmetrize turns the directed graph into an undirected one (DESIGN §2).
enum class SymmetrizeMode {
  None,      // directed edges as they are
  Max,       // W = max(W, W^T)
  Mean,      // (W + W^T) / 2
  MinError,  // the endpoint with the smaller reconstruction error chooses (default)
};

// How a conv activation [N, C, H, W] becomes a point set [N, D] for a whole-layer graph.
enum class Reduce {
  Flatten,  // D = C * H * W
  AvgPool,  // global average pool, D = C
};

// Defaults shared by the operator schemas, hooks/ and the Python wrappers: one definition.
constexpr double kDefaultThreshold = 1e-10;  // weights <= threshold are dropped
constexpr const char* kDefaultKernel = "cosine";
constexpr const char* kDefaultSigmaMode = "mean";
constexpr const char* kDefaultSymmetrize = "min_error";
constexpr const char* kDefaultReduce = "flatten";

// Largest number of classes a label tensor may imply (labels < kMaxClasses): far above any
// classification data set, and low enough that a per-class vector anywhere stays small.
constexpr int64_t kMaxClasses = int64_t(1) << 24;

// Parses "cosine" / "gaussian"; `op` names the operator in the error message.
Kernel parse_kernel(c10::string_view kernel, const char* op);

// Resolves the sigma arguments of the Gaussian kernel: a number wins (it must be finite
// and > 0); otherwise `sigma_mode` ("mean" or "local"). For the cosine kernel a number is
// refused, since it would be silently ignored.
SigmaMode parse_sigma(
    Kernel kernel,
    const c10::optional<double>& sigma,
    c10::string_view sigma_mode,
    const char* op);

// Parses "none" / "max" / "mean" / "min_error".
SymmetrizeMode parse_symmetrize(c10::string_view mode, const char* op);

// Parses "flatten" / "avgpool".
Reduce parse_reduce(c10::string_view reduce, const char* op);

// Refuses a tensor that requires grad: the operators are not differentiable, and a result
// silently cut from the graph would look like one that is.
void check_no_grad(const at::Tensor& t, const char* op, const char* name);

// Class labels, checked once for every operator and every hooks/ object that reads them.
struct Labels {
  at::Tensor y;         // [N] int64, contiguous, CPU, detached
  int64_t num_classes;  // max(y) + 1 (the one place num_classes is derived)
};

// Checks labels: 1-D, an integer dtype (bool refused: it is a mask, not classes), n values
// (n < 0: any length >= 1), each in [0, kMaxClasses); empty labels are refused. When
// `num_classes` > 0 is given, labels must also be < num_classes and it is returned as is.
Labels check_labels(
    const at::Tensor& labels,
    int64_t n,
    const char* op,
    int64_t num_classes = -1);

// Whether every value of x is finite. For float32/float64 CPU tensors it streams over x
// (at::isfinite(x).all() materialises |x| and two bool tensors: ~280 MiB at N = 60,000,
// D = 784); other tensors fall back to at::isfinite.
bool all_finite(const at::Tensor& x);

// Checks a point set: 2-D, floating (float32/float64), N >= 1, D >= 1, every value finite,
// not requiring grad.
void check_points(const at::Tensor& x, const char* op);

// Checks 1 <= k < N (k is refused, not clamped, when there are not k other points).
void check_k(int64_t k, int64_t n, const char* op);

// Runs body(i0, i1) over [0, n) in chunks of `chunk` taken dynamically by torch's threads
// (uneven per-node work: graph supports of different sizes). Built on at::parallel_for, the
// one threading primitive of the operators: an exception thrown by a body (TORCH_CHECK,
// bad_alloc) is caught inside the parallel region and rethrown to the caller after it.
template <typename F>
void parallel_chunks(int64_t n, int64_t chunk, const F& body);

} // namespace torch_geometry

#include "common_inl.h"
