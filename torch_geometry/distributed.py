"""NNK graphs of points sharded over the ranks of a ``torch.distributed`` process group.

Each rank holds a block of rows (as DDP's data shards are); rank r's rows are the global
nodes ``offset_r .. offset_r + n_r - 1`` in rank order. The graph is built in three steps,
with the same collectives on gloo (CPU) and NCCL (GPU):

1. Exact kNN as a ring: the shards travel around the ranks (send to rank + 1, receive from
   rank - 1); each rank scores its own rows against every passing shard in tiles and keeps
   a running shortlist of the ``k + margin`` best per row. No rank ever holds more than its
   own shard, one passing shard and one tile of scores.
2. The shortlisted vectors are fetched from their owners (one ``all_to_all_single`` for the
   requested ids, one for the rows) and rescored exactly by ``knn_merge``, with the
   arithmetic and tie rule (larger cosine, then smaller global index) of the
   single-process search: the k neighbours are those of ``nnk_graph`` on the concatenated
   data. The shortlist's float scores only select; ``margin`` extra entries absorb their
   rounding, as the single-process search keeps 8.
3. The NNK solve of the local rows runs on the local rows and their candidates only, in
   global order, so the weights, errors and orders are bit for bit those of the
   single-process ``nnk_graph`` on the concatenated data.

Only the cosine kernel is supported: the single-process Gaussian kernel centres the points on
their global mean before any product, which a shard cannot reproduce bit for bit.

Failures: every rank checks the shapes and arguments of all ranks first (one
``all_gather``), so a bad argument on one rank raises the same ``ValueError`` on all of them.
A rank that dies or stops calling makes the others' collectives fail after the process
group's timeout (``init_process_group(..., timeout=...)``), which this module re-raises as a
``RuntimeError`` naming the step: no rank hangs for longer than that timeout.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import List, Optional

import torch
import torch.distributed as dist

from ._inputs import check_k
from ._ops import ensure_loaded
from .graph import NNKGraph, _SYMMETRIZE

ensure_loaded()

__all__ = ["DistributedNNKGraph", "nnk_graph", "ring_knn"]

_DTYPES = (torch.float32, torch.float64)


@dataclass
class DistributedNNKGraph:
    """The NNK graph of one rank's rows, in global node indices.

    Attributes:
        neighbors (Tensor[n_local, k], int64): global indices, by NNK weight descending,
            ``-1`` pads.
        weights (Tensor[n_local, k]): NNK weights, x's dtype.
        error (Tensor[n_local]): reconstruction errors.
        offset (int): global index of this rank's first row.
        num_nodes (int): N, all ranks together.
        bytes_sent (int): bytes this rank sent (ring, fetch, gather), for the benchmark.
        seconds (dict): wall time of each step on this rank: ``ring`` (scores and shard
            passing; ``ring_comm`` of it passing shards and waiting), ``fetch`` (candidate
            rows), ``merge`` (exact rescoring), ``solve``, ``gather``.
        graph (NNKGraph or None): on rank ``gather_to``, the whole graph (N rows, with the
            chosen symmetrisation); None elsewhere and when ``gather_to`` is None.
    """

    neighbors: torch.Tensor
    weights: torch.Tensor
    error: torch.Tensor
    offset: int
    num_nodes: int
    bytes_sent: int
    graph: Optional[NNKGraph] = None
    seconds: Optional[dict] = None


def _fail(step: str, exc: BaseException) -> RuntimeError:
    return RuntimeError(
        f"distributed.nnk_graph: {step} failed on this rank ({type(exc).__name__}: {exc}). "
        "Another rank probably raised, died or did not call distributed.nnk_graph; every "
        "rank of the group must call it with its shard.")


class _Comm:
    """Collectives on one group, counting the bytes this rank sends."""

    def __init__(self, group):
        self.seconds = {}
        self._t = time.perf_counter()
        self.group = group
        self.rank = dist.get_rank(group)
        self.world = dist.get_world_size(group)
        self.bytes_sent = 0

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.seconds[step] = self.seconds.get(step, 0.0) + now - self._t
        self._t = now

    def to_global(self, r: int) -> int:
        return r if self.group is None else dist.get_global_rank(self.group, r)

    def all_gather_rows(self, t: torch.Tensor) -> List[torch.Tensor]:
        out = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(out, t, group=self.group)
        self.bytes_sent += t.numel() * t.element_size() * (self.world - 1)
        return out

    def shift(self, t: torch.Tensor, recv_rows: int) -> torch.Tensor:
        """Sends t to rank + 1 and returns the [recv_rows, ...] tensor of rank - 1."""
        nxt, prv = (self.rank + 1) % self.world, (self.rank - 1) % self.world
        t0 = time.perf_counter()
        buf = t.new_empty((recv_rows,) + tuple(t.shape[1:]))
        ops = [dist.P2POp(dist.isend, t.contiguous(), self.to_global(nxt), self.group),
               dist.P2POp(dist.irecv, buf, self.to_global(prv), self.group)]
        for w in dist.batch_isend_irecv(ops):
            w.wait()
        self.bytes_sent += t.numel() * t.element_size()
        # the part of "ring" spent passing shards (and waiting for slower ranks)
        self.seconds["ring_comm"] = self.seconds.get("ring_comm", 0.0) + time.perf_counter() - t0
        return buf

    def all_to_all(self, send: torch.Tensor, send_counts: List[int],
                   recv_counts: List[int]) -> torch.Tensor:
        """Rows send[sum(send_counts[:r]) : ...] go to rank r; returns the received rows."""
        recv = send.new_empty((sum(recv_counts),) + tuple(send.shape[1:]))
        dist.all_to_all_single(recv, send.contiguous(), recv_counts, send_counts, group=self.group)
        row = send.element_size() * int(torch.tensor(send.shape[1:]).prod())
        self.bytes_sent += row * (sum(send_counts) - send_counts[self.rank])
        return recv


def _check_shapes(comm: _Comm, x: torch.Tensor, k: int) -> List[int]:
    """Exchanges (n, D, dtype, k) of every rank; raises the same error on every rank."""
    dcode = _DTYPES.index(x.dtype) if x.dtype in _DTYPES else -1
    finite = int(bool(torch.isfinite(x).all())) if x.numel() else 1
    meta = torch.tensor([x.shape[0], x.shape[1], dcode, k, finite], dtype=torch.long,
                        device=x.device)
    try:
        rows = [m.cpu().tolist() for m in comm.all_gather_rows(meta)]
    except RuntimeError as exc:
        raise _fail("the shape exchange", exc) from exc
    sizes = [r[0] for r in rows]
    for r, (n, d, dc, kk, fin) in enumerate(rows):
        if d != rows[0][1] or dc != rows[0][2] or kk != rows[0][3]:
            raise ValueError(
                "distributed.nnk_graph: every rank should pass x of the same dtype and number "
                f"of columns, and the same k; got (D, dtype, k) = "
                f"{[(q[1], _DTYPES[q[2]] if q[2] >= 0 else 'unsupported', q[3]) for q in rows]}")
        if dc < 0:
            raise ValueError(f"distributed.nnk_graph: x should be float32 or float64, rank {r} "
                             "passed another dtype")
        if not fin:
            raise ValueError(f"distributed.nnk_graph: x should hold finite values, rank {r} has "
                             "NaN or Inf")
    total = sum(sizes)
    if not 1 <= k < total:
        raise ValueError(f"distributed.nnk_graph: k should be in [1, N - 1] = [1, {total - 1}] "
                         f"(N = {total} rows on all ranks), got {k}")
    return sizes


def _unit(x: torch.Tensor) -> torch.Tensor:
    # Selection scores only (the exact rescoring decides): zero rows stay zero.
    return x / x.norm(dim=1, keepdim=True).clamp(min=torch.finfo(x.dtype).tiny)


def _ring_shortlist(comm: _Comm, x: torch.Tensor, sizes: List[int], width: int,
                    block: int) -> torch.Tensor:
    """Global ids [n_local, width] of each local row's best `width` others by float cosine
    (-1 pads), from one pass of the shards around the ring."""
    offsets = [sum(sizes[:r]) for r in range(len(sizes))]
    n = x.shape[0]
    u = _unit(x)
    valid_local = x.abs().amax(1) > 0 if n else torch.zeros(0, dtype=torch.bool, device=x.device)
    best_s = torch.full((n, width), -float("inf"), dtype=x.dtype, device=x.device)
    best_i = torch.full((n, width), -1, dtype=torch.long, device=x.device)
    shard, src = u, comm.rank
    for step in range(comm.world):
        if step > 0:
            try:
                shard = comm.shift(shard, sizes[(comm.rank - step) % comm.world])
            except RuntimeError as exc:
                raise _fail(f"ring step {step}", exc) from exc
            src = (comm.rank - step) % comm.world
        m = shard.shape[0]
        if m == 0 or n == 0:
            continue
        ids = torch.arange(offsets[src], offsets[src] + m, device=x.device)
        shard_valid = shard.abs().amax(1) > 0
        for q0 in range(0, n, block):
            q1 = min(n, q0 + block)
            s = u[q0:q1] @ shard.T
            s.masked_fill_(~shard_valid.unsqueeze(0), -float("inf"))
            if src == comm.rank:
                r = torch.arange(q1 - q0, device=x.device)
                s[r, r + q0] = -float("inf")
            cat_s = torch.cat([best_s[q0:q1], s], 1)
            cat_i = torch.cat([best_i[q0:q1], ids.expand(q1 - q0, m)], 1)
            top = torch.topk(cat_s, width, dim=1)
            best_s[q0:q1] = top.values
            best_i[q0:q1] = torch.gather(cat_i, 1, top.indices)
    best_i[best_s == -float("inf")] = -1
    best_i[~valid_local] = -1
    return best_i


def _fetch(comm: _Comm, x: torch.Tensor, sizes: List[int], want: torch.Tensor) -> torch.Tensor:
    """Rows of the global ids `want` (sorted, distinct) from their owners, x's dtype."""
    offsets = torch.tensor([sum(sizes[:r]) for r in range(len(sizes) + 1)], device=want.device)
    owner = torch.searchsorted(offsets, want, right=True) - 1
    send_counts = torch.bincount(owner, minlength=comm.world)
    try:
        # how many ids each rank asks of me
        recv_counts = comm.all_to_all(send_counts, [1] * comm.world, [1] * comm.world)
        sc, rc = send_counts.tolist(), recv_counts.tolist()
        asked = comm.all_to_all(want, sc, rc)
        rows = x[asked - int(offsets[comm.rank])]
        return comm.all_to_all(rows, rc, sc)
    except RuntimeError as exc:
        raise _fail("the candidate fetch", exc) from exc


