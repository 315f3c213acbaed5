"""Channel-wise NNK graphs (DESIGN §4): one graph per channel of conv activations.

Channel c's points are the N inputs with features ``a[:, c].flatten()``. Low-dimensional
maps (2x2, 3x3: D < k) and all-zero maps after a ReLU are the normal case and are handled
exactly (singular kernels; isolated nodes under the cosine kernel), silently.
"""
from typing import List

import torch

from ._ops import ensure_loaded
from .graph import NNKGraph
from .metrics import loo_error

ensure_loaded()


def channel_graphs(a: torch.Tensor, k: int, kernel: str = "cosine",
                   threshold: float = 1e-10, candidate_metric: str = "kernel") -> List[NNKGraph]:
    """NNK graph of every channel.

    Args:
        a (Tensor[N, C, H, W] or [N, C, L]): activations, float32/float64, CPU.
        k (int): candidates per node, ``1 <= k < N``.
        kernel (str): ``"cosine"`` or ``"gaussian"``. (default: ``"cosine"``)
        threshold (float): weights ``<= threshold`` are dropped. (default: ``1e-10``)
        candidate_metric (str): ``"kernel"`` or ``"euclidean"`` (each channel's candidates
            are its nearest points by L2 distance on the raw maps, as CW-DeepNNK does), see
            :func:`torch_geometry.nnk_graph`. (default: ``"kernel"``)

    Returns:
        list of C :class:`NNKGraph` (directed form; ``symmetrize="min_error"``).

    Example:
        >>> a = torch.relu(torch.randn(500, 8, 3, 3))
        >>> graphs = channel_graphs(a, k=10)
        >>> len(graphs), graphs[0].neighbors.shape
        (8, torch.Size([500, 10]))
    """
    nbr, w, err = torch.ops.torch_geometry.channel_nnk_graph(
        a, int(k), kernel, float(threshold), candidate_metric)
    n = a.shape[0]
    out = []
    for c in range(nbr.shape[0]):
        zero = (a[:, c].reshape(n, -1) == 0).all(1) if kernel == "cosine" else None
        out.append(NNKGraph(nbr[c], w[c], err[c], zero_rows=zero, kernel=kernel))
    return out


def _stack(graphs: List[NNKGraph]):
    if not graphs:
        raise ValueError("graphs is empty")
    return (torch.stack([g.neighbors for g in graphs]), torch.stack([g.weights for g in graphs]))


def channel_overlap(graphs: List[NNKGraph]) -> torch.Tensor:
    """Channel overlap matrix ``O[a, b]`` = mean over nodes of the Jaccard index of their
    NNK neighbourhoods in channels a and b. Tensor[C, C] float64; high = redundant channels."""
    nbr, w = _stack(graphs)
    return torch.ops.torch_geometry.channel_overlap(nbr, w)


def channel_loo_error(graphs: List[NNKGraph], labels: torch.Tensor) -> torch.Tensor:
    """Per-channel NNK leave-one-out label error: the 0/1 (hard) error of
    :func:`torch_geometry.metrics.loo_error` averaged over nodes. Tensor[C] float64.
    ``labels`` reach the operator as given (it checks them)."""
    if not graphs:
        raise ValueError("graphs is empty")
    return torch.stack([loo_error(g, labels)[0].double().mean() for g in graphs])


def channel_degree(graphs: List[NNKGraph]) -> torch.Tensor:
    """Per-channel mean NNK degree. Tensor[C] float64."""
    return torch.stack([g.degree.double().mean() for g in graphs])
