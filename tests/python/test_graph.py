"""knn_graph, nnk_graph and nnk_symmetrize against independent references."""
import subprocess

import numpy as np
import pytest
import scipy.linalg
import scipy.optimize
import torch

import torch_geometry as tg
from torch_geometry.datasets import load_fashion_mnist


# ---------------------------------------------------------------- references
def kernel_matrix(a: np.ndarray, b: np.ndarray, kernel: str, sigma=None) -> np.ndarray:
    """Kernel between rows of a and b in float64 (DESIGN §2)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    if kernel == "cosine":
        an = a / np.linalg.norm(a, axis=1, keepdims=True)
        bn = b / np.linalg.norm(b, axis=1, keepdims=True)
        return 0.5 * (1.0 + an @ bn.T)
    d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    return np.exp(-d2 / (2.0 * sigma ** 2))


def reference_qp(K: np.ndarray, b: np.ndarray) -> np.ndarray:
    """min 1/2 t'Kt - b't, t >= 0 via scipy's NNLS: with K = L L^T it is
    min ||L^T t - L^{-1} b||^2 (up to a constant)."""
    m = len(b)
    L = np.linalg.cholesky(K + 1e-13 * np.trace(K) / m * np.eye(m))
    rhs = scipy.linalg.solve_triangular(L, b, lower=True)
    t, _ = scipy.optimize.nnls(L.T, rhs, maxiter=50 * m)
    return t


def objective(K, b, t):
    return 0.5 * t @ K @ t - b @ t


def check_against_reference(x: torch.Tensor, g: tg.NNKGraph, kernel="cosine", sigma=None,
                            rel=1e-6, kkt=1e-6):
    xs = x.double().numpy()
    nbr, w = g.neighbors.numpy(), g.weights.double().numpy()
    for i in range(x.shape[0]):
        valid = nbr[i] >= 0
        S = nbr[i][valid]
        s = sigma[i] if isinstance(sigma, np.ndarray) else sigma
        K = kernel_matrix(xs[S], xs[S], kernel, s)
        b = kernel_matrix(xs[i:i + 1], xs[S], kernel, s)[0]
        t = w[i][valid]
        ref = reference_qp(K, b)
        f_ours, f_ref = objective(K, b, t), objective(K, b, ref)
        assert f_ours <= f_ref + rel * abs(f_ref), (i, f_ours, f_ref)
        # KKT: gradient ~0 on the support, >= 0 off it.
        grad = K @ t - b
        assert np.all(t >= 0)
        assert np.all(np.abs(grad[t > 0]) <= kkt), (i, grad[t > 0])
        assert np.all(grad[t == 0] >= -kkt), (i, grad[t == 0].min())
        # Reconstruction error as defined.
        e = 1 - 2 * t @ b + t @ K @ t
        assert abs(e - g.error[i].item()) <= 1e-5


# ---------------------------------------------------------------- knn_graph
@pytest.mark.parametrize("kernel", ["cosine", "gaussian"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("contiguous", [True, False])
def test_knn_equals_brute_force(kernel, dtype, contiguous):
    torch.manual_seed(0)
    x = torch.randn(15, 1500, dtype=dtype).t() if not contiguous else torch.randn(1500, 15, dtype=dtype)
    k = 12
    nbr, sim = tg.knn_graph(x, k, kernel=kernel)
    xd = x.double()
    if kernel == "cosine":
        xn = xd / xd.norm(dim=1, keepdim=True)
        score = xn @ xn.t()
    else:
        score = -torch.cdist(xd, xd) ** 2
    score.fill_diagonal_(-float("inf"))
    ref_score, ref = score.topk(k, dim=1)
    # Same sets (order can differ only between exact ties, which random data has none of).
    assert torch.equal(nbr, ref)
    assert nbr.dtype == torch.int64 and sim.dtype == dtype
    if kernel == "cosine":
        torch.testing.assert_close(sim.double(), 0.5 * (1 + ref_score), atol=1e-5, rtol=0)
    assert bool((sim[:, :-1] >= sim[:, 1:]).all())


def test_knn_gaussian_sigma_modes():
    torch.manual_seed(1)
    x = torch.randn(300, 5, dtype=torch.float64)
    k = 7
    nbr, _ = tg.knn_graph(x, k, kernel="gaussian", sigma=2.0)
    d = (x[:, None] - x[nbr]).norm(dim=-1)  # [N, k]
    for sigma, expected in [
        (2.0, torch.exp(-d ** 2 / (2 * 2.0 ** 2))),
        ("mean", torch.exp(-d ** 2 / (2 * (d[:, -1].mean() / 3) ** 2))),
        ("local", torch.exp(-d ** 2 / (2 * (d[:, -1:] / 3) ** 2))),
    ]:
        _, sim = tg.knn_graph(x, k, kernel="gaussian", sigma=sigma)
        torch.testing.assert_close(sim, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kernel", ["cosine", "gaussian"])
def test_knn_tiles_larger_than_one_block(kernel):
    # N = 5000 > two 2048-point blocks: diagonal tiles, row passes and transposed (column)
    # passes all contribute; zero rows (no direction under cosine) sit in every block.
    torch.manual_seed(2)
    x = torch.randn(5000, 8)
    zero = [10, 2500, 4999]
    if kernel == "cosine":
        x[zero] = 0
    nbr, _ = tg.knn_graph(x, 5, kernel=kernel)
    xd = x.double()
    if kernel == "cosine":
        xn = xd / xd.norm(dim=1, keepdim=True).clamp(min=1e-300)
        s = xn @ xn.t()
        s[:, zero] = -3  # never a neighbour
    else:
        s = -torch.cdist(xd, xd) ** 2
    s.fill_diagonal_(-float("inf"))
    expected = s.topk(5, dim=1).indices
    if kernel == "cosine":
        expected[zero] = -1
    assert torch.equal(nbr, expected)
    torch.set_num_threads(1)
    nbr1, sim1 = tg.knn_graph(x, 5, kernel=kernel)
    torch.set_num_threads(2)
    nbr2, sim2 = tg.knn_graph(x, 5, kernel=kernel)
    assert torch.equal(nbr1, nbr2) and torch.equal(sim1, sim2)


# ---------------------------------------------------------------- nnk_graph
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nnk_matches_independent_solver_random(dtype):
    torch.manual_seed(3)
    x = torch.randn(300, 20, dtype=dtype)
    g = tg.nnk_graph(x, 15)
    check_against_reference(x, g)


def test_nnk_matches_independent_solver_gaussian_local():
    torch.manual_seed(4)
    x = torch.randn(250, 6, dtype=torch.float64)
    g = tg.nnk_graph(x, 12, kernel="gaussian", sigma="local")
    far = (x[:, None] - x[g.neighbors]).norm(dim=-1).max(dim=1).values
    check_against_reference(x, g, kernel="gaussian", sigma=(far / 3).numpy())


def test_nnk_matches_independent_solver_fashion_mnist():
    x, _ = load_fashion_mnist("train", n=1000)
    g = tg.nnk_graph(x, 50)
    # float32 kernels: objective agreement at 1e-6 relative, gradient at float32 level.
    check_against_reference(x, g, rel=1e-6, kkt=1e-5)
    deg = g.degree.float()
    assert 2 < deg.mean() < 50  # sparse, not empty


def test_nnk_low_rank_and_duplicates():
    # D < k and repeated points: singular K_SS everywhere; still a valid, KKT graph.
    torch.manual_seed(5)
    base = torch.randn(200, 3, dtype=torch.float64)
    x = torch.cat([base, base[:20]])  # 20 exact duplicates
    g = tg.nnk_graph(x, 20)
    assert torch.isfinite(g.weights).all() and torch.isfinite(g.error).all()
    for i in range(20):
        j = 200 + i
        # Each duplicate pair is connected with weight 1 and nothing else.
        assert g.neighbors[i, 0].item() == j and g.weights[i, 0].item() == 1.0
        assert (g.weights[i] > 0).sum().item() == 1 and g.error[i].item() == 0.0
    rest = torch.arange(20, 200)
    xs = x.numpy()
    for i in rest.tolist():
        S = g.neighbors[i].numpy()
        K = kernel_matrix(xs[S], xs[S], "cosine")
        b = kernel_matrix(xs[i:i + 1], xs[S], "cosine")[0]
        t = g.weights[i].numpy()
        assert objective(K, b, t) <= objective(K, b, reference_qp(K, b)) + 1e-6


def test_nnk_scaled_copies_are_duplicates_under_cosine():
    torch.manual_seed(6)
    x = torch.randn(60, 4)
    x[10] = 3.0 * x[2]
    g = tg.nnk_graph(x, 5)
    assert g.neighbors[2, 0].item() == 10 and g.weights[2, 0].item() == 1.0


def test_nnk_zero_rows_are_isolated_and_counted():
    torch.manual_seed(7)
    x = torch.relu(torch.randn(400, 6))
    zero = (x == 0).all(1)
    x[:7] = 0
    zero[:7] = True
    g = tg.nnk_graph(x, 10)
    assert g.num_zero_rows == int(zero.sum())
    assert bool((g.neighbors[zero] == -1).all())
    assert not bool(torch.isin(g.neighbors, torch.nonzero(zero).flatten()).any())
    assert bool((g.error[zero] == 1).all())
    # The rest of the graph is what it would be without the zero rows.
    keep = torch.nonzero(~zero).flatten()
    g2 = tg.nnk_graph(x[keep], 10)
    remap = torch.full((x.shape[0],), -1, dtype=torch.long)
    remap[keep] = torch.arange(len(keep))
    mapped = torch.where(g.neighbors[keep] >= 0, remap[g.neighbors[keep].clamp(min=0)], -1)
    assert torch.equal(mapped, g2.neighbors)
    torch.testing.assert_close(g.weights[keep], g2.weights)


def test_nnk_user_candidates_equal_exact_when_exact():
    torch.manual_seed(8)
    x = torch.randn(500, 10)
    nbr, _ = tg.knn_graph(x, 10)
    shuffled = nbr[:, torch.randperm(10)]
    g1 = tg.nnk_graph(x, 10)
    g2 = tg.nnk_graph(x, 10, candidates=shuffled)
    assert torch.equal(g1.neighbors, g2.neighbors)
    assert torch.equal(g1.weights, g2.weights)
    # Padding, self and repeats are cleaned away.
    messy = nbr.clone()
    messy[:, -1] = -1
    messy[:, -2] = torch.arange(500)
    messy[:, -3] = messy[:, 0]
    g3 = tg.nnk_graph(x, 10, candidates=messy)
    assert bool((g3.neighbors[:, -3:] == -1).all())
    check_against_reference(x, g3, rel=1e-6, kkt=1e-5)


def test_nnk_same_result_for_one_and_two_threads():
    x, _ = load_fashion_mnist("train", n=3000)
    torch.set_num_threads(1)
    g1 = tg.nnk_graph(x, 30)
    torch.set_num_threads(2)
    g2 = tg.nnk_graph(x, 30)
    assert torch.equal(g1.neighbors, g2.neighbors)
    assert torch.equal(g1.weights, g2.weights)
    assert torch.equal(g1.error, g2.error)


def test_nnk_threshold_drops_small_weights():
    torch.manual_seed(9)
    x = torch.randn(200, 10, dtype=torch.float64)
    g = tg.nnk_graph(x, 15, threshold=0.05)
    w = g.weights
    assert bool(((w == 0) | (w > 0.05)).all())


# ---------------------------------------------------------------- symmetrize
def reference_symmetrize(nbr, w, err, mode):
    n, k = nbr.shape
    theta = {}
    for i in range(n):
        for l in range(k):
            j = int(nbr[i, l])
            if j >= 0:
                theta[(i, j)] = float(w[i, l])
    out = {}
    if mode == "none":
        return {p: v for p, v in theta.items() if v > 0}
    pairs = {(min(p), max(p)) for p in theta}
    for a, b in pairs:
        tab, tba = theta.get((a, b)), theta.get((b, a))
        if mode == "max":
            v = max(tab or 0.0, tba or 0.0)
        elif mode == "mean":
            v = ((tab or 0.0) + (tba or 0.0)) / 2
        else:
            if tab is None or tba is None:
                v = 0.0
            elif err[a] < err[b]:
                v = tab
            elif err[b] < err[a]:
                v = tba
            else:
                v = max(tab, tba)
        if v > 0:
            out[(a, b)] = out[(b, a)] = v
    return out


@pytest.mark.parametrize("mode", ["none", "max", "mean", "min_error"])
def test_symmetrize_matches_reference(mode):
    torch.manual_seed(10)
    x = torch.randn(300, 6, dtype=torch.float64)
    g = tg.nnk_graph(x, 10, symmetrize=mode)
    ref = reference_symmetrize(g.neighbors.numpy(), g.weights.numpy(), g.error.numpy(), mode)
    ei, ew = g.edge_index, g.edge_weight
    got = {(int(a), int(b)): float(v) for a, b, v in zip(ei[0], ei[1], ew)}
    assert got == pytest.approx(ref) and set(got) == set(ref)
    # Sorted by source then target.
    key = ei[0] * 300 + ei[1]
    assert bool((key[1:] > key[:-1]).all())
    if mode != "none":
        A = g.to_scipy()
        assert abs(A - A.T).max() == 0
    dense = g.to_sparse().to_dense()
    assert torch.equal(dense, torch.from_numpy(g.to_scipy().toarray()))


# ---------------------------------------------------------------- TorchScript
def test_ops_in_torchscript_and_cpp(tmp_path, build_dir):
    runner = build_dir / "torch_geometry_jit_runner"
    if not runner.exists():
        pytest.fail(f"{runner} missing: build the CMake tree first (make build)")

    class GraphModule(torch.nn.Module):
        def __init__(self, x):
            super().__init__()
            self.register_buffer("x", x)

        def forward(self):
            nbr, w, err = torch.ops.torch_geometry.nnk_graph(self.x, 8, "cosine", None, "mean", None, 1e-10)
            ei, ew = torch.ops.torch_geometry.nnk_symmetrize(nbr, w, err, "min_error")
            knn, sim = torch.ops.torch_geometry.knn_graph(self.x, 8, "cosine", None, "mean")
            return nbr, w, err, ei, ew, knn, sim

    torch.manual_seed(11)
    module = torch.jit.script(GraphModule(torch.randn(200, 12, dtype=torch.float64)))
    path = tmp_path / "graph.pt"
    module.save(str(path))
    expected = module()
    result = tmp_path / "out.pt"
    out = subprocess.run([str(runner), str(path), str(result)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    got = torch.load(str(result))
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert a.dtype == b.dtype and torch.equal(a, b)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("x, k, kwargs, match", [
    (torch.tensor([[float("nan"), 1.0]] * 5), 2, {}, "finite"),
    (torch.tensor([[float("inf"), 1.0]] * 5), 2, {}, "finite"),
    (torch.empty(0, 3), 1, {}, "empty"),
    (torch.randn(1, 3), 1, {}, "smaller than the number of points"),
    (torch.randn(10), 1, {}, "2-D"),
    (torch.randn(4, 3, 2), 1, {}, "2-D"),
    (torch.randint(0, 5, (10, 3)), 2, {}, "float32 or float64"),
    (torch.randn(10, 3), 0, {}, "k should be >= 1"),
    (torch.randn(10, 3), -3, {}, "k should be >= 1"),
    (torch.randn(10, 3), 10, {}, "smaller than the number of points"),
    (torch.randn(10, 3), 3, {"kernel": "rbf"}, "kernel should be"),
    (torch.randn(10, 3), 3, {"kernel": "gaussian", "sigma": 0.0}, "sigma should be"),
    (torch.randn(10, 3), 3, {"kernel": "gaussian", "sigma": -1.0}, "sigma should be"),
    (torch.randn(10, 3), 3, {"kernel": "cosine", "sigma": 1.0}, "gaussian kernel only"),
    (torch.randn(10, 3), 3, {"candidates": torch.zeros(10, 2, dtype=torch.long)}, r"shape \[N, k\]"),
    (torch.randn(10, 3), 3, {"candidates": torch.zeros(10, 3, dtype=torch.int32)}, "int64"),
    (torch.randn(10, 3), 3, {"candidates": torch.full((10, 3), 10)}, r"indices in \[0, N\)"),
    (torch.randn(10, 3), 3, {"candidates": torch.full((10, 3), -2)}, r"indices in \[0, N\)"),
    (torch.randn(10, 3), 3, {"threshold": -1.0}, "threshold"),
])
def test_nnk_bad_input(x, k, kwargs, match):
    with pytest.raises(RuntimeError, match=match):
        tg.nnk_graph(x, k, **kwargs)


def test_python_level_bad_input():
    x = torch.randn(10, 3)
    with pytest.raises(ValueError, match="symmetrize"):
        tg.nnk_graph(x, 3, symmetrize="sym")
    with pytest.raises(ValueError, match="sigma"):
        tg.nnk_graph(x, 3, kernel="gaussian", sigma="median")
    with pytest.raises(RuntimeError, match="kernel should be"):
        tg.knn_graph(x, 3, kernel="l2")


def _openblas():
    import ctypes

    for name in ("libopenblas.so.0", "libblas.so.3"):
        try:
            lib = ctypes.CDLL(name, mode=4)  # RTLD_NOLOAD: only if torch already loaded it
            lib.openblas_get_num_threads  # noqa: B018 (raises AttributeError if not OpenBLAS)
            return lib
        except (OSError, AttributeError):
            continue
    return None


def test_knn_leaves_openblas_thread_count_as_it_was():
    # torch.set_num_threads does not reach OpenBLAS: the kNN search runs its GEMM tiles with
    # OpenBLAS set to torch's count (BlasThreadsGuard; tests/cpp/test_blas_threads.cpp checks
    # the count inside it) and must give OpenBLAS its own count back, whichever is larger.
    lib = _openblas()
    if "BLAS_INFO=mkl" in torch.__config__.show():
        assert lib is None  # MKL follows torch's count itself: there is nothing to restore
        return
    assert lib is not None, "OpenBLAS is not loaded: the test environment's BLAS is OpenBLAS"
    before = lib.openblas_get_num_threads()
    x = torch.randn(3000, 32, generator=torch.Generator().manual_seed(5))
    try:
        for blas, threads in [(2, 1), (1, 2)]:
            lib.openblas_set_num_threads(blas)
            torch.set_num_threads(threads)
            tg.knn_graph(x, 10)
            assert lib.openblas_get_num_threads() == blas
    finally:
        torch.set_num_threads(2)
        lib.openblas_set_num_threads(before)


@pytest.mark.parametrize("kernel", ["cosine", "gaussian"])
def test_nnk_exact_path_equals_given_exact_candidates(kernel):
    # The exact path reuses the kNN search's (exactly rescored) similarities; given the same
    # candidates, the solve recomputes them: the graphs must agree bit for bit.
    x, _ = load_fashion_mnist("train", n=3000)
    nbr, _ = tg.knn_graph(x, 20, kernel=kernel)
    g1 = tg.nnk_graph(x, 20, kernel=kernel)
    g2 = tg.nnk_graph(x, 20, kernel=kernel, candidates=nbr)
    assert torch.equal(g1.neighbors, g2.neighbors)
    assert torch.equal(g1.weights, g2.weights)
    assert torch.equal(g1.error, g2.error)
