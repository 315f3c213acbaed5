"""Fake (meta) implementations of the ``torch.ops.torch_geometry`` operators.

``torch.compile`` and ``torch.export`` trace a model with tensors that carry no data; for
each operator a fake implementation states the shapes and dtypes of its outputs from those of
its inputs, so that a model calling the operators traces into one graph (no graph break).
Torch also uses them as the operators' ``Meta`` kernels. The real kernels keep all argument
checks; the fake ones check only what their output shapes depend on.

- ``nnk_symmetrize``: the number of edges depends on the weights' values, so it is an unbacked
  size. ``torch.export`` traces it; ``torch.compile`` keeps it in the graph only with
  ``torch._dynamo.config.capture_dynamic_output_shape_ops = True`` (otherwise the graph breaks
  there and the operator runs eagerly, with the same results).
- ``label_smoothness`` returns a Python float that depends on the values of its inputs. A fake
  implementation returning any number would be baked into the compiled graph as a constant
  (a silently wrong result), so it raises torch's "data-dependent output" exception instead:
  ``torch.compile`` then breaks the graph and runs the operator eagerly (correct values),
  ``fullgraph=True`` and ``torch.export`` refuse it: compute it outside the traced region.

Nothing is registered on torch versions without fake tensors (1.13).
"""
from typing import Optional

import torch

from . import _compat

_REGISTERED = False


def _check(cond, message: str) -> None:
    # torch._check also records the condition as a guard/assertion on symbolic sizes.
    torch._check(cond, lambda: message)


def _points(x: torch.Tensor, op: str, name: str = "x") -> None:
    _check(x.dim() == 2, f"{op}: {name} should be a 2-D tensor [N, D], got {x.dim()} dims")
    _check(x.dtype in (torch.float32, torch.float64),
           f"{op}: {name} should be float32 or float64, got {x.dtype}")


def _graph(neighbors: torch.Tensor, weights: torch.Tensor, op: str) -> None:
    _check(neighbors.dim() == 2, f"{op}: neighbors should be [N, k], got {neighbors.dim()} dims")
    _check(neighbors.shape == weights.shape, f"{op}: weights should have the shape of neighbors")


def _knn_graph(x: torch.Tensor, k: int, kernel_name: str = "cosine", sigma: Optional[float] = None,
               sigma_mode: str = "mean", candidate_metric: str = "kernel"):
    _points(x, "knn_graph")
    n = x.shape[0]
    _check(k >= 1, f"knn_graph: k should be >= 1, got {k}")
    _check(k < n, f"knn_graph: k should be < N = {n}")
    return x.new_empty((n, k), dtype=torch.long), x.new_empty((n, k))


def _nnk_graph(x: torch.Tensor, k: int, kernel_name: str = "cosine", sigma: Optional[float] = None,
               sigma_mode: str = "mean", candidates: Optional[torch.Tensor] = None,
               threshold: float = 1e-10, candidate_metric: str = "kernel"):
    _points(x, "nnk_graph")
    n = x.shape[0]
    _check(k >= 1, f"nnk_graph: k should be >= 1, got {k}")
    _check(k < n, f"nnk_graph: k should be < N = {n}")
    return x.new_empty((n, k), dtype=torch.long), x.new_empty((n, k)), x.new_empty((n,))


def _nnk_symmetrize(neighbors: torch.Tensor, weights: torch.Tensor, error: torch.Tensor,
                    mode: str = "min_error"):
    _graph(neighbors, weights, "nnk_symmetrize")
    edges = _compat.new_dynamic_size()
    return (neighbors.new_empty((2, edges), dtype=torch.long),
            weights.new_empty((edges,)))


def _manifold_metrics(x: torch.Tensor, neighbors: torch.Tensor, weights: torch.Tensor,
                      kernel_name: str = "cosine", alpha: float = 0.05):
    _points(x, "manifold_metrics")
    _graph(neighbors, weights, "manifold_metrics")
    n = x.shape[0]
    long = x.new_empty((n,), dtype=torch.long)
    return long, x.new_empty((n,)), torch.empty_like(long), x.new_empty((n,)), x.new_empty((n,))


def _nnk_loo_error(neighbors: torch.Tensor, weights: torch.Tensor, labels: torch.Tensor,
                   num_classes: int):
    _graph(neighbors, weights, "nnk_loo_error")
    n = neighbors.shape[0]
    return weights.new_empty((n,)), weights.new_empty((n,))


