"""Approximate candidate search for large N: k-means clusters searched with dense ``mm`` tiles.

The exact kNN search costs N^2 D; this one costs about N D (nlist + nprobe N / nlist): the
points are split into ``nlist`` clusters by spherical k-means (plain k-means for the
Gaussian kernel), and the queries of each cluster are searched together, with one matrix
product and one ``topk``, among the members of the ``nprobe`` clusters whose centroids are
nearest to their own (their own included). It is an inverted-file (IVF) search probed per
cluster rather than per query, so that the scan runs at BLAS speed. The clusters probed for
cluster c are not the ones whose centroids are nearest to c's centroid but those that c's
members most often have among their own ``nprobe`` nearest centroids: that follows the
members at the border, where the neighbours missed by a per-cluster probe are. Only torch is
needed.

``engine="faiss"`` (inverted file, ``faiss.IndexIVFFlat``) and ``engine="faiss-hnsw"``
(``faiss.IndexHNSWFlat``) run the search with FAISS when it is installed (``pip install
faiss-cpu``; an optional dependency).

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


_ENGINES = ("ivf", "faiss", "faiss-hnsw")


def _progress(total: int, desc: str, on: bool):
    """A tqdm bar when asked for and tqdm is installed; a no-op otherwise."""
    if on:
        try:
            from tqdm import tqdm

            return tqdm(total=total, desc=desc, unit="cluster", leave=False)
        except ImportError:
            pass

    class _Quiet:
        def update(self, n=1):
            pass

        def close(self):
            pass

    return _Quiet()


def _probe_lists(first: torch.Tensor, assign: torch.Tensor, nlist: int, nprobe: int) -> torch.Tensor:
    """[nlist, nprobe] clusters to scan for the queries of each cluster: its own first, then
    the clusters its members most often have among their nearest centroids (``first``
    [n, nprobe]), ties and unused slots filled by the smaller cluster index."""
    pair = assign.unsqueeze(1) * nlist + first
    counts = torch.bincount(pair.flatten(), minlength=nlist * nlist).view(nlist, nlist).double()
    counts[torch.arange(nlist), torch.arange(nlist)] = float("inf")
    # a deterministic order among equal counts: the smaller index first
    counts -= torch.arange(nlist, dtype=torch.float64) / (2.0 * nlist)
    return torch.topk(counts, nprobe, dim=1).indices


def _faiss_search(xv: torch.Tensor, k: int, engine: str, nlist: int, nprobe: int,
                  seed: int, hnsw_m: int, ef_search: int, inner_product: bool) -> torch.Tensor:
    try:
        import faiss
    except ImportError as exc:
        raise ImportError(
            f"approximate_candidates: engine={engine!r} needs FAISS, which is not installed: "
            "`pip install faiss-cpu` (or the Debian package python3-faiss), or use "
            "engine='ivf' (torch only)") from exc
    import numpy as np

    xn = np.ascontiguousarray(xv.detach().cpu().float().numpy())
    d = xn.shape[1]
    # unit rows: inner product = cosine order; Gaussian: Euclidean order
    metric = faiss.METRIC_INNER_PRODUCT if inner_product else faiss.METRIC_L2
    if engine == "faiss":
        quant = faiss.IndexFlat(d, metric)
        index = faiss.IndexIVFFlat(quant, d, nlist, metric)
        index.cp.seed = seed
        index.train(xn)
        index.add(xn)
        index.nprobe = nprobe
    else:
        index = faiss.IndexHNSWFlat(d, hnsw_m, metric)
        index.add(xn)
        index.hnsw.efSearch = max(ef_search, k + 1)
    _, ind = index.search(xn, k + 1)
    ind = torch.from_numpy(ind).long()
    # drop self wherever FAISS put it (not always first among equal scores); keep k others
    own = ind == torch.arange(ind.shape[0]).unsqueeze(1)
    ind[own] = -1
    order = torch.sort((ind < 0).to(torch.int8), dim=1, stable=True).indices
    return torch.gather(ind, 1, order)[:, :k]



def approximate_candidates(
    x: torch.Tensor,
    k: int,
    kernel: str = "cosine",
    nlist: Optional[int] = None,
    nprobe: int = 12,
    niter: int = 10,
    seed: int = 0,
    block: int = 4096,
    engine: str = "ivf",
    hnsw_m: int = 32,
    ef_search: int = 128,
    progress: bool = False,
) -> torch.Tensor:
    """Approximate k nearest neighbours of every point, as ``candidates`` for
    :func:`torch_geometry.nnk_graph` (k-means clusters + one ``mm`` + ``topk`` per cluster,
    or FAISS).

    Args:
        x (Tensor[N, D] or ndarray): points, floating point (float16/bfloat16 are searched
            in float32), on any device (FAISS engines: copied to the CPU).
        k (int): neighbours per point, ``1 <= k < N``.
        kernel (str): ``"cosine"`` (nearest by angle) or ``"gaussian"`` (nearest by
            Euclidean distance). (default: ``"cosine"``)
        nlist (int, optional): clusters. (default: about sqrt(N), with at least 39
            points per cluster on average)
        nprobe (int): clusters searched for the queries of each cluster (for each query
            with ``engine="faiss"``), their own included; more = higher recall, slower.
            (default: 12: 96 % of the exact 50-NN of Fashion-MNIST's 60,000 images at
            4.9x the speed of the exact search, benchmarks/results/approximate.md)
        niter (int): k-means iterations, trained on at most 64 points per cluster.
            (default: 10)
        seed (int): seed of the k-means initialisation and sample. (default: 0)
        block (int): at most this many queries per matrix product (bounds memory to
            about ``block * nprobe * N / nlist`` scores). (default: 4096)
        engine (str): ``"ivf"`` (this module, torch only), ``"faiss"`` (FAISS
            ``IndexIVFFlat`` with ``nlist`` / ``nprobe``) or ``"faiss-hnsw"`` (FAISS
            ``IndexHNSWFlat`` with ``hnsw_m`` links and ``ef_search``). (default: ``"ivf"``)
        hnsw_m (int): HNSW links per node. (default: 32)
        ef_search (int): HNSW search breadth, at least k + 1. (default: 128)
        progress (bool): a tqdm bar over the clusters when tqdm is installed. (default: False)

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
    if engine not in _ENGINES:
        raise ValueError(f"approximate_candidates: engine should be one of {_ENGINES}, got {engine!r}")
    op = "approximate_candidates"
    x = as_tensor(x, op)
    if x.dim() != 2 or not x.is_floating_point():
        raise ValueError(f"{op}: x should be a floating-point tensor [N, D], got "
                         f"{x.dtype} of shape {tuple(x.shape)}")
    k, nprobe, niter, seed, block, hnsw_m, ef_search = (check_k(v, op, name) for v, name in (
        (k, "k"), (nprobe, "nprobe"), (niter, "niter"), (seed, "seed"), (block, "block"),
        (hnsw_m, "hnsw_m"), (ef_search, "ef_search")))
    if nlist is not None:
        nlist = check_k(nlist, op, "nlist")
    n = x.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"approximate_candidates: k should be in [1, N - 1] = [1, {n - 1}], got {k}")
    if nlist is None:
        nlist = max(1, min(int(math.sqrt(n)), n // 39))
    if nlist < 1 or nprobe < 1 or niter < 0 or block < 1 or hnsw_m < 2 or ef_search < 1:
        raise ValueError("approximate_candidates: nlist, nprobe, block, ef_search should be >= 1, "
                         f"hnsw_m >= 2 and niter >= 0, got {nlist}, {nprobe}, {block}, "
                         f"{ef_search}, {hnsw_m}, {niter}")
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
        if engine != "ivf":
            kk = min(k, nv - 1)
            found = _faiss_search(xv, kk, engine, min(nlist, nv), nprobe, seed, hnsw_m, ef_search,
                                  kernel == "cosine")
            found = found.to(x.device)
            out[vidx, :kk] = torch.where(found >= 0, vidx[found.clamp(min=0)], found)
            return out
        xv_sq = None if x_sq is None else x_sq[vidx]
        nlist = min(nlist, nv)
        nprobe = min(nprobe, nlist)
        # k-means on the CPU (a CPU generator drives its sampling), on at most 64 nlist points
        cent = _kmeans(xv.cpu(), None if xv_sq is None else xv_sq.cpu(), nlist, niter,
                       64 * nlist, gen).to(x.device)
        c_sq = None if xv_sq is None else (cent * cent).sum(1)
        first = torch.empty(nv, nprobe, dtype=torch.long, device=x.device)
        for s in range(0, nv, 16384):
            first[s:s + 16384] = torch.topk(_scores(xv[s:s + 16384], cent, c_sq), nprobe, dim=1).indices
        assign = first[:, 0].cpu()
        probes = _probe_lists(first.cpu(), assign, nlist, nprobe)
        del first
        # members of each cluster, contiguous after one sort
        order = torch.argsort(assign, stable=True).to(x.device)
        counts = torch.bincount(assign, minlength=nlist).tolist()
        starts = [0]
        for c in counts:
            starts.append(starts[-1] + c)
        xo = xv[order]  # points grouped by cluster
        xo_sq = None if xv_sq is None else xv_sq[order]
        gid = vidx[order]  # original index of each grouped point
        bar = _progress(nlist, f"{op} (nlist={nlist}, nprobe={nprobe})", progress)
        for c in range(nlist):
            bar.update()
            if counts[c] == 0:
                continue
            probe = probes[c].tolist()
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
        bar.close()
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
