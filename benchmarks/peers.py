"""Reference ("peer") implementations that the benchmarks and tests compare torch_geometry to.

Written for this project, deliberately plain: each is the obvious way a user would build a kNN
or NNK graph today with FAISS, scikit-learn, torch or numpy/scipy. Nothing here imports the
compiled ``torch_geometry._C`` library, so these also serve as independent references in tests.

Conventions (same as ``torch_geometry.knn_graph`` / ``nnk_graph``, docs/CONVENTIONS.md):

- inputs ``x`` are ``[N, D]`` torch tensors or numpy arrays; the cosine kernel unit-normalises
  rows first and uses kappa = (1 + cos) / 2;
- neighbour lists are int64 ``[N, k]``, self excluded, ``-1`` = padding;
- kNN similarities are *kernel* values (1 + cos) / 2 in [0, 1], sorted descending.

FAISS and scikit-learn are imported lazily so that the module loads without them.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import numpy as np
import torch

ArrayLike = Union[torch.Tensor, np.ndarray]

__all__ = [
    "faiss_knn",
    "faiss_ivf_knn",
    "cluster_knn",
    "sklearn_knn",
    "torch_knn",
    "naive_nnk",
    "nnk_error",
    "recall",
]


# --------------------------------------------------------------------------------------------
# helpers


def _as_numpy_f32(x: ArrayLike, who: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{who}: x should be a non-empty 2-D array [N, D], got shape {x.shape}")
    return np.ascontiguousarray(x, dtype=np.float32)


def _check_k(k: int, n: int, who: str) -> None:
    if not (1 <= k <= n - 1):
        raise ValueError(f"{who}: k should be in 1..N-1 = 1..{n - 1}, got {k}")


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm; all-zero rows stay zero. Same dtype as ``x``."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1).astype(x.dtype)


def _drop_self(idx: np.ndarray, val: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """From ``[N, k+1]`` search results keep ``k`` per row: the first occurrence of the row's
    own index is removed, or, when the search did not return it (ties with duplicates,
    approximate indexes), the last column."""
    n = idx.shape[0]
    is_self = idx == np.arange(n)[:, None]
    first_self = is_self & (np.cumsum(is_self, axis=1) == 1)
    no_self = ~first_self.any(axis=1)
    first_self[no_self, -1] = True
    keep = ~first_self
    return idx[keep].reshape(n, k), val[keep].reshape(n, k)


def _to_torch_graph(idx: np.ndarray, cos: np.ndarray) -> Tuple[torch.Tensor, torch.Tensor]:
    idx = idx.astype(np.int64, copy=False)
    sim = ((1.0 + cos.astype(np.float32, copy=False)) * 0.5).astype(np.float32)
    sim[idx < 0] = 0.0
    return torch.from_numpy(np.ascontiguousarray(idx)), torch.from_numpy(np.ascontiguousarray(sim))


# --------------------------------------------------------------------------------------------
# kNN peers (cosine)


def faiss_knn(x: ArrayLike, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Exact cosine kNN with FAISS ``IndexFlatIP`` on unit-normalised float32 rows.

    Searches k+1 neighbours of every point and drops the point itself.

    Args:
        x (Tensor or ndarray [N, D]): points (any float dtype; searched in float32).
        k (int): neighbours per point, 1 <= k <= N-1.

    Returns:
        neighbors (Tensor[N, k], int64): sorted by similarity, descending.
        similarities (Tensor[N, k], float32): kernel values (1 + cos) / 2.
    """
    import faiss

    xs = _unit_rows(_as_numpy_f32(x, "faiss_knn"))
    _check_k(k, xs.shape[0], "faiss_knn")
    index = faiss.IndexFlatIP(xs.shape[1])
    index.add(xs)
    cos, idx = index.search(xs, k + 1)
    idx, cos = _drop_self(idx, cos, k)
    return _to_torch_graph(idx, cos)


