"""NNK beyond the training set: queries placed among a reference set, and NNK interpolation
of reference values at the queries (DESIGN §2, out of sample)."""
from typing import Optional, Tuple, Union

import torch

from ._inputs import as_tensor, check_device, check_k
from .graph import _sigma_args


def nnk_neighbors(queries: torch.Tensor, reference: torch.Tensor, k: int,
                  kernel: str = "cosine", sigma: Union[float, str, None] = None,
                  candidate_metric: str = "kernel",
                  candidates: Optional[torch.Tensor] = None,
                  threshold: float = 1e-10) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The NNK polytope of each query among the reference points.

    Each query q is approximated by a non-negative combination of its candidates S among
    the reference points (never other queries):
    ``theta_q = argmin_{theta >= 0} 1/2 theta^T K_SS theta - k_S^T theta``, solved exactly
    by :func:`nnk_graph`'s solver under its rules. A query equal to a reference point gets
    that point with weight 1 (and error 0).

    Args:
        queries (Tensor[Q, D] or ndarray): new points, float32 or float64 (float16/bfloat16
            become float32), finite. Detached.
        reference (Tensor[N, D] or ndarray): the reference set, the dtype and device of
            ``queries``.
        k (int): candidates per query, ``1 <= k < N``.
        kernel (str): ``"cosine"`` or ``"gaussian"``. (default: ``"cosine"``)
        sigma (float or str, optional): Gaussian bandwidth: a number (the same for every
            batch of queries), ``"mean"`` (mean over *these queries* of the distance to their
            k-th candidate / 3) or ``"local"`` (per query). (default: ``"mean"``)
        candidate_metric (str): ``"kernel"`` (the k most similar under the kernel) or
            ``"euclidean"`` (the k nearest by L2 distance on the raw features, as the
            published DeepNNK code ranks them). (default: ``"kernel"``)
        candidates (Tensor[Q, k] int64, optional): indices into ``reference`` from any
            engine (e.g. FAISS); ``-1`` pads. (default: exact search)
        threshold (float): weights ``<= threshold`` are dropped. (default: ``1e-10``)

    Returns:
        (neighbors Tensor[Q, k] int64 into reference, -1 padded, by weight descending;
        weights Tensor[Q, k]; error Tensor[Q], the reconstruction error in [0, 1])

    Example:
        >>> ref, q = torch.randn(1000, 16), torch.randn(5, 16)
        >>> nbr, w, err = torch_geometry.nnk_neighbors(q, ref, k=10)
        >>> nbr.shape, w.shape, err.shape
        (torch.Size([5, 10]), torch.Size([5, 10]), torch.Size([5]))
    """
    queries = as_tensor(queries, "nnk_neighbors", "queries")
    reference = as_tensor(reference, "nnk_neighbors", "reference")
    k = check_k(k, "nnk_neighbors")
    if candidates is not None:
        candidates = as_tensor(candidates, "nnk_neighbors", "candidates")
    check_device("nnk_neighbors", queries, reference, candidates)
    s, mode = _sigma_args(kernel, sigma)
    return torch.ops.torch_geometry.nnk_neighbors(
        queries, reference, k, kernel, s, mode, candidate_metric, candidates,
        float(threshold))


def nnk_interpolate(neighbors: torch.Tensor, weights: torch.Tensor,
                    values: torch.Tensor) -> torch.Tensor:
    """NNK regression of reference values at the queries.

    ``out[q] = sum_j weights[q, j] values[neighbors[q, j]] / sum_j weights[q, j]``; a query
    whose weights sum to 0 (no candidate: e.g. an all-zero row under the cosine kernel) gets
    zeros.

    Args:
        neighbors (Tensor[Q, k] int64): indices into the rows of ``values``, ``-1`` pads (as
            returned by :func:`nnk_neighbors`).
        weights (Tensor[Q, k]): float32 or float64, finite, ``>= 0``, 0 on padding.
        values (Tensor[N, C] or Tensor[N]): values of the reference points (e.g. one-hot
            labels), float32 or float64 (integers are converted to float64).

    Returns:
        Tensor[Q, C] (Tensor[Q] for 1-D values), in the promoted dtype of weights and values.

    Example:
        >>> ref = torch.randn(200, 8); y = (ref[:, 0] > 0).double()
        >>> nbr, w, _ = torch_geometry.nnk_neighbors(torch.randn(4, 8), ref, k=10)
        >>> torch_geometry.nnk_interpolate(nbr, w, y).shape
        torch.Size([4])
    """
    neighbors = as_tensor(neighbors, "nnk_interpolate", "neighbors")
    weights = as_tensor(weights, "nnk_interpolate", "weights")
    values = as_tensor(values, "nnk_interpolate", "values")
    if not values.is_floating_point():
        values = values.double()
    flat = values.dim() == 1
    if flat:
        values = values.unsqueeze(1)
    check_device("nnk_interpolate", neighbors, weights, values)
    out = torch.ops.torch_geometry.nnk_interpolate(neighbors, weights, values)
    return out.squeeze(1) if flat else out
