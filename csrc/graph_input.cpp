#include "graph_input.h"

#include <ATen/Dispatch.h>

#include "common.h"

#include <algorithm>
#include <cmath>

namespace torch_geometry {

void check_directed_graph(
    const at::Tensor& neighbors,
    const at::Tensor& weights,
    int64_t n,
    const char* op,
    const char* name) {
  TORCH_CHECK(
      neighbors.dim() == 2,
      op,
      ": neighbors",
      name,
      " should be a 2-D tensor [N, k], got shape ",
      neighbors.sizes());
  TORCH_CHECK(
      neighbors.scalar_type() == at::kLong,
      op,
      ": neighbors",
      name,
      " should be int64, got ",
      neighbors.scalar_type());
  TORCH_CHECK(
      weights.sizes() == neighbors.sizes(),
      op,
      ": weights",
      name,
      " should have the shape of neighbors",
      name,
      " ",
      neighbors.sizes(),
      ", got ",
      weights.sizes());
  TORCH_CHECK(
      at::isFloatingType(weights.scalar_type()),
      op,
      ": weights",
      name,
      " should be floating (float32/float64), got ",
      weights.scalar_type());
  check_no_grad(neighbors, op, "neighbors");
  check_no_grad(weights, op, "weights");
  const int64_t nodes = n < 0 ? neighbors.size(0) : n;
  TORCH_CHECK(
      neighbors.size(0) == nodes,
      op,
      ": the graph",
      name,
      " should have N = ",
      nodes,
      " rows, got ",
      neighbors.size(0));
  if (neighbors.numel() == 0) {
    return;
  }
  // One serial pass over the raw values: the graph is N x k, and a chain of ATen reductions
  // here would open one parallel region each, which costs more than the scan itself.
  const at::Tensor nb_t = neighbors.contiguous();
  const at::Tensor w_t = weights.contiguous();
  const int64_t* nb = nb_t.data_ptr<int64_t>();
  const int64_t count = nb_t.numel();
  const int64_t k = nb_t.size(1);
  int64_t lo = nb[0];
  int64_t hi = nb[0];
  int64_t self_loop = -1;  // a node listed as its own neighbour
  bool weights_ok = true;
  bool padding_ok = true;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, w_t.scalar_type(), "check_directed_graph", [&] {
        const scalar_t* w = w_t.data_ptr<scalar_t>();
        for (int64_t e = 0; e < count; ++e) {
          lo = std::min(lo, nb[e]);
          hi = std::max(hi, nb[e]);
          const double t = static_cast<double>(w[e]);
          weights_ok = weights_ok && std::isfinite(t) && t >= 0;
          padding_ok = padding_ok && !(nb[e] < 0 && t > 0);
          if (nb[e] == e / k && self_loop < 0) {
            self_loop = nb[e];
          }
        }
      });
  TORCH_CHECK(
      lo >= -1 && hi < nodes,
      op,
      ": neighbors",
      name,
      " should hold indices in [0, N) or -1 (padding) with N = ",
      nodes,
      ", got values in [",
      lo,
      ", ",
      hi,
      "]");
  TORCH_CHECK(
      weights_ok,
      op,
      ": weights",
      name,
      " should be finite and >= 0, got a negative, NaN or Inf value");
  TORCH_CHECK(
      padding_ok,
      op,
      ": weights",
      name,
      " should be 0 on padding slots (neighbors",
      name,
      " == -1), got a positive weight there");
  TORCH_CHECK(
      self_loop < 0,
      op,
      ": neighbors",
      name,
      " should not list a node as its own neighbour (no self-loops), got node ",
      self_loop,
      " in its own row");
}

void check_directed_graph(
    const at::Tensor& neighbors,
    const at::Tensor& weights,
    const at::Tensor& error,
    const char* op) {
  check_directed_graph(neighbors, weights, -1, op);
  const int64_t n = neighbors.size(0);
  check_no_grad(error, op, "error");
  TORCH_CHECK(
      error.dim() == 1 && error.size(0) == n,
      op,
      ": error should have shape [N] = [",
      n,
      "], got ",
      error.sizes());
  TORCH_CHECK(
      at::isFloatingType(error.scalar_type()),
      op,
      ": error should be floating (float32/float64), got ",
      error.scalar_type());
  TORCH_CHECK(
      all_finite(error), op, ": error should hold finite values, got NaN or Inf");
}

void check_graph_pair(
    const at::Tensor& neighbors_a,
    const at::Tensor& weights_a,
    const at::Tensor& neighbors_b,
    const at::Tensor& weights_b,
    const char* op) {
  check_directed_graph(neighbors_a, weights_a, -1, op, "_a");
  const int64_t n = neighbors_a.size(0);
  TORCH_CHECK(
      neighbors_b.dim() == 2 && neighbors_b.size(0) == n,
      op,
      ": both graphs should be on the same N nodes: neighbors_a has N = ",
      n,
      ", neighbors_b has shape ",
      neighbors_b.sizes());
  check_directed_graph(neighbors_b, weights_b, n, op, "_b");
}

} // namespace torch_geometry