def ring_knn(x_local: torch.Tensor, k: int, group=None, margin: int = 16,
             block: int = 2048) -> torch.Tensor:
    """Exact k nearest neighbours (cosine) of this rank's rows among all ranks' rows.

    Args:
        x_local (Tensor[n_local, D]): this rank's rows, float32 or float64.
        k (int): neighbours per row, ``1 <= k < N``.
        group: process group (default: the default group).
        margin (int): shortlist entries kept beyond k for the exact rescoring. (default: 16)
        block (int): local rows per score tile. (default: 2048)

    Returns:
        Tensor[n_local, k] int64: global indices, nearest first, ties by the smaller index,
        ``-1`` pads: the rows ``offset .. offset + n_local - 1`` of :func:`knn_graph` on the
        concatenated data.
    """
    comm = _Comm(group)
    sizes = _check_shapes(comm, x_local, k)
    idx, _, _ = _exact_knn(comm, x_local, sizes, k, margin, block)
    return idx


def _exact_knn(comm: _Comm, x: torch.Tensor, sizes: List[int], k: int, margin: int, block: int):
    total = sum(sizes)
    offset = sum(sizes[:comm.rank])
    width = min(k + margin, total - 1)
    comm.lap("setup")
    short = _ring_shortlist(comm, x, sizes, width, block)
    comm.lap("ring")
    want = torch.unique(short[short >= 0])
    rows = _fetch(comm, x, sizes, want)
    comm.lap("fetch")
    n = x.shape[0]
    xc, rc, wc = x.detach().cpu(), rows.detach().cpu(), want.cpu()
    if n == 0:
        return torch.empty(0, k, dtype=torch.long), wc, rc
    local_rows = torch.searchsorted(wc, short.cpu().clamp(min=0))
    local_rows[short.cpu() < 0] = -1
    qid = torch.arange(offset, offset + n)
    if rc.shape[0] == 0:
        return torch.full((n, k), -1, dtype=torch.long), wc, rc
    idx, _ = torch.ops.torch_geometry._knn_merge(xc, qid, rc, wc, local_rows, k)
    comm.lap("merge")
    return idx, wc, rc


