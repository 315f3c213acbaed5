"""kNN and NNK graphs on point sets (rows of a tensor).

The heavy lifting is in the C++ operators ``torch.ops.torch_geometry.knn_graph``,
``nnk_graph`` and ``nnk_symmetrize``; this module normalises arguments and wraps the
result in :class:`NNKGraph`.
"""
from typing import Optional, Tuple, Union

import torch

from ._inputs import as_tensor, check_device, check_k
from ._ops import ensure_loaded

ensure_loaded()

_SYMMETRIZE = ("none", "max", "mean", "min_error")


def _sigma_args(kernel: str, sigma: Union[float, str, None]) -> Tuple[Optional[float], str]:
    if sigma is None:
        return None, "mean"
    if isinstance(sigma, str):
        if sigma not in ("mean", "local"):
            raise ValueError(f"sigma should be a number, 'mean' or 'local', got {sigma!r}")
        return None, sigma
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)):
        raise TypeError(f"sigma should be a number, 'mean' or 'local', got {type(sigma).__name__}")
    return float(sigma), "mean"


def knn_graph(x: torch.Tensor, k: int, kernel: str = "cosine",
              sigma: Union[float, str, None] = None,
              candidate_metric: str = "kernel") -> Tuple[torch.Tensor, torch.Tensor]:
    """Exact k nearest neighbours of every point among the other points.

    Args:
        x (Tensor[N, D] or ndarray): points, float32 or float64 (float16/bfloat16 are
            converted to float32), CPU, any strides. Not differentiable: ``x`` is detached.
        k (int): neighbours per point, ``1 <= k < N`` (refused otherwise, never clamped or
            truncated).
        kernel (str): ``"cosine"`` (similarity ``(1 + cos) / 2``; all-zero rows get no
            neighbours and are nobody's neighbour) or ``"gaussian"``. (default: ``"cosine"``)
        sigma (float or str, optional): Gaussian bandwidth: a number, ``"mean"`` (mean
            k-th-neighbour distance / 3) or ``"local"`` (per node). (default: ``"mean"``)
        candidate_metric (str): how neighbours are ranked: ``"kernel"`` (most similar under
            the kernel) or ``"euclidean"`` (nearest by L2 distance on the raw ``x``, as the
            published DeepNNK code does; the kernel then gives the similarities). The two
            agree for the Gaussian kernel and differ for the cosine kernel when norms vary.
            (default: ``"kernel"``)

    Returns:
        neighbors (Tensor[N, k], int64): best first under ``candidate_metric``, ``-1`` pads.
        similarities (Tensor[N, k]): kernel values in [0, 1], x's dtype (float32 for
        float16/bfloat16 inputs).

    Example:
        >>> x = torch.randn(100, 8)
        >>> nbr, sim = torch_geometry.knn_graph(x, k=5)
        >>> nbr.shape, bool((sim[:, :-1] >= sim[:, 1:]).all())
        (torch.Size([100, 5]), True)
    """
    x = as_tensor(x, "knn_graph")
    k = check_k(k, "knn_graph")
    check_device("knn_graph", x)
    s, mode = _sigma_args(kernel, sigma)
    return torch.ops.torch_geometry.knn_graph(x, k, kernel, s, mode, candidate_metric)


class NNKGraph:
    """An NNK graph: the directed form and, on demand, a symmetric edge list.

    Attributes:
        neighbors (Tensor[N, k], int64): each node's candidates, by NNK weight descending
            (zero-weight candidates stay in the row; ``-1`` pads).
        weights (Tensor[N, k]): NNK weights theta (0 off the support).
        error (Tensor[N]): reconstruction error per node, in [0, 1].
        symmetrize (str): rule for :attr:`edge_index` / :attr:`edge_weight`.
        zero_rows (Tensor[N], bool): nodes without a direction (all-zero rows under the
            cosine kernel); they have no edges. ``num_zero_rows`` counts them.
    """

    def __init__(self, neighbors: torch.Tensor, weights: torch.Tensor, error: torch.Tensor,
                 symmetrize: str = "min_error", zero_rows: Optional[torch.Tensor] = None,
                 kernel: str = "cosine"):
        if symmetrize not in _SYMMETRIZE:
            raise ValueError(f"symmetrize should be one of {_SYMMETRIZE}, got {symmetrize!r}")
        self.neighbors = neighbors
        self.weights = weights
        self.error = error
        self.symmetrize = symmetrize
        self.kernel = kernel
        n = neighbors.shape[0]
        self.zero_rows = (zero_rows if zero_rows is not None
                          else torch.zeros(n, dtype=torch.bool))
        self._edges: Optional[Tuple[torch.Tensor, torch.Tensor]] = None

    @property
    def num_nodes(self) -> int:
        return int(self.neighbors.shape[0])

    @property
    def num_zero_rows(self) -> int:
        return int(self.zero_rows.sum())

    @property
    def degree(self) -> torch.Tensor:
        """Tensor[N] int64: size of each node's NNK support (directed)."""
        return (self.weights > 0).sum(1)

    def _edge_list(self) -> Tuple[torch.Tensor, torch.Tensor]:
        if self._edges is None:
            check_device("nnk_symmetrize", self.neighbors)
            self._edges = torch.ops.torch_geometry.nnk_symmetrize(
                self.neighbors, self.weights, self.error, self.symmetrize)
        return self._edges

    @property
    def edge_index(self) -> torch.Tensor:
        """Tensor[2, E] int64: (source, target), both directions for symmetric rules."""
        return self._edge_list()[0]

    @property
    def edge_weight(self) -> torch.Tensor:
        """Tensor[E]: weight of each edge of :attr:`edge_index`."""
        return self._edge_list()[1]

    def to_sparse(self) -> torch.Tensor:
        """The weighted adjacency as a coalesced torch sparse COO tensor [N, N]."""
        n = self.num_nodes
        return torch.sparse_coo_tensor(self.edge_index, self.edge_weight, (n, n)).coalesce()

    def to_scipy(self):
        """The weighted adjacency as a ``scipy.sparse.csr_matrix`` [N, N]."""
        import scipy.sparse

        n = self.num_nodes
        ei = self.edge_index.numpy()
        return scipy.sparse.csr_matrix((self.edge_weight.numpy(), (ei[0], ei[1])), shape=(n, n))

    def __repr__(self) -> str:
        n, k = self.neighbors.shape
        return (f"NNKGraph(num_nodes={n}, k={k}, kernel={self.kernel!r}, "
                f"mean_degree={self.degree.float().mean().item():.2f}, "
                f"symmetrize={self.symmetrize!r}, zero_rows={self.num_zero_rows})")


