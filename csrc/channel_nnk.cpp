#include "channel_nnk.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include "common.h"
#include "nnk_graph.h"

namespace torch_geometry {
namespace ops {

namespace {

// Composes nnk_graph over the channels: registered as CompositeExplicitAutograd, so it
// runs on any device nnk_graph has a kernel for.
std::tuple<at::Tensor, at::Tensor, at::Tensor> channel_nnk_graph_composite(
    const at::Tensor& activations,
    int64_t k,
    c10::string_view kernel,
    double threshold,
    c10::string_view candidate_metric) {
  const char* op = "channel_nnk_graph";
  parse_candidate_metric(candidate_metric, op);  // refused before any channel is built
  TORCH_CHECK(activations.dim() >= 3, op,
              ": activations should be [N, C, ...] with spatial dims, got shape ",
              activations.sizes());
  check_no_grad(activations, op, "activations");
  const int64_t n = activations.size(0), c = activations.size(1);
  TORCH_CHECK(c >= 1, op, ": activations have no channels (C = 0)");
  at::Tensor nbr = at::empty({c, n, k}, activations.options().dtype(at::kLong));
  at::Tensor w = at::empty({c, n, k}, activations.options());
  at::Tensor err = at::empty({c, n}, activations.options());
  // Channels one after another, nodes in parallel inside each graph: a channel's graph
  // is small (D = H*W), and one level of threads keeps the threads and BLAS from fighting.
  for (int64_t ch = 0; ch < c; ++ch) {
    const at::Tensor x = activations.select(1, ch).reshape({n, -1});
    at::Tensor a, b, e;
    std::tie(a, b, e) =
        nnk_graph(x, k, kernel, c10::nullopt, kDefaultSigmaMode, c10::nullopt, threshold,
                  candidate_metric);
    nbr[ch].copy_(a);
    w[ch].copy_(b);
    err[ch].copy_(e);
  }
  return std::make_tuple(nbr, w, err);
}

} // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> channel_nnk_graph(
    const at::Tensor& activations,
    int64_t k,
    c10::string_view kernel,
    double threshold,
    c10::string_view candidate_metric) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torch_geometry::channel_nnk_graph", "")
                       .typed<decltype(channel_nnk_graph)>();
  return op.call(activations, k, kernel, threshold, candidate_metric);
}

at::Tensor channel_overlap(const at::Tensor& neighbors, const at::Tensor& weights) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torch_geometry::channel_overlap", "")
                       .typed<decltype(channel_overlap)>();
  return op.call(neighbors, weights);
}

TORCH_LIBRARY_FRAGMENT(torch_geometry, m) {
  m.def(
      "channel_nnk_graph(Tensor activations, int k, str kernel_name=\"cosine\", "
      "float threshold=1e-10, str candidate_metric=\"kernel\") "
      "-> (Tensor neighbors, Tensor weights, Tensor error)");
  m.def("channel_overlap(Tensor neighbors, Tensor weights) -> Tensor");
}

TORCH_LIBRARY_IMPL(torch_geometry, CompositeExplicitAutograd, m) {
  m.impl("channel_nnk_graph", &channel_nnk_graph_composite);
}

} // namespace ops
} // namespace torch_geometry
