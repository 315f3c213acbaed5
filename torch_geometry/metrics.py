"""Manifold graph metrics (DESIGN §3): local geometry, label signals and comparisons.

Every function reads an NNK graph in its *directed* form (docs/CONVENTIONS.md): any object
with ``neighbors`` (int64 ``[N, k]``, -1 padded) and ``weights`` (``[N, k]``, 0 off the NNK
support) attributes, and optionally ``error`` ``[N]`` and ``kernel`` (the graph returned by
:func:`torch_geometry.nnk_graph` has them); a ``(neighbors, weights[, error])`` tuple or a dict
with those keys also works. The support of node i is ``S_i = {neighbors[i, j] : weights[i, j] > 0}``.
Fields and points may be numpy arrays. The operators are not differentiable: tensors are
detached, and float16/bfloat16 values (AMP) are converted to float32: no graph or metric is
computed in half precision. Results stay on the graph's device (labels are moved there);
only :func:`summarize` reads per-node values on the host.

The computations are the compiled operators ``torch.ops.torch_geometry.manifold_metrics``,
``nnk_loo_error``, ``label_smoothness`` and ``neighborhood_overlap``; this module only
normalises arguments and names the results.

Example::

    >>> import torch, torch_geometry
    >>> from torch_geometry import metrics
    >>> x = torch.randn(500, 32)
    >>> g = torch_geometry.nnk_graph(x, k=20, kernel="cosine")
    >>> m = metrics.manifold_metrics(x, g)
    >>> sorted(m)
    ['curvature', 'degree', 'diameter', 'error', 'isolated', 'local_dim', 'log_volume']
    >>> summary = metrics.summarize(m)
    >>> summary["local_dim"]["median"]  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from ._inputs import as_tensor, check_device, check_k

__all__ = [
    "manifold_metrics",
    "loo_error",
    "label_smoothness",
    "neighborhood_overlap",
    "weighted_overlap",
    "augmentation_invariance",
    "summarize",
]


def _ops():
    # Importing the package loads the compiled library that registers the operators.
    import torch_geometry  # noqa: F401

    return torch.ops.torch_geometry


def _directed(graph: Any, what: str = "graph") -> Tuple[torch.Tensor, torch.Tensor,
                                                        Optional[torch.Tensor], Optional[str]]:
    """Returns (neighbors, weights, error or None, kernel or None) of a directed graph."""
    if isinstance(graph, dict):
        get = graph.get
    elif isinstance(graph, (tuple, list)) and not hasattr(graph, "neighbors"):
        if len(graph) not in (2, 3):
            raise TypeError(f"{what}: a tuple graph should be (neighbors, weights[, error]), "
                            f"got {len(graph)} items")
        items = dict(zip(("neighbors", "weights", "error"), graph))
        get = items.get
    else:
        def get(name, default=None):
            return getattr(graph, name, default)
    neighbors, weights, error = get("neighbors"), get("weights"), get("error")
    if neighbors is None or weights is None:
        raise TypeError(
            f"{what}: expected a directed NNK graph with tensor fields 'neighbors' and "
            f"'weights' (e.g. torch_geometry.nnk_graph(...)), got {type(graph).__name__}")
    neighbors = as_tensor(neighbors, what, "neighbors")
    weights = as_tensor(weights, what, "weights")
    if error is not None:
        error = as_tensor(error, what, "error")
    kernel = get("kernel")
    return neighbors, weights, error, kernel if isinstance(kernel, str) else None


def manifold_metrics(x: torch.Tensor, graph: Any, alpha: float = 0.05,
                     kernel: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """Per-node local geometry of the NNK graph built on ``x`` (DESIGN §3).

    Args:
        x (Tensor[N, D] or ndarray): float32/float64 points the graph was built on (any
            strides; float16/bfloat16 are converted to float32).
        graph: the directed NNK graph of ``x``.
        alpha (float): Fukunaga-Olsen threshold of ``local_dim``, in (0, 1) (default: 0.05).
        kernel (str, optional): ``"cosine"`` (distance 1 - cos, on unit-normalised rows) or
            ``"gaussian"`` (euclidean distance). Default: ``graph.kernel`` if the graph
            records it, else ``"cosine"``.

    Returns:
        dict of Tensor[N]:

        - ``degree`` (int64): |S_i|.
        - ``diameter``: max distance between two points of S_i and i; in [0, 2] for cosine.
        - ``local_dim`` (int64): squared singular values of V_i = [x_j - x_i] above
          ``alpha`` times the largest.
        - ``log_volume``: sum over r <= local_dim of log(s_r / sqrt(|S_i|)).
        - ``curvature``: theta-weighted mean over j in S_i of 1 - ||T_i^T T_j||_F^2 / m,
          m = min(local_dim_i, local_dim_j); edges with m = 0 are left out.
        - ``error``: the graph's reconstruction error (only if the graph has one).
        - ``isolated`` (bool): degree 0. Such nodes get diameter = local_dim = log_volume =
          curvature = 0 (never NaN); ``metrics["isolated"].sum()`` counts them.
    """
    neighbors, weights, error, graph_kernel = _directed(graph)
    x = as_tensor(x, "manifold_metrics")
    check_device("manifold_metrics", x, neighbors, weights)
    kernel = kernel or graph_kernel or "cosine"
    degree, diameter, local_dim, log_volume, curvature = _ops().manifold_metrics(
        x, neighbors, weights, kernel, float(alpha))
    out = {
        "degree": degree,
        "diameter": diameter,
        "local_dim": local_dim,
        "log_volume": log_volume,
        "curvature": curvature,
    }
    if error is not None:
        out["error"] = error
    out["isolated"] = degree == 0
    return out


def _labels(labels: Any, device: torch.device) -> torch.Tensor:
    # Detached and moved to the graph's device (labels are [N], the graph is where the
    # activations were); the operators check them (dtype, shape, range) and derive
    # num_classes themselves.
    return torch.as_tensor(labels).detach().to(device)


def loo_error(graph: Any, labels: Any,
              num_classes: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Leave-one-out NNK interpolation error of the labels, per node.

    yhat_i = sum_j theta_ij onehot(y_j) / sum_j theta_ij (the graph never holds i itself).

    Args:
        graph: a directed NNK graph on N nodes.
        labels (Tensor[N]): integer classes in [0, num_classes).
        num_classes (int, optional): default ``labels.max() + 1``.

    Returns:
        (hard, soft), each Tensor[N] in the weights' dtype: ``hard`` = 1 where argmax yhat_i
        (ties to the lowest class) differs from y_i; ``soft`` = 1 - yhat_i[y_i]. A node
        without edges counts as an error (hard = soft = 1). ``hard.mean()`` is the LOO error.
    """
    neighbors, weights, _, _ = _directed(graph)
    labels = _labels(labels, neighbors.device)
    check_device("nnk_loo_error", neighbors, weights, labels)
    return _ops().nnk_loo_error(neighbors, weights, labels,
                                None if num_classes is None else int(num_classes))