def nnk_graph(x_local: torch.Tensor, k: int, kernel: str = "cosine",
              symmetrize: str = "min_error", threshold: float = 1e-10, group=None,
              gather_to: Optional[int] = None, margin: int = 16,
              block: int = 2048) -> DistributedNNKGraph:
    """NNK graph of the rows of all ranks, each rank solving its own rows.

    Every rank of ``group`` must call it (collective). The result on each rank equals, bit
    for bit, the rows ``offset .. offset + n_local - 1`` of
    ``torch_geometry.nnk_graph(torch.cat(all shards), k)``.

    Args:
        x_local (Tensor[n_local, D]): this rank's rows, float32 or float64, finite, on the
            device of the backend (CPU for gloo, CUDA for NCCL). n_local may be 0.
        k (int): candidates per node, ``1 <= k < N`` (N = rows of all ranks).
        kernel (str): ``"cosine"`` only (see the module docstring). (default: ``"cosine"``)
        symmetrize (str): rule of the gathered graph's edge list. (default: ``"min_error"``)
        threshold (float): weights ``<= threshold`` are dropped. (default: ``1e-10``)
        group: process group. (default: the default group)
        gather_to (int, optional): rank of ``group`` that also receives the whole graph
            (``DistributedNNKGraph.graph``). (default: None, no gather)
        margin (int): shortlist entries beyond k rescored exactly. (default: 16)
        block (int): local rows per score tile. (default: 2048)

    Returns:
        DistributedNNKGraph (results on the CPU).

    Example (run on every rank)::

        >>> g = torch_geometry.distributed.nnk_graph(x_local, k=10, gather_to=0)
        >>> g.neighbors.shape == (x_local.shape[0], 10)
        True
    """
    if kernel != "cosine":
        raise ValueError(
            f"distributed.nnk_graph: kernel should be 'cosine', got {kernel!r} (the Gaussian "
            "kernel centres the points on their global mean, which a shard cannot reproduce)")
    if symmetrize not in _SYMMETRIZE:
        raise ValueError(f"distributed.nnk_graph: symmetrize should be one of {_SYMMETRIZE}, "
                         f"got {symmetrize!r}")
    if not isinstance(x_local, torch.Tensor) or x_local.dim() != 2:
        raise ValueError("distributed.nnk_graph: x_local should be a tensor [n_local, D], got "
                         f"{getattr(x_local, 'shape', type(x_local).__name__)}")
    k = check_k(k, "distributed.nnk_graph")
    margin = int(margin)
    block = check_k(block, "distributed.nnk_graph", "block")
    if margin < 0 or block < 1:
        raise ValueError("distributed.nnk_graph: margin should be >= 0 and block >= 1, got "
                         f"{margin} and {block}")
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("distributed.nnk_graph: torch.distributed is not initialised; call "
                           "torch.distributed.init_process_group first")
    x_local = x_local.detach()
    if x_local.dtype in (torch.float16, torch.bfloat16):
        x_local = x_local.float()
    comm = _Comm(group)
    if gather_to is not None and not 0 <= int(gather_to) < comm.world:
        raise ValueError(f"distributed.nnk_graph: gather_to should be a rank in [0, "
                         f"{comm.world - 1}] or None, got {gather_to}")
    sizes = _check_shapes(comm, x_local, k)
    total = sum(sizes)
    offset = sum(sizes[:comm.rank])
    n = x_local.shape[0]
    idx, want, rows = _exact_knn(comm, x_local, sizes, k, margin, block)
    nbr, w, err = _local_solve(x_local, idx, want, rows, k, threshold, offset)
    comm.lap("solve")
    out = DistributedNNKGraph(nbr, w, err, offset, total, 0)
    if gather_to is not None:
        out.graph = _gather(comm, out, sizes, k, int(gather_to), symmetrize)
        comm.lap("gather")
    out.bytes_sent = comm.bytes_sent
    out.seconds = dict(comm.seconds)
    return out