def nnk_graph(x: torch.Tensor, k: int, kernel: str = "cosine",
              sigma: Union[float, str, None] = None,
              candidates: Union[torch.Tensor, str, None] = None,
              symmetrize: str = "min_error", threshold: float = 1e-10,
              candidate_metric: str = "kernel") -> NNKGraph:
    """NNK graph of the rows of ``x``, solved exactly per node.

    Each node i is approximated by a non-negative combination of its candidates S (its
    k nearest neighbours, or ``candidates``) in the kernel's feature space:
    ``theta_i = argmin_{theta >= 0} 1/2 theta^T K_SS theta - k_S^T theta``, solved to KKT
    optimality. Candidates with ``theta = 0`` are pruned: the graph is sparse and adapts
    to the local geometry.

    Args:
        x (Tensor[N, D] or ndarray): points, float32 or float64 (float16/bfloat16 are
            converted to float32), CPU, any strides, finite. Not differentiable: ``x`` is
            detached.
        k (int): candidates per node, an integer ``1 <= k < N``.
        kernel (str): ``"cosine"`` or ``"gaussian"``. (default: ``"cosine"``)
        sigma (float or str, optional): Gaussian bandwidth, see :func:`knn_graph`.
        candidates (Tensor[N, k], ndarray or str, optional): candidate indices from any engine
            (e.g. a FAISS IVF/HNSW index) for very large N; ``-1`` pads. Or the name of an
            approximate engine of :func:`torch_geometry.approximate_candidates` with its
            defaults: ``"ivf"`` (ours, torch only), ``"faiss"`` (FAISS IVFFlat) or
            ``"faiss-hnsw"`` (FAISS HNSW; both need ``faiss``, an optional dependency).
            (default: exact kNN)
        symmetrize (str): ``"none"``, ``"max"``, ``"mean"`` or ``"min_error"``, the rule
            used by :attr:`NNKGraph.edge_index`. (default: ``"min_error"``)
        threshold (float): weights ``<= threshold`` are dropped. (default: ``1e-10``)
        candidate_metric (str): without ``candidates``, how the k candidates are chosen:
            ``"kernel"`` (most similar under the kernel) or ``"euclidean"`` (nearest by L2
            distance on the raw ``x``, then weighed by the kernel: the published DeepNNK and
            CW-DeepNNK setting). Checked but unused when ``candidates`` are given.
            (default: ``"kernel"``)

    Returns:
        NNKGraph

    Example:
        >>> x = torch.randn(500, 16)
        >>> g = torch_geometry.nnk_graph(x, k=10)
        >>> g.neighbors.shape, g.edge_index.shape[0]
        (torch.Size([500, 10]), 2)
    """
    if symmetrize not in _SYMMETRIZE:
        raise ValueError(f"symmetrize should be one of {_SYMMETRIZE}, got {symmetrize!r}")
    x = as_tensor(x, "nnk_graph")
    k = check_k(k, "nnk_graph")
    if isinstance(candidates, str):
        from .approximate import _ENGINES, approximate_candidates

        if candidates not in _ENGINES:
            raise ValueError(f"nnk_graph: candidates should be a tensor or one of {_ENGINES}, "
                             f"got {candidates!r}")
        candidates = approximate_candidates(x, k, kernel=kernel, engine=candidates)
    if candidates is not None:
        candidates = as_tensor(candidates, "nnk_graph", "candidates")
    check_device("nnk_graph", x, candidates)
    s, mode = _sigma_args(kernel, sigma)
    nbr, w, err = torch.ops.torch_geometry.nnk_graph(
        x, k, kernel, s, mode, candidates, float(threshold), candidate_metric)
    zero_rows = ((x == 0).all(1) if kernel == "cosine"
                 else torch.zeros(x.shape[0], dtype=torch.bool))
    return NNKGraph(nbr, w, err, symmetrize, zero_rows=zero_rows, kernel=kernel)