def label_smoothness(graph: Any, labels: Any) -> float:
    """Share of the graph's edge weight that joins different classes, in [0, 1].

    Computed on the directed weights, sum theta_ij [y_i != y_j] / sum theta_ij, which equals
    the ratio on the undirected graph (W + W^T) / 2 (``symmetrize="mean"``). 0 for a graph
    without edges. Low = labels vary smoothly over the graph.

    Args:
        graph: a directed NNK graph on N nodes.
        labels (Tensor[N]): integer classes.
    """
    neighbors, weights, _, _ = _directed(graph)
    labels = _labels(labels, neighbors.device)
    check_device("label_smoothness", neighbors, weights, labels)
    return float(_ops().label_smoothness(neighbors, weights, labels))


def _overlap(g_a: Any, g_b: Any) -> Tuple[torch.Tensor, torch.Tensor]:
    na, wa, _, _ = _directed(g_a, "g_a")
    nb, wb, _, _ = _directed(g_b, "g_b")
    check_device("neighborhood_overlap", na, wa, nb, wb)
    return _ops().neighborhood_overlap(na, wa, nb, wb)


def neighborhood_overlap(g_a: Any, g_b: Any) -> torch.Tensor:
    """Per-node Jaccard index of the NNK supports of two graphs on the same N points.

    The two graphs may come from representations of any dimensions (two layers, epochs,
    seeds, models); their mean overlap is the geometric stability between them.

    Returns:
        Tensor[N] float64 in [0, 1]; 1 for a node isolated in both graphs.
    """
    return _overlap(g_a, g_b)[0]


def weighted_overlap(g_a: Any, g_b: Any) -> torch.Tensor:
    """Per-node sum_j min(p_ij^A, p_ij^B), p = NNK weights divided by their row sum.

    Returns:
        Tensor[N] float64 in [0, 1]; 1 for a node isolated in both graphs, 0 if in one only.
    """
    return _overlap(g_a, g_b)[1]