def _local_solve(x, idx, want, rows, k, threshold, offset):
    n = x.shape[0]
    xc = x.cpu()
    if n == 0:
        return (torch.empty(0, k, dtype=torch.long), torch.empty(0, k, dtype=x.dtype),
                torch.empty(0, dtype=x.dtype))
    # The rows the local solve reads: own rows and their candidates, in global order, so that
    # every index comparison of the solve (tie rules) sees the same order as globally.
    own = torch.arange(offset, offset + n)
    need = torch.unique(idx[idx >= 0])
    sub_ids = torch.unique(torch.cat([own, need]))
    pos_own = torch.searchsorted(sub_ids, own)
    # every candidate was shortlisted, hence fetched (own rows included)
    sub_x = xc.new_zeros((sub_ids.numel(), xc.shape[1]))
    sub_x[torch.searchsorted(sub_ids, need)] = rows[torch.searchsorted(want, need)]
    sub_x[pos_own] = xc
    cand = torch.full((sub_ids.numel(), k), -1, dtype=torch.long)
    local = torch.searchsorted(sub_ids, idx.clamp(min=0))
    local[idx < 0] = -1
    cand[pos_own] = local
    # a padded solve needs k < rows: zero rows (never candidates) fill the gap
    if sub_x.shape[0] <= k:
        sub_x = torch.cat([sub_x, sub_x.new_zeros(k + 1 - sub_x.shape[0], sub_x.shape[1])])
        cand = torch.cat([cand, cand.new_full((k + 1 - cand.shape[0], k), -1)])
    nb, w, err = torch.ops.torch_geometry.nnk_graph(sub_x, k, "cosine", None, "mean", cand,
                                                    float(threshold))
    nb, w, err = nb[pos_own], w[pos_own], err[pos_own]
    nb = torch.where(nb >= 0, sub_ids[nb.clamp(min=0)], nb)
    return nb, w, err


