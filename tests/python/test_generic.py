"""The device-generic kernels (csrc/generic/, what CUDA tensors get), run on CPU through
their private ops torch.ops.torch_geometry._generic_<op>, against the CPU kernels and
against direct computations: identical neighbours, weights within 1e-5 (float32) / 1e-10
(float64), KKT, and the same errors for the same bad input."""
import numpy as np
import pytest
import torch

import torch_geometry  # noqa: F401  (loads the operators)

ops = torch.ops.torch_geometry
OPS = ["knn_graph", "nnk_graph", "nnk_symmetrize", "manifold_metrics", "nnk_loo_error",
       "label_smoothness", "neighborhood_overlap", "channel_nnk_graph", "channel_overlap"]
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
# The CPU kernel forms float32 kernel entries in float32 arithmetic; the generic kernels
# form them in float64. Their float32 weights therefore differ by the CPU kernel's own
# float32 rounding, amplified by the conditioning of K_SS (measured up to 1.02e-5 here,
# where the CPU kernel's float32 and float64 results differ by as much). The 1e-5 bound is
# checked against the CPU kernel run on the same points in float64 (measured <= 3e-8).
CPU_FLOAT32_TOL = 5e-5


def generic(name):
    return getattr(ops, "_generic_" + name)


def cpu(name):
    return getattr(ops, name)


@pytest.fixture
def small_tiles(monkeypatch):
    """A memory budget small enough that the generic kNN runs over many row blocks and
    several column tiles (256 columns, the narrowest tile)."""
    monkeypatch.setenv("TORCH_GEOMETRY_GENERIC_BUDGET", "200000")


@pytest.fixture
def small_blocks(monkeypatch):
    """A memory budget that splits the generic NNK solve into several blocks of nodes."""
    monkeypatch.setenv("TORCH_GEOMETRY_GENERIC_BUDGET", "1500000")


def points(n, d, dtype, seed, contiguous=True):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    x = x * torch.rand(n, 1, generator=gen, dtype=torch.float64).add(0.5)  # norms vary
    x = x.to(dtype)
    if not contiguous:
        x = torch.cat([x, x], 1)[:, ::2]
        assert not x.is_contiguous()
    return x


def with_duplicates_and_zero_rows(x):
    x = x.clone()
    x[5] = x[3]            # exact duplicates
    x[6] = x[3]
    x[9] = 2 * x[8]        # the same direction (a duplicate under cosine only); exact in
    #                        floating point, so ties between 8 and 9 are exact ties
    x[12] = 0              # all-zero rows (isolated under cosine)
    x[13] = 0
    return x


def by_id(nb, *vals):
    """Rows sorted by neighbour id (padding last), values carried along."""
    order = torch.argsort(torch.where(nb < 0, nb.shape[0] + 1, nb), dim=1, stable=True)
    return (nb.gather(1, order),) + tuple(v.gather(1, order) for v in vals)


def assert_same_lists(nb_g, val_g, nb_w, val_w, tol):
    """The same neighbours with the same values, per row and per neighbour; positions may
    differ only between entries whose values agree within tol (rounding ties, e.g. a point
    and a scaled copy of it under the cosine kernel, whose bits differ between the two
    kernels' arithmetic)."""
    a, va = by_id(nb_g, val_g)
    b, vb = by_id(nb_w, val_w)
    assert torch.equal(a, b)
    torch.testing.assert_close(va, vb, atol=tol, rtol=0)
    torch.testing.assert_close(val_g, val_w, atol=tol, rtol=0)
    moved = (nb_g != nb_w).float().mean().item()
    assert moved < 0.01, moved


def closeness(x, nb, kernel):
    """cos(x_i, x_j) (cosine) or -||x_i - x_j|| (gaussian) of each listed neighbour, float64:
    a kernel-independent order (the Gaussian kernel is monotone in the distance)."""
    xs = x.double()
    xj = xs[nb.clamp(min=0)]
    if kernel == "cosine":
        out = torch.nn.functional.cosine_similarity(xs.unsqueeze(1), xj, dim=2)
    else:
        out = -(xj - xs.unsqueeze(1)).norm(dim=2)
    return out.masked_fill(nb < 0, -np.inf)