def augmentation_invariance(features: torch.Tensor, augmented: Sequence[torch.Tensor],
                            k: int, kernel: str = "cosine",
                            **graph_kwargs: Any) -> Dict[str, torch.Tensor]:
    """How a representation treats augmented copies of its inputs (DESIGN §3).

    Builds one NNK graph on the originals F ([N, D]) and all augmented copies F_t ([N, D]
    each, row i an augmentation of input i), then per original:

    - ``diameter``: the diameter of its NNK polytope (small = augmentations and neighbours
      collapse onto it);
    - ``self_share``: the share of its NNK neighbours that are its own augmentations
      (0 for an isolated node).

    Args:
        features (Tensor[N, D]): representations of the original inputs.
        augmented (list of Tensor[N, D]): one tensor per augmentation.
        k (int): NNK candidates per node (< N * (1 + len(augmented))).
        kernel (str): ``"cosine"`` or ``"gaussian"`` (default: ``"cosine"``).
        **graph_kwargs: passed on to :func:`torch_geometry.nnk_graph`.

    Returns:
        dict with ``diameter`` (Tensor[N], dtype of features) and ``self_share``
        (Tensor[N] float64).
    """
    import torch_geometry

    features = as_tensor(features, "augmentation_invariance", "features")
    augmented = [as_tensor(a, "augmentation_invariance", f"augmented[{t}]")
                 for t, a in enumerate(augmented)]
    k = check_k(k, "augmentation_invariance")
    if features.dim() != 2:
        raise ValueError(f"augmentation_invariance: features should be [N, D], got shape "
                         f"{tuple(features.shape)}")
    n = features.shape[0]
    for t, a in enumerate(augmented):
        if a.shape != features.shape:
            raise ValueError(f"augmentation_invariance: augmented[{t}] should have the shape "
                             f"of features {tuple(features.shape)}, got {tuple(a.shape)}")
    points = torch.cat([features] + [a.to(features.dtype) for a in augmented], dim=0)
    graph = torch_geometry.nnk_graph(points, k, kernel=kernel, **graph_kwargs)
    neighbors, weights, _, _ = _directed(graph)
    metrics = manifold_metrics(points, graph, kernel=kernel)
    nb, w = neighbors[:n], weights[:n]
    support = (nb >= 0) & (w > 0)
    own = support & (nb >= n) & (nb % n == torch.arange(n, device=nb.device).unsqueeze(1))
    degree = support.sum(1)
    share = own.sum(1).double() / degree.clamp(min=1).double()
    return {"diameter": metrics["diameter"][:n], "self_share": share}


def summarize(metrics: Dict[str, torch.Tensor], bins: int = 20,
              exclude_isolated: bool = True) -> Dict[str, Dict[str, Any]]:
    """Summary statistics per metric: mean, median, quartiles, min, max and a histogram.

    The statistics are computed by the same C++ code as the tracker's history
    (``hooks/summary.h``): quartiles by linear interpolation, non-finite values left out.

    Args:
        metrics: a dict of Tensor[N] (e.g. from :func:`manifold_metrics`).
        bins (int): histogram bins over [min, max] (default: 20).
        exclude_isolated (bool): leave nodes with ``metrics["isolated"]`` out of the
            statistics (their values are conventions, not measurements) (default: True).

    Returns:
        dict metric -> {"count", "mean", "median", "q25", "q75", "min", "max",
        "hist": list of counts, "bin_edges": list of bins + 1 floats}; plus
        "isolated": {"count": number of isolated nodes} when the mask is present.
        NaN statistics for a metric with no values.
    """
    from ._ops import ensure_loaded

    core = ensure_loaded()
    mask = metrics.get("isolated")
    # The C++ summary reads the values ([N] per metric) on the host; it copies them there.
    keep = ~mask.bool() if mask is not None and exclude_isolated else None
    out: Dict[str, Dict[str, Any]] = {}
    for name, values in metrics.items():
        if name == "isolated" or not isinstance(values, torch.Tensor) or values.dim() != 1:
            continue
        include = keep if keep is not None and keep.shape == values.shape else None
        s = core.summarize(values.detach(), int(bins), include)
        out[name] = {"count": s.count, "mean": s.mean, "median": s.median, "q25": s.q25,
                     "q75": s.q75, "min": s.min, "max": s.max, "hist": list(s.hist),
                     "bin_edges": list(s.bin_edges)}
    if mask is not None:
        out["isolated"] = {"count": int(mask.sum())}
    return out