def _gather(comm: _Comm, g: DistributedNNKGraph, sizes: List[int], k: int, dst: int,
            symmetrize: str) -> Optional[NNKGraph]:
    """Concatenates every rank's rows on rank `dst` (padded to the largest shard)."""
    big = max(sizes)
    dev = _device_of(comm)
    pad = big - g.neighbors.shape[0]
    parts = (torch.cat([g.neighbors, g.neighbors.new_full((pad, k), -1)]),
             torch.cat([g.weights, g.weights.new_zeros((pad, k))]),
             torch.cat([g.error, g.error.new_zeros(pad)]))
    out = []
    try:
        for t in parts:
            t = t.to(dev)
            lst = [torch.empty_like(t) for _ in range(comm.world)] if comm.rank == dst else None
            dist.gather(t, lst, dst=comm.to_global(dst), group=comm.group)
            if comm.rank != dst:
                comm.bytes_sent += t.numel() * t.element_size()
            out.append(lst)
    except RuntimeError as exc:
        raise _fail("the gather", exc) from exc
    if comm.rank != dst:
        return None
    nb, w, err = (torch.cat([p[:s].cpu() for p, s in zip(lst, sizes)]) for lst in out)
    return NNKGraph(nb, w, err, symmetrize, kernel="cosine")


def _device_of(comm: _Comm) -> torch.device:
    # NCCL moves CUDA tensors only; gloo and the others take CPU tensors.
    if dist.get_backend(comm.group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