def assert_same_graph(got, want, dtype, x=None, kernel="cosine", want64=None):
    """Equal graphs where every per-node QP has one solution (K_SS positive definite).
    For float32, `want64` is the CPU kernel's result on the same points in float64."""
    nb_g, w_g, e_g = got
    nb_w, w_w, e_w = want
    assert w_g.dtype == w_w.dtype == dtype and e_g.dtype == dtype
    tol = TOL[dtype] if dtype == torch.float64 else CPU_FLOAT32_TOL
    assert_same_lists(nb_g, w_g, nb_w, w_w, tol)
    torch.testing.assert_close(e_g, e_w, atol=tol, rtol=0)
    if dtype == torch.float32:
        assert want64 is not None
        assert_same_lists(nb_g, w_g.double(), want64[0], want64[1], TOL[dtype])
        torch.testing.assert_close(e_g.double(), want64[2], atol=TOL[dtype], rtol=0)
    if x is not None:
        assert_output_order(x, nb_g, w_g, kernel)


def assert_output_order(x, nb, w, kernel):
    """Weight descending, then similarity descending (within rounding), padding last."""
    c = closeness(x, nb, kernel)
    same_w = w[:, 1:] == w[:, :-1]
    present = nb[:, 1:] >= 0
    assert bool((w[:, 1:] <= w[:, :-1]).all())
    assert bool(((c[:, 1:] - c[:, :-1])[same_w & present] <= 1e-6).all())
    assert bool((present <= (nb[:, :-1] >= 0)).all())


def assert_same_optimum(got, want, dtype):
    """Where K_SS is singular (D < k, duplicates among the candidates) the optimal weights
    are not unique: both kernels must find an optimum of the same QP. The objective value,
    and with it the error e = 1 + 2 * objective, is unique: it must agree."""
    nb_g, w_g, e_g = got
    nb_w, w_w, e_w = want
    assert torch.equal(by_id(nb_g)[0], by_id(nb_w)[0])
    torch.testing.assert_close(e_g, e_w, atol=TOL[dtype], rtol=0)


def kernel_block(xs, S, i, kernel, sigma):
    """K among candidates S and k_S from i, float64, straight from the definitions."""
    pts = xs[np.concatenate([[i], S])]
    if kernel == "cosine":
        nrm = np.linalg.norm(pts, axis=1, keepdims=True)
        u = pts / nrm
        full = 0.5 * (1 + u @ u.T)
    else:
        d2 = ((pts[:, None] - pts[None]) ** 2).sum(-1)
        full = np.exp(-d2 / (2 * sigma ** 2))
    return full[1:, 1:], full[0, 1:]


def assert_kkt(x, nbr, w, kernel, sigma, tol):
    xs = x.double().numpy()
    for i in range(x.shape[0]):
        S = nbr[i][nbr[i] >= 0].numpy()
        if len(S) == 0:
            continue
        t = w[i][: len(S)].double().numpy()
        if (t == 1).sum() >= 1 and abs(t.sum() - (t == 1).sum()) == 0:
            continue  # the duplicate rule
        s = sigma[i] if isinstance(sigma, np.ndarray) else sigma
        K, b = kernel_block(xs, S, i, kernel, s)
        grad = K @ t - b
        assert np.all(t >= 0)
        assert np.all(np.abs(grad[t > 0]) <= tol), (i, grad[t > 0])
        assert np.all(grad[t == 0] >= -tol), (i, grad[t == 0].min())


# ---------------------------------------------------------------- registration
@pytest.mark.parametrize("name", OPS)
def test_every_operator_has_a_cuda_kernel_and_a_generic_op(name):
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"torch_geometry::{name}", "CUDA")
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"torch_geometry::_generic_{name}",
                                                          "CompositeExplicitAutograd")


def test_native_cuda_kernels_are_off_by_default():
    assert ops._native_cuda_enabled() is False
    if torch.version.cuda is None:
        # a CPU-only torch: the library has no native CUDA kernels to turn on
        with pytest.raises(RuntimeError, match="no native CUDA kernels"):
            ops._set_native_cuda(True)
    else:
        # compiled with nvcc (make test's torch-2 leg): they can be turned on, and back off
        ops._set_native_cuda(True)
        assert ops._native_cuda_enabled() is True
    ops._set_native_cuda(False)
    assert ops._native_cuda_enabled() is False