def faiss_ivf_knn(
    x: ArrayLike, k: int, nlist: Optional[int] = None, nprobe: int = 8, seed: int = 1234
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Approximate cosine kNN with FAISS ``IndexIVFFlat`` (inner product, unit-normalised rows).

    The time of a call includes training the coarse quantiser (k-means), adding the points
    and searching, i.e. everything a user pays to get the candidates.

    Args:
        x (Tensor or ndarray [N, D]): points.
        k (int): neighbours per point, 1 <= k <= N-1.
        nlist (int, optional): number of inverted lists.
            (default: min(4 * sqrt(N), N / 39), FAISS's minimum of 39 training points per list)
        nprobe (int): lists visited per query. (default: 8)
        seed (int): k-means seed, for reproducible candidates. (default: 1234)

    Returns:
        neighbors (Tensor[N, k], int64): sorted by similarity; ``-1`` where the probed lists
            held fewer than k other points.
        similarities (Tensor[N, k], float32): kernel values (1 + cos) / 2, 0 for padding.
    """
    import faiss

    xs = _unit_rows(_as_numpy_f32(x, "faiss_ivf_knn"))
    n, d = xs.shape
    _check_k(k, n, "faiss_ivf_knn")
    if nlist is None:
        # about 4 sqrt(N) lists, but at least 39 training points per list as FAISS asks
        nlist = max(1, min(int(4 * math.sqrt(n)), n // 39))
    if nlist < 1 or nprobe < 1:
        raise ValueError(f"faiss_ivf_knn: nlist and nprobe should be >= 1, got {nlist}, {nprobe}")
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    index.train(xs)
    index.add(xs)
    index.nprobe = nprobe
    cos, idx = index.search(xs, k + 1)
    idx, cos = _drop_self(idx, cos, k)
    # FAISS pads with -1 at the end already; keep the padding there after dropping self.
    return _to_torch_graph(idx, cos)


def cluster_knn(
    x: ArrayLike, k: int, nlist: Optional[int] = None, nprobe: int = 8, niter: int = 10,
    seed: int = 1234,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Approximate cosine kNN by clusters, with dense ``mm`` tiles: an IVF searched per cluster.

    FAISS k-means (spherical) splits the points into ``nlist`` clusters; the queries of a
    cluster are searched, all together with one ``mm`` + ``topk``, among the members of the
    ``nprobe`` clusters whose centroids are closest to their own centroid (itself included).
    Probing per cluster instead of per query loses a little recall at cluster borders but
    turns the scan into matrix products, which run at BLAS speed; ``IndexIVFFlat`` scans
    each list one vector at a time (slow in FAISS's generic, non-AVX2 Debian build).

    Args:
        x (Tensor or ndarray [N, D]): points (searched in float32).
        k (int): neighbours per point, 1 <= k <= N-1.
        nlist (int, optional): clusters. (default: about sqrt(N), at least 39 points each)
        nprobe (int): clusters searched per cluster of queries. (default: 8)
        niter (int): k-means iterations, trained on at most 64 points per cluster. (default: 10)
        seed (int): k-means seed. (default: 1234)

    Returns:
        neighbors (Tensor[N, k], int64): sorted by similarity; ``-1`` pads when the probed
            clusters hold fewer than k other points.
        similarities (Tensor[N, k], float32): kernel values (1 + cos) / 2, 0 for padding.
    """
    import faiss

    xs = _unit_rows(_as_numpy_f32(x, "cluster_knn"))
    n, d = xs.shape
    _check_k(k, n, "cluster_knn")
    if nlist is None:
        nlist = max(1, min(int(math.sqrt(n)), n // 39))
    if nlist < 1 or nprobe < 1:
        raise ValueError(f"cluster_knn: nlist and nprobe should be >= 1, got {nlist}, {nprobe}")
    nprobe = min(nprobe, nlist)
    km = faiss.Kmeans(d, nlist, niter=niter, seed=seed, spherical=True,
                      max_points_per_centroid=64, verbose=False)
    km.train(xs)
    _, assign = km.index.search(xs, 1)
    cent = torch.from_numpy(np.ascontiguousarray(km.centroids))
    probes = torch.topk(cent @ cent.T, nprobe, dim=1).indices  # [nlist, nprobe]
    assign_t = torch.from_numpy(assign[:, 0].astype(np.int64))
    order = torch.argsort(assign_t, stable=True)
    counts = torch.bincount(assign_t, minlength=nlist).tolist()
    starts = np.concatenate([[0], np.cumsum(counts)]).tolist()
    members = [order[starts[c]:starts[c + 1]] for c in range(nlist)]
    xt = torch.from_numpy(xs)
    idx = torch.full((n, k), -1, dtype=torch.int64)
    sim = torch.zeros(n, k, dtype=torch.float32)
    for c in range(nlist):
        q = members[c]
        if q.numel() == 0:
            continue
        # own cluster first, so the queries sit on the tile's leading diagonal
        pool = torch.cat([q] + [members[p] for p in probes[c].tolist() if p != c])
        tile = xt[q] @ xt[pool].T
        rows = torch.arange(q.numel())
        tile[rows, rows] = -math.inf  # exclude self
        kk = min(k, pool.numel() - 1)
        if kk <= 0:
            continue
        val, ind = torch.topk(tile, kk, dim=1)
        idx[q, :kk] = pool[ind]
        sim[q, :kk] = (1.0 + val) * 0.5
    return idx, sim


def sklearn_knn(x: ArrayLike, k: int, n_jobs: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Exact cosine kNN with scikit-learn ``NearestNeighbors(algorithm="brute", metric="cosine")``.

    Args:
        x (Tensor or ndarray [N, D]): points.
        k (int): neighbours per point, 1 <= k <= N-1.
        n_jobs (int, optional): passed to scikit-learn. (default: None = 1 job)

    Returns:
        neighbors (Tensor[N, k], int64), similarities (Tensor[N, k], float32) as :func:`faiss_knn`.
    """
    from sklearn.neighbors import NearestNeighbors

    xs = _as_numpy_f32(x, "sklearn_knn")
    _check_k(k, xs.shape[0], "sklearn_knn")
    nn = NearestNeighbors(n_neighbors=k + 1, algorithm="brute", metric="cosine", n_jobs=n_jobs)
    nn.fit(xs)
    dist, idx = nn.kneighbors(xs)
    idx, dist = _drop_self(idx, dist, k)
    return _to_torch_graph(idx, 1.0 - dist)


def torch_knn(x: ArrayLike, k: int, block: int = 2048) -> Tuple[torch.Tensor, torch.Tensor]:
    """Exact cosine kNN in plain torch: row blocks of the Gram matrix (``mm``) + ``topk``.

    Memory is O(block * N); the full N x N matrix is never held.

    Args:
        x (Tensor or ndarray [N, D]): points (computed in float32).
        k (int): neighbours per point, 1 <= k <= N-1.
        block (int): query rows per tile. (default: 2048)

    Returns:
        neighbors (Tensor[N, k], int64), similarities (Tensor[N, k], float32) as :func:`faiss_knn`.
    """
    xt = torch.as_tensor(x).detach().to(torch.float32)
    if xt.dim() != 2 or xt.shape[0] == 0:
        raise ValueError(f"torch_knn: x should be a non-empty 2-D tensor [N, D], got {tuple(xt.shape)}")
    n = xt.shape[0]
    _check_k(k, n, "torch_knn")
    if block < 1:
        raise ValueError(f"torch_knn: block should be >= 1, got {block}")
    xn = torch.nn.functional.normalize(xt, dim=1)
    idx = torch.empty(n, k, dtype=torch.int64)
    sim = torch.empty(n, k, dtype=torch.float32)
    for start in range(0, n, block):
        stop = min(start + block, n)
        tile = xn[start:stop] @ xn.T
        rows = torch.arange(stop - start)
        tile[rows, rows + start] = -math.inf  # exclude self
        val, ind = torch.topk(tile, k, dim=1)
        idx[start:stop] = ind
        sim[start:stop] = (1.0 + val) * 0.5
    return idx, sim


# --------------------------------------------------------------------------------------------
# NNK reference


def _sigma_per_node(
    x64: np.ndarray, nbrs: np.ndarray, sigma: Union[float, str, None], who: str
) -> np.ndarray:
    """Gaussian bandwidth per query node, ``[N]`` float64 (DESIGN §2)."""
    n = x64.shape[0]
    if isinstance(sigma, (int, float)) and not isinstance(sigma, bool):
        if not sigma > 0:
            raise ValueError(f"{who}: sigma should be > 0, got {sigma}")
        return np.full(n, float(sigma))
    if sigma not in ("mean", "local"):
        raise ValueError(f"{who}: sigma should be a number > 0, 'mean' or 'local', got {sigma!r}")
    # Distance to the k-th neighbour = the largest distance in the row (order-independent).
    dk = np.zeros(n)
    for start in range(0, n, 1024):
        nb = nbrs[start:start + 1024]
        valid = nb >= 0
        diff = x64[np.where(valid, nb, 0)] - x64[start:start + 1024, None, :]
        d = np.sqrt((diff * diff).sum(-1))
        dk[start:start + 1024] = np.where(valid, d, 0.0).max(axis=1)
    if sigma == "mean":
        return np.full(n, dk.mean() / 3.0)
    return dk / 3.0


def _node_problems(
    x64: np.ndarray,
    nbrs: np.ndarray,
    rows: slice,
    kernel: str,
    sig: Optional[np.ndarray],
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """K_SS ``[B, k, k]``, k_S ``[B, k]`` and the valid mask ``[B, k]`` for a block of nodes,
    float64. Padding entries are zeroed (their rows/columns are dropped by the solver)."""
    nb = nbrs[rows]
    valid = nb >= 0
    xs = x64[np.where(valid, nb, 0)]  # [B, k, D]
    xi = x64[rows]  # [B, D]
    gram = xs @ xs.transpose(0, 2, 1)  # batched BLAS gemm
    cross = (xs @ xi[:, :, None])[:, :, 0]
    if kernel == "cosine":
        kss = 0.5 * (1.0 + gram)
        ks = 0.5 * (1.0 + cross)
    else:
        sq = np.diagonal(gram, axis1=1, axis2=2)
        sqi = (xi * xi).sum(-1)
        two_s2 = 2.0 * sig[rows] ** 2
        d2 = np.maximum(sq[:, :, None] + sq[:, None, :] - 2.0 * gram, 0.0)
        kss = np.exp(-d2 / two_s2[:, None, None])
        ks = np.exp(-np.maximum(sq + sqi[:, None] - 2.0 * cross, 0.0) / two_s2[:, None])
    m = valid.astype(np.float64)
    return kss * m[:, :, None] * m[:, None, :], ks * m, valid


def _prepare(
    x: ArrayLike, neighbors: ArrayLike, kernel: str, sigma, who: str
) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x64 = np.asarray(x, dtype=np.float64)
    if x64.ndim != 2:
        raise ValueError(f"{who}: x should be 2-D [N, D], got shape {x64.shape}")
    if isinstance(neighbors, torch.Tensor):
        neighbors = neighbors.detach().cpu().numpy()
    nbrs = np.asarray(neighbors)
    if nbrs.ndim != 2 or nbrs.shape[0] != x64.shape[0] or not np.issubdtype(nbrs.dtype, np.integer):
        raise ValueError(
            f"{who}: neighbors should be an integer [N, k] array with N = {x64.shape[0]}, "
            f"got {nbrs.dtype} {nbrs.shape}"
        )
    nbrs = nbrs.astype(np.int64)
    if nbrs.size and (nbrs.max() >= x64.shape[0] or nbrs.min() < -1):
        raise ValueError(f"{who}: neighbors should be in -1..N-1, got {nbrs.min()}..{nbrs.max()}")
    if kernel == "cosine":
        x64 = _unit_rows(x64)
        sig = None
    elif kernel == "gaussian":
        sig = _sigma_per_node(x64, nbrs, sigma, who)
    else:
        raise ValueError(f"{who}: kernel should be 'cosine' or 'gaussian', got {kernel!r}")
    return x64, nbrs, sig


def _solve_nonneg_qp(kss: np.ndarray, ks: np.ndarray) -> np.ndarray:
    """argmin_{t >= 0} 1/2 t^T K t - k^T t, exactly, via NNLS on the Cholesky factor.

    With K = L L^T the objective is 1/2 ||L^T t - L^{-1} k||^2 + const, so
    ``scipy.optimize.nnls(L^T, L^{-1} k)`` solves it (Lawson-Hanson active set, exact up to
    rounding). A singular K (duplicate candidates, D < k) gets a ridge of
    1e-10 * trace(K) / k, grown tenfold until the factorisation succeeds; the ridge moves the
    optimum by O(ridge), far below the tolerances the tests use.
    """
    from scipy.linalg import cholesky, solve_triangular
    from scipy.optimize import nnls

    m = kss.shape[0]
    ridge = 0.0
    base = 1e-10 * max(float(np.trace(kss)), 1e-300) / m
    for _ in range(12):
        try:
            lower = cholesky(kss + ridge * np.eye(m), lower=True, check_finite=False)
            break
        except np.linalg.LinAlgError:
            ridge = base if ridge == 0.0 else ridge * 10.0
    else:
        raise np.linalg.LinAlgError("naive_nnk: K_SS not factorisable even with a ridge")
    b = solve_triangular(lower, ks, lower=True, check_finite=False)
    t, _ = nnls(lower.T, b)
    return t


def naive_nnk(
    x: ArrayLike,
    neighbors: ArrayLike,
    kernel: str = "cosine",
    sigma: Union[float, str, None] = None,
    threshold: float = 1e-10,
    block: int = 512,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Straightforward NNK: one exact non-negative QP per node, numpy + scipy, no parallelism.

    Per node i with candidate set S (the valid entries of ``neighbors[i]``):
    theta = argmin_{t >= 0} 1/2 t^T K_SS t - k_S^T t, solved by :func:`scipy.optimize.nnls`
    after a Cholesky transform (see ``_solve_nonneg_qp``). Computed in float64. The kernel
    blocks K_SS are formed ``block`` nodes at a time with numpy (the obvious vectorisation);
    the solves run one node at a time.

    Args:
        x (Tensor or ndarray [N, D]): points.
        neighbors (Tensor or ndarray [N, k], int): candidates per node, ``-1`` = padding.
        kernel (str): ``"cosine"`` or ``"gaussian"``. (default: ``"cosine"``)
        sigma (float or str, optional): Gaussian bandwidth: a number, ``"mean"`` or ``"local"``
            (DESIGN §2; the k-th neighbour distance is the largest in the row). Ignored for
            cosine.
        threshold (float): weights <= threshold are set to 0 (the error uses the
            unthresholded solution). (default: 1e-10)
        block (int): nodes per numpy batch when forming K_SS. (default: 512)

    Returns:
        weights (Tensor[N, k], float64): theta aligned with ``neighbors`` (0 at padding).
        error (Tensor[N], float64): e_i = 1 - 2 theta^T k_S + theta^T K_SS theta
            (1 for a node without candidates).
    """
    x64, nbrs, sig = _prepare(x, neighbors, kernel, sigma, "naive_nnk")
    n, k = nbrs.shape
    weights = np.zeros((n, k))
    error = np.ones(n)
    for start in range(0, n, block):
        rows = slice(start, min(start + block, n))
        kss_b, ks_b, valid_b = _node_problems(x64, nbrs, rows, kernel, sig)
        for j in range(kss_b.shape[0]):
            sel = np.flatnonzero(valid_b[j])
            if sel.size == 0:
                continue
            kss = kss_b[j][np.ix_(sel, sel)]
            ks = ks_b[j][sel]
            t = _solve_nonneg_qp(kss, ks)
            error[start + j] = 1.0 - 2.0 * t @ ks + t @ kss @ t
            t[t <= threshold] = 0.0
            weights[start + j, sel] = t
    return torch.from_numpy(weights), torch.from_numpy(error)


def nnk_error(
    x: ArrayLike,
    neighbors: ArrayLike,
    weights: ArrayLike,
    kernel: str = "cosine",
    sigma: Union[float, str, None] = None,
) -> torch.Tensor:
    """Reconstruction error e_i = 1 - 2 w_i^T k_S + w_i^T K_SS w_i of *given* weights, float64.

    Lets a test score any solver's weights (e.g. ``torch_geometry.nnk_graph``'s) under the same
    float64 kernel as :func:`naive_nnk`: for the optimal weights, e_i = 1 + 2 * (the QP's
    optimal objective), so a smaller error means a better solution.

    Args:
        x (Tensor or ndarray [N, D]): points.
        neighbors (Tensor or ndarray [N, k], int): candidates, ``-1`` = padding.
        weights (Tensor or ndarray [N, k]): weights aligned with ``neighbors``.
        kernel, sigma: as :func:`naive_nnk`.

    Returns:
        error (Tensor[N], float64).
    """
    x64, nbrs, sig = _prepare(x, neighbors, kernel, sigma, "nnk_error")
    if isinstance(weights, torch.Tensor):
        weights = weights.detach().cpu().numpy()
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != nbrs.shape:
        raise ValueError(f"nnk_error: weights should have shape {nbrs.shape}, got {w.shape}")
    n = nbrs.shape[0]
    out = np.empty(n)
    for start in range(0, n, 512):
        rows = slice(start, min(start + 512, n))
        kss, ks, valid = _node_problems(x64, nbrs, rows, kernel, sig)
        wb = np.where(valid, w[rows], 0.0)
        out[rows] = 1.0 - 2.0 * (wb * ks).sum(1) + np.einsum("bk,bkl,bl->b", wb, kss, wb)
    return torch.from_numpy(out)


# --------------------------------------------------------------------------------------------
# quality


def recall(approx_nbrs: ArrayLike, exact_nbrs: ArrayLike) -> float:
    """Fraction of the exact neighbours that the approximate lists contain (-1 entries ignored).

    Args:
        approx_nbrs (Tensor or ndarray [N, ka], int): approximate neighbour lists.
        exact_nbrs (Tensor or ndarray [N, k], int): true neighbour lists.

    Returns:
        recall (float) in [0, 1]; 1.0 when there is no exact neighbour at all.
    """
    a = torch.as_tensor(approx_nbrs).to(torch.int64)
    e = torch.as_tensor(exact_nbrs).to(torch.int64)
    if a.dim() != 2 or e.dim() != 2 or a.shape[0] != e.shape[0]:
        raise ValueError(
            f"recall: expected [N, ka] and [N, k] with the same N, got {tuple(a.shape)} and {tuple(e.shape)}"
        )
    hits, total = 0, 0
    for start in range(0, a.shape[0], 4096):
        ab, eb = a[start:start + 4096], e[start:start + 4096]
        valid = eb >= 0
        found = (eb[:, :, None] == ab[:, None, :]).any(dim=2) & valid
        hits += int(found.sum())
        total += int(valid.sum())
    return hits / total if total else 1.0
