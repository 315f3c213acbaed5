"""Geometric stability: how consistent the local geometry of the same points is across
representations (training seeds, data subsets, layers, models; any dimensions), with linear
CKA beside it as the standard reference measure."""
from itertools import combinations
from typing import Any, Dict, Optional, Sequence

import numpy as np
import torch

from . import metrics
from ._inputs import as_tensor
from .graph import nnk_graph


def linear_cka(a: Any, b: Any) -> float:
    """Linear CKA (Kornblith et al., 2019) of two representations of the same N points.

    ``||B_c^T A_c||_F^2 / (||A_c^T A_c||_F ||B_c^T B_c||_F)`` with column-centred A [N, D1]
    and B [N, D2]; in [0, 1], invariant to orthogonal maps and isotropic scaling of either.
    """
    a = as_tensor(a, "linear_cka", "a").double()
    b = as_tensor(b, "linear_cka", "b").double()
    if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[0]:
        raise ValueError(f"linear_cka: a and b should be [N, D1] and [N, D2] on the same N "
                         f"points, got {tuple(a.shape)} and {tuple(b.shape)}")
    a = a - a.mean(0)
    b = b - b.mean(0)
    denom = torch.linalg.norm(a.T @ a) * torch.linalg.norm(b.T @ b)
    if denom == 0:
        raise ValueError("linear_cka: a representation is constant over the points")
    return float(torch.linalg.norm(b.T @ a) ** 2 / denom)


def stability(features_list: Sequence[Any], probe_labels: Optional[Any] = None, k: int = 10,
              kernel: str = "cosine", with_cka: bool = True,
              **graph_kwargs: Any) -> Dict[str, Any]:
    """NNK neighbourhood overlap of the same points across representations.

    One NNK graph per representation (row i of every tensor is the same input), then for
    every pair (a, b) the per-node Jaccard index of the NNK supports and the weighted
    overlap sum_j min(p_ij^a, p_ij^b) (p = row-normalised weights) by the
    ``neighborhood_overlap`` operator.

    Args:
        features_list (sequence of Tensor[N, D_m] or ndarray): >= 2 representations of the
            same N points; dimensions may differ.
        probe_labels ([N] labels, optional): adds the mean overlaps per class.
        k (int): NNK candidates per node. (default: 10)
        kernel (str): ``"cosine"`` or ``"gaussian"``. (default: ``"cosine"``)
        with_cka (bool): also linear CKA of every pair. (default: True)
        **graph_kwargs: passed on to :func:`torch_geometry.nnk_graph`.

    Returns:
        dict with
        ``pairs`` list of (a, b);
        ``jaccard``, ``weighted`` Tensor[P, N] float64 (per pair and node);
        ``node_jaccard``, ``node_weighted`` Tensor[N] (mean over pairs: each point's
        stability); ``mean_jaccard``, ``mean_weighted`` float;
        ``cka`` Tensor[P] float64 (with_cka); ``mean_cka`` float;
        ``per_class`` {label: {"jaccard": float, "weighted": float}} (probe_labels).
    """
    feats = [as_tensor(f, "stability", f"features_list[{i}]") for i, f in enumerate(features_list)]
    if len(feats) < 2:
        raise ValueError(f"stability: needs >= 2 representations, got {len(feats)}")
    n = feats[0].shape[0]
    for i, f in enumerate(feats):
        if f.dim() != 2 or f.shape[0] != n:
            raise ValueError(f"stability: every representation should be [N, D] on the same "
                             f"N = {n} points; features_list[{i}] has shape {tuple(f.shape)}")
    graphs = [nnk_graph(f, k, kernel=kernel, **graph_kwargs) for f in feats]
    pairs = list(combinations(range(len(feats)), 2))
    jac, wov = [], []
    for a, b in pairs:
        jac.append(metrics.neighborhood_overlap(graphs[a], graphs[b]))
        wov.append(metrics.weighted_overlap(graphs[a], graphs[b]))
    jac_t, wov_t = torch.stack(jac), torch.stack(wov)
    out: Dict[str, Any] = {
        "pairs": pairs, "jaccard": jac_t, "weighted": wov_t,
        "node_jaccard": jac_t.mean(0), "node_weighted": wov_t.mean(0),
        "mean_jaccard": float(jac_t.mean()), "mean_weighted": float(wov_t.mean()),
    }
    if with_cka:
        cka = torch.tensor([linear_cka(feats[a], feats[b]) for a, b in pairs], dtype=torch.float64)
        out["cka"] = cka
        out["mean_cka"] = float(cka.mean())
    if probe_labels is not None:
        y = probe_labels.cpu().numpy() if isinstance(probe_labels, torch.Tensor) \
            else np.asarray(probe_labels)
        if y.shape != (n,):
            raise ValueError(f"stability: probe_labels should have shape [N] = [{n}], got {y.shape}")
        nj, nw = out["node_jaccard"].numpy(), out["node_weighted"].numpy()
        out["per_class"] = {c.item() if hasattr(c, "item") else c:
                            {"jaccard": float(nj[y == c].mean()), "weighted": float(nw[y == c].mean())}
                            for c in np.unique(y)}
    return out