# ---------------------------------------------------------------- knn_graph
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("contiguous", [True, False])
@pytest.mark.parametrize("kernel, sigma, mode", [
    ("cosine", None, "mean"), ("gaussian", None, "mean"), ("gaussian", None, "local"),
    ("gaussian", 1.5, "mean")])
def test_knn_equals_cpu_kernel(dtype, contiguous, kernel, sigma, mode, small_tiles):
    x = with_duplicates_and_zero_rows(points(600, 12, dtype, 1, contiguous))
    got = generic("knn_graph")(x, 10, kernel, sigma, mode)
    want = cpu("knn_graph")(x, 10, kernel, sigma, mode)
    assert_same_lists(got[0], got[1], want[0], want[1], TOL[dtype])
    # Direct check of the definition on a few rows: self excluded, the k largest.
    xs = x.double()
    for i in (0, 3, 100, 599):
        if kernel == "cosine":
            sim = torch.nn.functional.cosine_similarity(xs[i:i + 1], xs, dim=1)
        else:
            sim = -((xs - xs[i]) ** 2).sum(1)
        sim[i] = -np.inf
        if kernel == "cosine":
            sim[(xs == 0).all(1)] = -np.inf
        best = sim.topk(10).values
        torch.testing.assert_close(sim[got[0][i]], best, atol=1e-9, rtol=0)


def test_knn_ties_go_to_the_smaller_index(small_tiles):
    # 30 copies of one point: 29 exact ties for each copy, more than k + 8.
    x = points(400, 6, torch.float64, 2)
    x[100:130] = x[7]
    got = generic("knn_graph")(x, 12, "cosine", None, "mean")
    want = cpu("knn_graph")(x, 12, "cosine", None, "mean")
    assert torch.equal(got[0], want[0])
    expected = [j for j in [7] + list(range(100, 130)) if j != 110][:12]
    assert got[0][110].tolist() == expected


# ---------------------------------------------------------------- nnk_graph
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("contiguous", [True, False])
@pytest.mark.parametrize("kernel, sigma, mode", [
    ("cosine", None, "mean"), ("gaussian", None, "mean"), ("gaussian", None, "local"),
    ("gaussian", 2.0, "mean")])