def _label_smoothness(neighbors: torch.Tensor, weights: torch.Tensor, labels: torch.Tensor):
    from torch._subclasses.fake_tensor import DataDependentOutputException

    reason = RuntimeError(
        "torch_geometry::label_smoothness returns a Python float computed from the values of "
        "its inputs, which a traced graph cannot hold: call it outside the compiled region "
        "(torch.compile without fullgraph=True does so by itself, at a graph break)")
    raise DataDependentOutputException(torch.ops.torch_geometry.label_smoothness.default) from reason


def _neighborhood_overlap(neighbors_a: torch.Tensor, weights_a: torch.Tensor,
                          neighbors_b: torch.Tensor, weights_b: torch.Tensor):
    _graph(neighbors_a, weights_a, "neighborhood_overlap")
    _graph(neighbors_b, weights_b, "neighborhood_overlap")
    n = neighbors_a.shape[0]
    _check(neighbors_b.shape[0] == n,
           "neighborhood_overlap: both graphs should have the same number of nodes")
    out = weights_a.new_empty((n,), dtype=torch.float64)
    return out, torch.empty_like(out)


def _channel_nnk_graph(activations: torch.Tensor, k: int, kernel_name: str = "cosine",
                       threshold: float = 1e-10, candidate_metric: str = "kernel"):
    _check(activations.dim() >= 3,
           f"channel_nnk_graph: activations should be [N, C, ...], got {activations.dim()} dims")
    _check(activations.dtype in (torch.float32, torch.float64),
           f"channel_nnk_graph: activations should be float32 or float64, got {activations.dtype}")
    n, c = activations.shape[0], activations.shape[1]
    _check(k >= 1, f"channel_nnk_graph: k should be >= 1, got {k}")
    _check(k < n, f"channel_nnk_graph: k should be < N = {n}")
    return (activations.new_empty((c, n, k), dtype=torch.long),
            activations.new_empty((c, n, k)), activations.new_empty((c, n)))


def _channel_overlap(neighbors: torch.Tensor, weights: torch.Tensor):
    _check(neighbors.dim() == 3, f"channel_overlap: neighbors should be [C, N, k], got "
           f"{neighbors.dim()} dims")
    c = neighbors.shape[0]
    return weights.new_empty((c, c), dtype=torch.float64)


FAKES = {
    "knn_graph": _knn_graph,
    "nnk_graph": _nnk_graph,
    "nnk_symmetrize": _nnk_symmetrize,
    "manifold_metrics": _manifold_metrics,
    "nnk_loo_error": _nnk_loo_error,
    "label_smoothness": _label_smoothness,
    "neighborhood_overlap": _neighborhood_overlap,
    "channel_nnk_graph": _channel_nnk_graph,
    "channel_overlap": _channel_overlap,
}


def register() -> bool:
    """Registers every fake implementation once; False where torch has no fake tensors."""
    global _REGISTERED
    registrar = _compat.fake_registrar()
    if registrar is None:
        return False
    if not _REGISTERED:
        for name, fake in FAKES.items():
            registrar(f"torch_geometry::{name}")(fake)
        _REGISTERED = True
    return True


def _nnk_neighbors(queries: torch.Tensor, reference: torch.Tensor, k: int,
                   kernel_name: str = "cosine", sigma: Optional[float] = None,
                   sigma_mode: str = "mean", candidate_metric: str = "kernel",
                   candidates: Optional[torch.Tensor] = None, threshold: float = 1e-10):
    _points(queries, "nnk_neighbors", "queries")
    _points(reference, "nnk_neighbors", "reference")
    _check(queries.shape[1] == reference.shape[1],
           "nnk_neighbors: queries and reference should have the same dimension D")
    _check(k >= 1, f"nnk_neighbors: k should be >= 1, got {k}")
    _check(k < reference.shape[0], "nnk_neighbors: k should be < N (reference rows)")
    q = queries.shape[0]
    return (queries.new_empty((q, k), dtype=torch.long), queries.new_empty((q, k)),
            queries.new_empty((q,)))


def _nnk_interpolate(neighbors: torch.Tensor, weights: torch.Tensor, values: torch.Tensor):
    _graph(neighbors, weights, "nnk_interpolate")
    _check(values.dim() == 2, "nnk_interpolate: values should be [N, C]")
    dtype = torch.promote_types(weights.dtype, values.dtype)
    return values.new_empty((neighbors.shape[0], values.shape[1]), dtype=dtype)


FAKES.update({"nnk_neighbors": _nnk_neighbors, "nnk_interpolate": _nnk_interpolate})
