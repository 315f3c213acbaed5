"""Approximate candidate search for large N: k-means clusters searched with dense ``mm`` tiles.

The exact kNN search costs N^2 D; this one costs about N D (nlist + nprobe N / nlist): the
points are split into ``nlist`` clusters by spherical k-means (plain k-means for the
Gaussian kernel), and the queries of each cluster are searched together, with one matrix
product and one ``topk``, among the members of the ``nprobe`` clusters whose centroids are
nearest to their own (their own included). It is an inverted-file (IVF) search probed per
cluster rather than per query, so that the scan runs at BLAS speed; it loses a little recall
at cluster borders. Only torch is needed (no FAISS).

Feed the result to :func:`torch_geometry.nnk_graph` as ``candidates``.

Threads: the matrix products run on OpenBLAS's threads and ``topk`` / indexing on torch's
OpenMP threads, alternating hundreds of times. With libgomp's default wait policy the idle
OpenMP threads spin and take the cores from OpenBLAS: on 2 cores we measured the search 6x
slower than with ``OMP_WAIT_POLICY=PASSIVE`` in the environment (set before torch starts).
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

from ._inputs import as_tensor, check_k

__all__ = ["approximate_candidates", "candidate_recall"]


def _scores(q: torch.Tensor, p: torch.Tensor, p_sq: Optional[torch.Tensor]) -> torch.Tensor:
    """Similarity ranking of p for each row of q: q p^T (cosine, rows unit) or
    2 q p^T - |p|^2 (Gaussian: the same order as -|q - p|^2)."""
    s = q @ p.T
    if p_sq is not None:
        s.mul_(2.0).sub_(p_sq)
    return s


def _kmeans(x: torch.Tensor, x_sq: Optional[torch.Tensor], nlist: int, niter: int,
            sample: int, gen: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    train = x if n <= sample else x[torch.randperm(n, generator=gen)[:sample]]
    t_sq = None if x_sq is None else (train * train).sum(1)
    cent = train[torch.randperm(train.shape[0], generator=gen)[:nlist]].clone()
    for _ in range(niter):
        c_sq = None if x_sq is None else (cent * cent).sum(1)
        assign = _scores(train, cent, c_sq).argmax(1)
        new = torch.zeros_like(cent).index_add_(0, assign, train)
        counts = torch.bincount(assign, minlength=nlist)
        empty = counts == 0
        if x_sq is None:
            new = torch.nn.functional.normalize(new, dim=1)
        else:
            new = new / counts.clamp(min=1).unsqueeze(1).to(new.dtype)
        # an empty cluster keeps its old centroid
        cent = torch.where(empty.unsqueeze(1), cent, new)
    return cent


def approximate_candidates(
    x: torch.Tensor,
    k: int,
    kernel: str = "cosine",
    nlist: Optional[int] = None,
    nprobe: int = 8,
    niter: int = 10,
    seed: int = 0,
    block: int = 4096,
) -> torch.Tensor:
    """Approximate k nearest neighbours of every point, as ``candidates`` for
    :func:`torch_geometry.nnk_graph` (k-means clusters + one ``mm`` + ``topk`` per cluster).

    Args:
        x (Tensor[N, D] or ndarray): points, floating point (float16/bfloat16 are searched
            in float32), on any device.
        k (int): neighbours per point, ``1 <= k < N``.
        kernel (str): ``"cosine"`` (nearest by angle) or ``"gaussian"`` (nearest by
            Euclidean distance). (default: ``"cosine"``)
        nlist (int, optional): clusters. (default: about sqrt(N), with at least 39
            points per cluster on average)
        nprobe (int): clusters searched for the queries of each cluster, their own
            included; more = higher recall, slower. (default: 8)
        niter (int): k-means iterations, trained on at most 64 points per cluster.
            (default: 10)
        seed (int): seed of the k-means initialisation and sample. (default: 0)
        block (int): at most this many queries per matrix product (bounds memory to
            about ``block * nprobe * N / nlist`` scores). (default: 4096)

    Returns:
        Tensor[N, k] int64: candidate indices, nearest first, self excluded; ``-1`` pads
        a row whose probed clusters hold fewer than k other points. A zero row under the
        cosine kernel has no direction: its row is all ``-1`` and it is nobody's
        candidate (as in :func:`torch_geometry.nnk_graph`).

    Example:
        >>> x = torch.randn(20000, 64)
        >>> cand = torch_geometry.approximate_candidates(x, k=30)
        >>> g = torch_geometry.nnk_graph(x, k=30, candidates=cand)
    """
    if kernel not in ("cosine", "gaussian"):
        raise ValueError(f"approximate_candidates: kernel should be 'cosine' or 'gaussian', got {kernel!r}")
    op = "approximate_candidates"
    x = as_tensor(x, op)
    if x.dim() != 2 or not x.is_floating_point():
        raise ValueError(f"{op}: x should be a floating-point tensor [N, D], got "
                         f"{x.dtype} of shape {tuple(x.shape)}")
    k, nprobe, niter, seed, block = (check_k(v, op, name) for v, name in (
        (k, "k"), (nprobe, "nprobe"), (niter, "niter"), (seed, "seed"), (block, "block")))
    if nlist is not None:
        nlist = check_k(nlist, op, "nlist")
    n = x.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"approximate_candidates: k should be in [1, N - 1] = [1, {n - 1}], got {k}")
    if nlist is None:
        nlist = max(1, min(int(math.sqrt(n)), n // 39))
    if nlist < 1 or nprobe < 1 or niter < 0 or block < 1:
        raise ValueError("approximate_candidates: nlist, nprobe, block should be >= 1 and niter >= 0, "
                         f"got {nlist}, {nprobe}, {block}, {niter}")
    nlist = min(nlist, n)
    nprobe = min(nprobe, nlist)
    gen = torch.Generator().manual_seed(seed)

    with torch.no_grad():
        if x.dtype not in (torch.float32, torch.float64):
            x = x.float()
        valid = torch.ones(n, dtype=torch.bool, device=x.device)
        if kernel == "cosine":
            norm = x.norm(dim=1)
            valid = norm > 0
            xs = x / norm.clamp(min=torch.finfo(x.dtype).tiny).unsqueeze(1)
            x_sq = None
        else:
            xs = x
            x_sq = (x * x).sum(1)
        vidx = valid.nonzero().squeeze(1)
        nv = vidx.numel()
        out = torch.full((n, k), -1, dtype=torch.long, device=x.device)
        if nv < 2:
            return out
        xv = xs[vidx]
        xv_sq = None if x_sq is None else x_sq[vidx]
        nlist = min(nlist, nv)
        nprobe = min(nprobe, nlist)
        # k-means on the CPU (a CPU generator drives its sampling), on at most 64 nlist points
        cent = _kmeans(xv.cpu(), None if xv_sq is None else xv_sq.cpu(), nlist, niter,
                       64 * nlist, gen).to(x.device)
        c_sq = None if xv_sq is None else (cent * cent).sum(1)
        assign = torch.empty(nv, dtype=torch.long, device=x.device)
        for s in range(0, nv, 16384):
            assign[s:s + 16384] = _scores(xv[s:s + 16384], cent, c_sq).argmax(1)
        probes = torch.topk(_scores(cent, cent, c_sq), nprobe, dim=1).indices.cpu()
        # members of each cluster, contiguous after one sort
        order = torch.argsort(assign.cpu(), stable=True).to(x.device)
        counts = torch.bincount(assign.cpu(), minlength=nlist).tolist()
        starts = [0]
        for c in counts:
            starts.append(starts[-1] + c)
        xo = xv[order]  # points grouped by cluster
        xo_sq = None if xv_sq is None else xv_sq[order]
        gid = vidx[order]  # original index of each grouped point
        for c in range(nlist):
            if counts[c] == 0:
                continue
            probe = [c] + [p for p in probes[c].tolist() if p != c][: nprobe - 1]
            pool = torch.cat([torch.arange(starts[p], starts[p + 1], device=x.device) for p in probe])
            m = pool.numel()
            kk = min(k, m - 1)
            if kk <= 0:
                continue
            xp = xo[pool]
            xp_sq = None if xo_sq is None else xo_sq[pool]
            for q0 in range(0, counts[c], block):
                q1 = min(counts[c], q0 + block)
                tile = _scores(xo[starts[c] + q0:starts[c] + q1], xp, xp_sq)
                # the queries are the pool's first entries (own cluster first): exclude self
                r = torch.arange(q1 - q0, device=x.device)
                tile[r, r + q0] = -math.inf
                ind = torch.topk(tile, kk, dim=1).indices
                out[gid[starts[c] + q0:starts[c] + q1], :kk] = gid[pool[ind]]
        return out


def candidate_recall(candidates: torch.Tensor, exact: torch.Tensor) -> float:
    """Fraction of the exact candidates (``exact`` [N, k], ``-1`` = padding) that
    ``candidates`` [N, k'] also holds, over all rows."""
    c, e = candidates.cpu(), exact.cpu()
    hit = 0
    for s in range(0, e.shape[0], 4096):
        eb, cb = e[s:s + 4096].unsqueeze(2), c[s:s + 4096].unsqueeze(1)
        hit += ((eb == cb) & (eb >= 0)).any(2).sum().item()
    total = (e >= 0).sum().item()
    return float(hit) / max(1, total)