def test_nnk_equals_cpu_kernel(dtype, contiguous, kernel, sigma, mode, small_blocks):
    # D = 16 > k = 12 and no duplicates: positive definite kernel blocks, one optimum per
    # node, so the weights themselves must agree. All-zero rows included.
    x = points(300, 16, dtype, 3, contiguous)
    x[12:14] = 0
    got = generic("nnk_graph")(x, 12, kernel, sigma, mode, None, 1e-10)
    want = cpu("nnk_graph")(x, 12, kernel, sigma, mode, None, 1e-10)
    want64 = cpu("nnk_graph")(x.double(), 12, kernel, sigma, mode, None, 1e-10)
    assert_same_graph(got, want, dtype, x, kernel, want64)
    if dtype == torch.float64:
        if kernel == "cosine":
            sig = None
        elif sigma is not None:
            sig = sigma
        else:
            # Distance to the farthest candidate / 3, per node or averaged (DESIGN §2).
            far = (-closeness(x, got[0], kernel)).masked_fill(got[0] < 0, 0).amax(1).numpy() / 3
            sig = far if mode == "local" else far.mean()
        assert_kkt(x, got[0], got[1], kernel, sig, 1e-9)
    if kernel == "cosine":
        assert bool((got[0][12:14] == -1).all()) and got[2][12:14].tolist() == [1.0, 1.0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kernel", ["cosine", "gaussian"])
def test_nnk_duplicates_like_the_cpu_kernel(dtype, kernel, small_blocks):
    # Duplicates of a node take weight 1; as candidates of other nodes they make K_SS
    # singular (two equal columns: any split of their weight is optimal).
    x = with_duplicates_and_zero_rows(points(300, 16, dtype, 3))
    got = generic("nnk_graph")(x, 12, kernel, None, "mean", None, 1e-10)
    want = cpu("nnk_graph")(x, 12, kernel, None, "mean", None, 1e-10)
    assert_same_optimum(got, want, dtype)
    assert_output_order(x, got[0], got[1], kernel)
    assert got[0][3, :2].tolist() == [5, 6] and got[1][3, :2].tolist() == [1.0, 1.0]
    assert float(got[2][3]) == 0.0 and int((got[1][3] > 0).sum()) == 2
    if kernel == "cosine":
        assert got[0][8, 0] == 9 and float(got[1][8, 0]) == 1.0
        assert bool((got[0][12:14] == -1).all()) and got[2][12:14].tolist() == [1.0, 1.0]
    if dtype == torch.float64 and kernel == "cosine":
        assert_kkt(x, got[0], got[1], kernel, None, 1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nnk_low_dimension_singular_blocks(dtype, small_blocks):
    # D < k: every kernel block is singular; the ridge and the skipping rule decide which
    # of the optimal weight vectors comes out.
    x = points(250, 3, dtype, 4)
    got = generic("nnk_graph")(x, 15, "cosine", None, "mean", None, 1e-10)
    want = cpu("nnk_graph")(x, 15, "cosine", None, "mean", None, 1e-10)
    assert_same_optimum(got, want, dtype)
    assert_output_order(x, got[0], got[1], "cosine")
    if dtype == torch.float64:
        assert_kkt(x, got[0], got[1], "cosine", None, 1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nnk_given_candidates_are_cleaned_like_the_cpu_kernel(dtype, small_blocks):
    x = points(300, 16, dtype, 5)
    x[12] = 0
    gen = torch.Generator().manual_seed(6)
    cand = torch.randint(-1, 300, (300, 10), generator=gen)
    cand[:, 0] = torch.arange(300)          # self
    cand[:, 1] = cand[:, 2]                 # repeats
    cand[:, 3] = 12                         # a zero row (not a candidate under cosine)
    cand[40, :] = -1                        # no candidate at all
    for kernel, mode in (("cosine", "mean"), ("gaussian", "local")):
        got = generic("nnk_graph")(x, 10, kernel, None, mode, cand, 1e-10)
        want = cpu("nnk_graph")(x, 10, kernel, None, mode, cand, 1e-10)
        want64 = cpu("nnk_graph")(x.double(), 10, kernel, None, mode, cand, 1e-10)
        assert_same_graph(got, want, dtype, x, kernel, want64)
        assert bool((got[0][40] == -1).all()) and float(got[2][40]) == 1.0


def test_nnk_threshold_equals_cpu_kernel():
    x = points(200, 20, torch.float64, 7)
    for threshold in (0.0, 0.05, 0.3):
        got = generic("nnk_graph")(x, 15, "cosine", None, "mean", None, threshold)
        want = cpu("nnk_graph")(x, 15, "cosine", None, "mean", None, threshold)
        assert_same_graph(got, want, torch.float64)
        assert bool(((got[1] == 0) | (got[1] > threshold)).all())


def test_nnk_fashion_mnist_equals_cpu_kernel():
    from torch_geometry.datasets import load_fashion_mnist
    x, _ = load_fashion_mnist("train", n=1000)
    got = generic("nnk_graph")(x, 20, "cosine", None, "mean", None, 1e-10)
    want = cpu("nnk_graph")(x, 20, "cosine", None, "mean", None, 1e-10)
    want64 = cpu("nnk_graph")(x.double(), 20, "cosine", None, "mean", None, 1e-10)
    assert_same_graph(got, want, torch.float32, x, "cosine", want64)


# ---------------------------------------------------------------- nnk_symmetrize
@pytest.mark.parametrize("mode", ["none", "max", "mean", "min_error"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_symmetrize_equals_cpu_kernel(mode, dtype):
    x = points(300, 6, dtype, 8)
    nb, w, err = cpu("nnk_graph")(x, 10, "cosine", None, "mean", None, 1e-10)
    err = err.clone()
    err[::7] = err[0]  # ties of the error: the larger weight wins
    got = generic("nnk_symmetrize")(nb, w, err, mode)
    want = cpu("nnk_symmetrize")(nb, w, err, mode)
    assert torch.equal(got[0], want[0])
    assert torch.equal(got[1], want[1])


# ---------------------------------------------------------------- metrics
@pytest.mark.parametrize("kernel", ["cosine", "gaussian"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_manifold_metrics_equal_cpu_kernel(kernel, dtype, small_blocks):
    gen = torch.Generator().manual_seed(9)
    # A 3-flat in R^12 plus noise, and a few duplicates and zero rows.
    x = (torch.randn(300, 3, generator=gen, dtype=torch.float64) @
         torch.randn(3, 12, generator=gen, dtype=torch.float64)
         + 0.05 * torch.randn(300, 12, generator=gen, dtype=torch.float64)).to(dtype)
    x = with_duplicates_and_zero_rows(x)
    nb, w, _ = cpu("nnk_graph")(x, 12, kernel, None, "mean", None, 1e-10)
    for alpha in (0.05, 0.2):
        got = generic("manifold_metrics")(x, nb, w, kernel, alpha)
        want = cpu("manifold_metrics")(x, nb, w, kernel, alpha)
        assert torch.equal(got[0], want[0])  # degree
        assert torch.equal(got[2], want[2])  # local_dim
        for g, c in zip(got[1::2] + got[3:4], want[1::2] + want[3:4]):
            torch.testing.assert_close(g, c, atol=TOL[dtype] * 10, rtol=TOL[dtype] * 10)
        torch.testing.assert_close(got[4], want[4], atol=TOL[dtype] * 10, rtol=0)


def user_graph(n, k, seed, dtype=torch.float64):
    """A directed graph as users may pass one: -1 padding, zero weights, a neighbour listed
    twice in a row, isolated nodes."""
    gen = torch.Generator().manual_seed(seed)
    # never the node itself: the operators refuse self-loops
    nb = (torch.arange(n).unsqueeze(1) + torch.randint(1, n, (n, k), generator=gen)) % n
    w = torch.rand(n, k, generator=gen, dtype=dtype)
    w[torch.rand(n, k, generator=gen) < 0.3] = 0
    nb[:, 1] = nb[:, 0]
    pad = torch.rand(n, k, generator=gen) < 0.2
    nb[pad] = -1
    w[pad] = 0
    nb[5] = -1
    w[5] = 0
    return nb, w


def test_label_metrics_equal_cpu_kernel():
    gen = torch.Generator().manual_seed(10)
    nb, w = user_graph(200, 8, 11)
    y = torch.randint(0, 4, (200,), generator=gen)
    for num_classes in (4, 6):
        got = generic("nnk_loo_error")(nb, w, y, num_classes)
        want = cpu("nnk_loo_error")(nb, w, y, num_classes)
        assert torch.equal(got[0], want[0])
        torch.testing.assert_close(got[1], want[1], atol=1e-12, rtol=0)
    # Ties between classes go to the lowest class.
    tie_nb = torch.tensor([[1, 2], [0, 2], [0, 1]])
    tie_w = torch.ones(3, 2, dtype=torch.float64)
    tie_y = torch.tensor([2, 0, 0])
    assert generic("nnk_loo_error")(tie_nb, tie_w, tie_y, 3)[0].tolist() == [1.0, 0.0, 0.0]
    got = generic("label_smoothness")(nb, w, y)
    assert got == pytest.approx(cpu("label_smoothness")(nb, w, y), abs=1e-12)


def test_neighborhood_overlap_equals_cpu_kernel():
    nb_a, w_a = user_graph(200, 8, 12)
    nb_b, w_b = user_graph(200, 5, 13)
    nb_b[:100, :3] = nb_a[:100, :3]  # real overlap
    w_b[:100, :3] = w_a[:100, :3]
    got = generic("neighborhood_overlap")(nb_a, w_a, nb_b, w_b)
    want = cpu("neighborhood_overlap")(nb_a, w_a, nb_b, w_b)
    torch.testing.assert_close(got[0], want[0], atol=1e-12, rtol=0)
    torch.testing.assert_close(got[1], want[1], atol=1e-12, rtol=0)
    assert got[0].dtype == torch.float64


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_channel_ops_equal_cpu_kernels(dtype):
    gen = torch.Generator().manual_seed(14)
    acts = torch.relu(torch.randn(120, 4, 3, 3, generator=gen, dtype=torch.float64)).to(dtype)
    acts[:, 2] = 0          # a dead channel
    acts[:10, 1] = 0        # all-zero maps in one channel
    got = generic("channel_nnk_graph")(acts, 12, "cosine", 1e-10)  # D = 9 < k: singular
    want = cpu("channel_nnk_graph")(acts, 12, "cosine", 1e-10)
    assert got[0].shape == (4, 120, 12) and got[1].dtype == dtype
    for ch in range(4):
        assert_same_optimum((got[0][ch], got[1][ch], got[2][ch]), (want[0][ch], want[1][ch], want[2][ch]), dtype)
    assert bool((got[0][2] == -1).all()) and bool((got[2][2] == 1).all())
    torch.testing.assert_close(generic("channel_overlap")(want[0], want[1]),
                               cpu("channel_overlap")(want[0], want[1]), atol=1e-12, rtol=0)
    # User graphs with a neighbour listed twice: the multiset count of the CPU kernel.
    nbs, ws = zip(*(user_graph(80, 6, s) for s in range(3)))
    nb, w = torch.stack(nbs), torch.stack(ws)
    torch.testing.assert_close(generic("channel_overlap")(nb, w), cpu("channel_overlap")(nb, w),
                               atol=1e-12, rtol=0)


# ---------------------------------------------------------------- bad input
X = torch.randn(10, 3)
NB = torch.tensor([[1, 2]] * 10)
W = torch.rand(10, 2)
E = torch.rand(10)
Y = torch.randint(0, 3, (10,))
ACT = torch.randn(10, 2, 2, 2)

BAD = [
    # (op, args), the CPU path's bad-input tests (test_graph, test_metrics, test_early_stopping)
    ("nnk_graph", (torch.tensor([[float("nan"), 1.0]] * 5), 2, "cosine", None, "mean", None, 1e-10)),
    ("nnk_graph", (torch.tensor([[float("inf"), 1.0]] * 5), 2, "cosine", None, "mean", None, 1e-10)),
    ("nnk_graph", (torch.empty(0, 3), 1, "cosine", None, "mean", None, 1e-10)),
    ("nnk_graph", (torch.randn(1, 3), 1, "cosine", None, "mean", None, 1e-10)),
    ("nnk_graph", (torch.randn(10), 1, "cosine", None, "mean", None, 1e-10)),
    ("nnk_graph", (torch.randn(4, 3, 2), 1, "cosine", None, "mean", None, 1e-10)),
    ("nnk_graph", (torch.randint(0, 5, (10, 3)), 2, "cosine", None, "mean", None, 1e-10)),
    ("nnk_graph", (X, 0, "cosine", None, "mean", None, 1e-10)),
    ("nnk_graph", (X, -3, "cosine", None, "mean", None, 1e-10)),
    ("nnk_graph", (X, 10, "cosine", None, "mean", None, 1e-10)),
    ("nnk_graph", (X, 3, "rbf", None, "mean", None, 1e-10)),
    ("nnk_graph", (X, 3, "gaussian", 0.0, "mean", None, 1e-10)),
    ("nnk_graph", (X, 3, "gaussian", -1.0, "mean", None, 1e-10)),
    ("nnk_graph", (X, 3, "gaussian", None, "median", None, 1e-10)),
    ("nnk_graph", (X, 3, "cosine", 1.0, "mean", None, 1e-10)),
    ("nnk_graph", (X, 3, "cosine", None, "mean", torch.zeros(10, 2, dtype=torch.long), 1e-10)),
    ("nnk_graph", (X, 3, "cosine", None, "mean", torch.zeros(10, 3, dtype=torch.int32), 1e-10)),
    ("nnk_graph", (X, 3, "cosine", None, "mean", torch.full((10, 3), 10), 1e-10)),
    ("nnk_graph", (X, 3, "cosine", None, "mean", torch.full((10, 3), -2), 1e-10)),
    ("nnk_graph", (X, 3, "cosine", None, "mean", None, -1.0)),
    ("nnk_graph", (X, 3, "cosine", None, "mean", None, float("nan"))),
    ("knn_graph", (torch.tensor([[float("nan"), 1.0]] * 5), 2, "cosine", None, "mean")),
    ("knn_graph", (X, 10, "cosine", None, "mean")),
    ("knn_graph", (X, 3, "laplace", None, "mean")),
    ("knn_graph", (X.double(), 3, "gaussian", float("inf"), "mean")),
    ("nnk_symmetrize", (NB, W, E, "sym")),
    ("nnk_symmetrize", (NB[0], W, E, "max")),
    ("nnk_symmetrize", (NB.int(), W, E, "max")),
    ("nnk_symmetrize", (NB, W[:, :1], E, "max")),
    ("nnk_symmetrize", (NB, W.half(), E, "max")),
    ("nnk_symmetrize", (NB, W, E[:5], "max")),
    ("nnk_symmetrize", (NB + 9, W, E, "max")),
    ("nnk_symmetrize", (NB, -W, E, "max")),
    ("nnk_symmetrize", (torch.arange(10).unsqueeze(1).repeat(1, 2), W, E, "max")),
    ("nnk_symmetrize", (torch.tensor([[1, 1], [0, 2], [0, 1]]), torch.ones(3, 2), torch.rand(3), "none")),
    ("nnk_symmetrize", (torch.tensor([[1, 1], [0, 2], [0, 1]]), torch.ones(3, 2), torch.rand(3), "min_error")),
    ("nnk_symmetrize", (torch.tensor([[2, -1], [2, 2], [0, 1]]), torch.ones(3, 2), torch.rand(3), "mean")),
    ("nnk_loo_error", (NB, W, Y[:9], 3)),
    ("nnk_loo_error", (NB, W, Y.double(), 3)),
    ("nnk_loo_error", (NB, W, Y + 5, 3)),
    ("nnk_loo_error", (NB, W, Y - 1, 3)),
    ("nnk_loo_error", (NB, W, Y, 0)),
    ("nnk_loo_error", (NB + 9, W, Y, 3)),
    ("nnk_loo_error", (NB, W.clone().fill_(float("nan")), Y, 3)),
    ("label_smoothness", (NB, W, Y[:3])),
    ("label_smoothness", (NB, W, Y.float())),
    ("label_smoothness", (NB.double(), W, Y)),
    ("neighborhood_overlap", (NB, W, NB[:4], W[:4])),
    ("neighborhood_overlap", (NB, W, torch.full((10, 2), -1), torch.ones(10, 2))),
    ("neighborhood_overlap", (NB, W[:, :1], NB, W)),
    ("neighborhood_overlap", (NB, W.long(), NB, W)),
    ("manifold_metrics", (X[:4], NB, W, "cosine", 0.05)),
    ("manifold_metrics", (X, NB, W, "cosine", 0.0)),
    ("manifold_metrics", (X, NB, W, "cosine", 1.0)),
    ("manifold_metrics", (X, NB, W, "cosine", float("nan"))),
    ("manifold_metrics", (X, NB, W, "laplace", 0.05)),
    ("manifold_metrics", (X, NB + 8, W, "cosine", 0.05)),
    ("manifold_metrics", (X, NB.int(), W, "cosine", 0.05)),
    ("manifold_metrics", (X, NB, -W, "cosine", 0.05)),
    ("manifold_metrics", (X.int(), NB, W, "cosine", 0.05)),
    ("channel_nnk_graph", (torch.randn(10, 4), 3, "cosine", 1e-10)),
    ("channel_nnk_graph", (torch.randn(5, 2, 2, 2), 5, "cosine", 1e-10)),
    ("channel_nnk_graph", (torch.randn(5, 0, 2, 2), 2, "cosine", 1e-10)),
    ("channel_nnk_graph", (ACT, 3, "rbf", 1e-10)),
    ("channel_nnk_graph", (ACT, 3, "cosine", -1.0)),
    ("channel_overlap", (torch.zeros(2, 10, 3, dtype=torch.long), torch.zeros(2, 10, 2))),
    ("channel_overlap", (torch.zeros(2, 10, 3), torch.zeros(2, 10, 3))),
    ("channel_overlap", (torch.zeros(2, 10, 3, dtype=torch.long), torch.zeros(2, 10, 3, dtype=torch.long))),
]


def first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0]


@pytest.mark.parametrize("name, args", BAD, ids=[f"{n}-{i}" for i, (n, _) in enumerate(BAD)])
def test_bad_input_same_error_as_cpu_kernel(name, args):
    with pytest.raises(RuntimeError) as want:
        cpu(name)(*args)
    with pytest.raises(RuntimeError) as got:
        generic(name)(*args)
    assert first_line(got.value) == first_line(want.value)
    assert any(op in first_line(got.value) for op in OPS)  # the message names its operator
