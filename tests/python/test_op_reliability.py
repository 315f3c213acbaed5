"""Operator reliability (issue 13): bad labels and graphs refused clearly, results that do not
depend on the data's magnitude or offset, and the consistency rules the solver must keep."""

import numpy as np
import pytest
import torch

import torch_geometry as tg
from torch_geometry import metrics

ops = torch.ops.torch_geometry


def _directed(x, k, kernel="cosine", **kwargs):
    return ops.nnk_graph(x, k, kernel, kwargs.get("sigma"), kwargs.get("sigma_mode", "mean"),
                         None, kwargs.get("threshold", 1e-10))


def _kernel(a, b, kernel, sigma=None):
    a, b = a.astype(np.float64), b.astype(np.float64)
    if kernel == "cosine":
        an = a / np.linalg.norm(a, axis=1, keepdims=True)
        bn = b / np.linalg.norm(b, axis=1, keepdims=True)
        return 0.5 * (1.0 + an @ bn.T)
    d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    return np.exp(-d2 / (2.0 * sigma ** 2))


# ---------------------------------------------------------------- labels
def _small_graph():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(30, 4, generator=gen, dtype=torch.float64)
    nb, w, _ = _directed(x, 6)
    return nb, w


def test_huge_label_id_is_refused_not_a_crash():
    nb, w = _small_graph()
    y = torch.zeros(30, dtype=torch.long)
    y[1] = 10 ** 12
    with pytest.raises(RuntimeError, match=r"nnk_loo_error: labels should be class indices < 16777216, got 1000000000000"):
        ops.nnk_loo_error(nb, w, y, None)
    with pytest.raises(RuntimeError, match="label_smoothness: labels should be class indices <"):
        ops.label_smoothness(nb, w, y)
    with pytest.raises(RuntimeError, match=r"num_classes should be in \[1, 16777216\]"):
        ops.nnk_loo_error(nb, w, torch.zeros(30, dtype=torch.long), 10 ** 12)


def _reference_loo(nb, w, y):
    hard, soft = [], []
    for i in range(len(nb)):
        mass = {}
        for j, t in zip(nb[i].tolist(), w[i].tolist()):
            if j >= 0 and t > 0:
                mass[int(y[j])] = mass.get(int(y[j]), 0.0) + t
        total = sum(mass.values())
        if total == 0:
            hard.append(1.0), soft.append(1.0)
            continue
        best = min(mass, key=lambda c: (-mass[c], c))
        hard.append(float(best != int(y[i])))
        soft.append(1.0 - mass.get(int(y[i]), 0.0) / total)
    return torch.tensor(hard, dtype=torch.float64), torch.tensor(soft, dtype=torch.float64)


def test_sparse_large_class_ids_match_reference():
    # Class ids up to 16.7 million cost nothing: each node accumulates over its k neighbours.
    nb, w = _small_graph()
    gen = torch.Generator().manual_seed(1)
    ids = torch.tensor([0, 7, 5_000_000, (1 << 24) - 1])
    y = ids[torch.randint(0, 4, (30,), generator=gen)]
    hard, soft = ops.nnk_loo_error(nb, w, y, None)
    ref_h, ref_s = _reference_loo(nb, w, y)
    assert torch.equal(hard, ref_h)
    torch.testing.assert_close(soft, ref_s, rtol=0, atol=1e-15)
    # The same partition with dense ids gives the same errors.
    dense = torch.unique(y, return_inverse=True)[1]
    assert torch.equal(ops.nnk_loo_error(nb, w, dense, None)[0], hard)


@pytest.mark.parametrize("labels, match", [
    (torch.zeros(30, dtype=torch.bool), "integer class indices"),
    (torch.zeros(30), "integer class indices"),
    (torch.zeros(30, 1, dtype=torch.long), "1-D"),
    (torch.zeros(29, dtype=torch.long), r"shape \[N\] = \[30\]"),
    (torch.full((30,), -1), "labels should be >= 0, got -1"),
])
def test_labels_refused_the_same_way_by_every_label_op(labels, match):
    nb, w = _small_graph()
    with pytest.raises(RuntimeError, match="nnk_loo_error: .*" + match):
        ops.nnk_loo_error(nb, w, labels, None)
    with pytest.raises(RuntimeError, match="label_smoothness: .*" + match):
        ops.label_smoothness(nb, w, labels)


def test_empty_labels_refused():
    nb = torch.empty(0, 3, dtype=torch.long)
    w = torch.empty(0, 3, dtype=torch.float64)
    with pytest.raises(RuntimeError, match=r"labels are empty \(N = 0\)"):
        ops.nnk_loo_error(nb, w, torch.empty(0, dtype=torch.long), None)


def test_int32_labels_equal_int64_and_num_classes_is_derived():
    nb, w = _small_graph()
    y = torch.randint(0, 3, (30,), generator=torch.Generator().manual_seed(2))
    a = ops.nnk_loo_error(nb, w, y, None)
    b = ops.nnk_loo_error(nb, w, y.int(), None)
    c = ops.nnk_loo_error(nb, w, y, 3)
    for u, v in zip(a, b):
        assert torch.equal(u, v)
    for u, v in zip(a, c):
        assert torch.equal(u, v)


def test_loo_error_with_weights_near_dbl_max():
    nb, w = _small_graph()
    y = torch.randint(0, 3, (30,), generator=torch.Generator().manual_seed(3))
    hard, soft = ops.nnk_loo_error(nb, w, y, None)
    # Scaling every weight keeps the interpolation; sums of weights near 1e308 overflow.
    top = w.max()
    hard2, soft2 = ops.nnk_loo_error(nb, w / top * 1.7e308, y, None)
    assert torch.equal(hard, hard2)
    torch.testing.assert_close(soft, soft2, rtol=0, atol=1e-12)
    smooth = ops.label_smoothness(nb, w, y)
    assert 0 < smooth < 1
    assert ops.label_smoothness(nb, w / top * 1.7e308, y) == pytest.approx(smooth, abs=1e-12)


# ---------------------------------------------------------------- graphs
def test_self_loops_refused_by_every_graph_op():
    nb, w = _small_graph()
    x = torch.randn(30, 4, dtype=torch.float64)
    y = torch.zeros(30, dtype=torch.long)
    loop = nb.clone()
    loop[3, 0] = 3
    err = torch.zeros(30, dtype=torch.float64)
    calls = {
        "nnk_loo_error": lambda: ops.nnk_loo_error(loop, w, y, None),
        "label_smoothness": lambda: ops.label_smoothness(loop, w, y),
        "manifold_metrics": lambda: ops.manifold_metrics(x, loop, w, "cosine", 0.05),
        "neighborhood_overlap": lambda: ops.neighborhood_overlap(nb, w, loop, w),
        "nnk_symmetrize": lambda: ops.nnk_symmetrize(loop, w, err, "min_error"),
        "channel_overlap": lambda: ops.channel_overlap(torch.stack([nb, loop]), torch.stack([w, w])),
    }
    for name, call in calls.items():
        with pytest.raises(RuntimeError, match=name + r": neighbors\w* should not list a node as its own neighbour .* got node 3"):
            call()


def test_requires_grad_refused_with_a_hint():
    x = torch.randn(20, 3, dtype=torch.float64, requires_grad=True)
    for call in [lambda: ops.nnk_graph(x, 4, "cosine", None, "mean", None, 1e-10),
                 lambda: ops.knn_graph(x, 4, "cosine", None, "mean"),
                 lambda: ops.channel_nnk_graph(x.reshape(20, 3, 1), 4, "cosine", 1e-10)]:
        with pytest.raises(RuntimeError, match=r"not differentiable: pass \w+\.detach\(\)"):
            call()
    nb, w, err = _directed(x.detach(), 4)
    wg = w.clone().requires_grad_()
    with pytest.raises(RuntimeError, match=r"manifold_metrics: weights requires grad.*pass weights\.detach\(\)"):
        ops.manifold_metrics(x.detach(), nb, wg, "cosine", 0.05)
    with pytest.raises(RuntimeError, match=r"nnk_symmetrize: error requires grad"):
        ops.nnk_symmetrize(nb, w, err.clone().requires_grad_(), "max")
    with pytest.raises(RuntimeError, match=r"nnk_loo_error: weights requires grad"):
        ops.nnk_loo_error(nb, wg, torch.zeros(20, dtype=torch.long), None)


def test_symmetrize_refuses_nan_error():
    nb, w = _small_graph()
    err = torch.zeros(30, dtype=torch.float64)
    err[4] = float("nan")
    with pytest.raises(RuntimeError, match="nnk_symmetrize: error should hold finite values"):
        ops.nnk_symmetrize(nb, w, err, "min_error")


def test_min_error_tie_takes_the_larger_weight():
    # Scripted graph: 0 <-> 1 tie on error, 1 <-> 2 decided by node 2's smaller error,
    # 2 -> 3 one-sided (no edge).
    nb = torch.tensor([[1, -1], [0, 2], [1, 3], [-1, -1]])
    w = torch.tensor([[0.3, 0.0], [0.7, 0.2], [0.9, 0.4], [0.0, 0.0]], dtype=torch.float64)
    err = torch.tensor([0.25, 0.25, 0.1, 0.5], dtype=torch.float64)
    ei, ew = ops.nnk_symmetrize(nb, w, err, "min_error")
    assert ei.tolist() == [[0, 1, 1, 2], [1, 0, 2, 1]]
    assert ew.tolist() == [0.7, 0.7, 0.9, 0.9]
    err[1] = 0.2  # node 1 now decides the 0-1 pair (its weight 0.7); 2 still decides 1-2
    ei, ew = ops.nnk_symmetrize(nb, w, err, "min_error")
    assert ew.tolist() == [0.7, 0.7, 0.9, 0.9]
    err[0] = 0.1  # node 0 decides: 0.3
    ei, ew = ops.nnk_symmetrize(nb, w, err, "min_error")
    assert ew.tolist() == [0.3, 0.3, 0.9, 0.9]


# ---------------------------------------------------------------- channel_overlap
def _reference_channel_overlap(nb, w):
    c, n, _ = nb.shape
    sup = [[{int(j) for j, t in zip(nb[a, i].tolist(), w[a, i].tolist()) if j >= 0 and t > 0}
            for i in range(n)] for a in range(c)]
    out = np.ones((c, c))
    for a in range(c):
        for b in range(c):
            if a != b:
                out[a, b] = np.mean([1.0 if not (sa | sb) else len(sa & sb) / len(sa | sb)
                                     for sa, sb in zip(sup[a], sup[b])])
    return torch.from_numpy(out)


def test_channel_overlap_merges_duplicates_like_neighborhood_overlap():
    nb = torch.tensor([[[1, 2, -1], [0, 2, -1], [0, 1, -1]],
                       [[1, 1, 2], [2, 0, 0], [1, -1, -1]]])
    w = torch.tensor([[[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.5, 0.5, 0.0]],
                      [[0.2, 0.3, 0.5], [0.4, 0.3, 0.3], [1.0, 0.0, 0.0]]], dtype=torch.float64)
    got = ops.channel_overlap(nb, w)
    torch.testing.assert_close(got, _reference_channel_overlap(nb, w), rtol=0, atol=1e-15)
    # Node 0: {1, 2} vs {1, 2} -> 1; node 1: {0, 2} vs {0, 2} -> 1; node 2: {0, 1} vs {1} -> 0.5.
    assert got[0, 1].item() == pytest.approx(2.5 / 3, abs=1e-15)
    jac, _ = ops.neighborhood_overlap(nb[0], w[0], nb[1], w[1])
    assert got[0, 1].item() == pytest.approx(jac.mean().item(), abs=1e-15)


def test_channel_overlap_random_against_reference():
    gen = torch.Generator().manual_seed(4)
    c, n, k = 4, 25, 5
    nb = torch.randint(-1, n, (c, n, k), generator=gen)
    nb[nb == torch.arange(n).view(1, n, 1)] = -1
    w = torch.rand(c, n, k, generator=gen, dtype=torch.float64) * (nb >= 0)
    torch.testing.assert_close(ops.channel_overlap(nb, w), _reference_channel_overlap(nb, w),
                               rtol=0, atol=1e-15)


@pytest.mark.parametrize("nb, w, match", [
    (torch.full((2, 3, 1), 3), torch.ones(2, 3, 1), r"indices in \[0, N\) or -1"),
    (torch.tensor([[[1], [0], [0]]] * 2), torch.tensor([[[float("nan")], [1.0], [1.0]]] * 2), "finite and >= 0"),
    (torch.tensor([[[1], [0], [0]]] * 2), torch.tensor([[[-1.0], [1.0], [1.0]]] * 2), "finite and >= 0"),
    (torch.tensor([[[1], [0], [0]]] * 2).int(), torch.ones(2, 3, 1), "int64"),
    (torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3), "3-D"),
])
def test_channel_overlap_bad_input(nb, w, match):
    with pytest.raises(RuntimeError, match="channel_overlap: .*" + match):
        ops.channel_overlap(nb, w)


def test_channel_overlap_k_zero():
    nb = torch.empty(3, 5, 0, dtype=torch.long)
    w = torch.empty(3, 5, 0, dtype=torch.float64)
    # Every node isolated in every channel: identical (empty) neighbourhoods.
    assert torch.equal(ops.channel_overlap(nb, w), torch.ones(3, 3, dtype=torch.float64))


def test_neighborhood_overlap_weights_near_dbl_max():
    nb, w = _small_graph()
    big = w / w.max() * 1.7e308
    jac, wov = ops.neighborhood_overlap(nb, big, nb, big)
    assert torch.equal(jac, torch.ones(30, dtype=torch.float64))
    torch.testing.assert_close(wov, torch.ones(30, dtype=torch.float64), rtol=0, atol=1e-12)


# ---------------------------------------------------------------- magnitudes
@pytest.mark.parametrize("offset", [0.0, 1e2, 1e3, 1e4])
def test_gaussian_knn_float32_uncentred_matches_float64_brute_force(offset):
    torch.manual_seed(5)
    x = torch.randn(2000, 64) + offset
    k = 10
    nbr, _ = ops.knn_graph(x, k, "gaussian", None, "mean")
    xd = x.double()  # the same float32 points, in float64
    d = torch.cdist(xd, xd)
    d.fill_diagonal_(float("inf"))
    ref = d.topk(k, dim=1, largest=False).indices
    hits = sum(len(set(a) & set(b)) for a, b in zip(nbr.tolist(), ref.tolist()))
    assert hits / ref.numel() >= 0.999, hits / ref.numel()


def _dense(nb, w):
    n = nb.shape[0]
    out = torch.zeros(n, n + 1, dtype=torch.float64)
    out.scatter_add_(1, torch.where(nb >= 0, nb, n), w.double())
    return out[:, :n]


def _compare_graphs(g1, g2, atol):
    # Whole weight matrices: the order of near-equal weights in a row may differ by rounding.
    nb1, w1, e1 = g1
    nb2, w2, e2 = g2
    torch.testing.assert_close(_dense(nb1, w1), _dense(nb2, w2), rtol=0, atol=atol)
    torch.testing.assert_close(e1, e2, rtol=0, atol=atol)


@pytest.mark.parametrize("dtype, scales", [
    (torch.float32, [2.0 ** 66, 2.0 ** -66, 2.0 ** -73, 2.0 ** 100]),
    (torch.float64, [2.0 ** 500, 2.0 ** -500, 2.0 ** 512, 2.0 ** -515, 2.0 ** -565]),
])
@pytest.mark.parametrize("kernel", ["cosine", "gaussian"])
def test_nnk_bitwise_invariant_to_power_of_two_scales(dtype, scales, kernel):
    # Scaling by a power of two changes no mantissa: the graph must be the same, bit for bit
    # (1e20 / 1e-22 in float32 and 1e154 / 1e-155 / 1e-170 in float64 lie in these ranges).
    torch.manual_seed(6)
    x = torch.randn(150, 6, dtype=torch.float64).to(dtype)
    base = _directed(x, 8, kernel)
    assert bool((base[0] >= 0).all())
    for s in scales:
        g = _directed(x * s, 8, kernel)
        for a, b in zip(base, g):
            assert torch.equal(a, b), (s, kernel)


@pytest.mark.parametrize("dtype, scales", [
    (torch.float32, [1e20, 1e-20, 1e-22, 1e30]),
    (torch.float64, [1e150, 1e-150, 1e154, 1e-155, 1e-170]),
])
@pytest.mark.parametrize("kernel", ["cosine", "gaussian"])
def test_nnk_invariant_to_decimal_scales(dtype, scales, kernel):
    # A decimal scale rounds x once more (in float32, ~6e-8 relative): near-ties at the k-th
    # candidate may flip, so float32 allows a few nodes to differ; float64 none.
    torch.manual_seed(6)
    x = torch.randn(150, 6, dtype=torch.float64)
    base = _directed(x.to(dtype), 8, kernel)
    for s in scales:
        g = _directed((x * s).to(dtype), 8, kernel)
        assert bool((g[0] >= 0).all()) and bool(torch.isfinite(g[1]).all()), s
        if dtype == torch.float64:
            _compare_graphs(base, g, 1e-10)
        else:
            close = (_dense(base[0], base[1]) - _dense(g[0], g[1])).abs().max(dim=1).values <= 1e-4
            assert close.float().mean() >= 0.97, (s, close.float().mean())


def test_nnk_fixed_sigma_scales_with_x_and_tiny_sigma_is_not_nan():
    torch.manual_seed(7)
    x = torch.randn(100, 5, dtype=torch.float64)
    base = _directed(x, 6, "gaussian", sigma=0.8)
    for s in [1e-170, 1e-100, 1e100, 1e150]:
        _compare_graphs(base, _directed(x * s, 6, "gaussian", sigma=0.8 * s), 1e-10)
    # A sigma far below the distances: every similarity underflows to 0 (no NaN), so no
    # edges and error 1.
    nb, w, e = _directed(x, 6, "gaussian", sigma=1e-170)
    assert bool(torch.isfinite(w).all()) and bool((w == 0).all())
    assert torch.equal(e, torch.ones(100, dtype=torch.float64))
    _, sim = ops.knn_graph(x, 6, "gaussian", 1e-170, "mean")
    assert bool(torch.isfinite(sim).all())


@pytest.mark.parametrize("kernel", ["cosine", "gaussian"])
def test_manifold_metrics_invariant_to_the_scale_of_x(kernel):
    torch.manual_seed(8)
    x = torch.randn(120, 5, dtype=torch.float64)
    nb, w, _ = _directed(x, 8, kernel)
    base = ops.manifold_metrics(x, nb, w, kernel, 0.05)
    for s in [1e160, 1e-160, 1e300, 1e-300]:
        out = ops.manifold_metrics(x * s, nb, w, kernel, 0.05)
        assert torch.equal(out[0], base[0]) and torch.equal(out[2], base[2])  # degree, local_dim
        length = 1.0 if kernel == "cosine" else s
        torch.testing.assert_close(out[1], base[1] * length, rtol=1e-12, atol=0)  # diameter
        shift = 0.0 if kernel == "cosine" else np.log(s)
        torch.testing.assert_close(out[3], base[3] + base[2].double() * shift, rtol=1e-12, atol=1e-9)
        torch.testing.assert_close(out[4], base[4], rtol=0, atol=1e-9)  # curvature


# ---------------------------------------------------------------- solver consistency
def test_error_recomputed_after_threshold():
    torch.manual_seed(9)
    x = torch.randn(200, 10, dtype=torch.float64)
    nb, w, e = _directed(x, 15, "cosine", threshold=0.05)
    nb0, w0, e0 = _directed(x, 15, "cosine")
    assert int(((w0 > 0) & (w0 <= 0.05)).sum()) > 50  # the threshold does drop weights
    xs = x.numpy()
    changed = 0
    for i in range(200):
        S = nb[i][nb[i] >= 0].numpy()
        t = w[i][: len(S)].numpy()
        K = _kernel(xs[S], xs[S], "cosine")
        b = _kernel(xs[i:i + 1], xs[S], "cosine")[0]
        assert bool(((t == 0) | (t > 0.05)).all())
        ref = 1 - 2 * t @ b + t @ K @ t
        assert abs(e[i].item() - ref) <= 1e-12, (i, e[i].item(), ref)
        changed += abs(ref - e0[i].item()) > 1e-6
    assert changed > 20  # the thresholded error differs from the unthresholded one


@pytest.mark.parametrize("case", ["near_duplicates", "low_dim", "random"])
@pytest.mark.parametrize("kernel", ["cosine", "gaussian"])
def test_nnk_kkt_float64_tight(case, kernel):
    gen = torch.Generator().manual_seed(10)
    if case == "near_duplicates":
        base = torch.randn(60, 8, generator=gen, dtype=torch.float64)
        x = torch.cat([base, base + 1e-7 * torch.randn(60, 8, generator=gen, dtype=torch.float64)])
    elif case == "low_dim":
        x = torch.randn(150, 3, generator=gen, dtype=torch.float64)  # D = 3 < k = 12
    else:
        x = torch.randn(150, 10, generator=gen, dtype=torch.float64)
    k = 12
    nb, w, e = _directed(x, k, kernel)
    xs = x.numpy()
    if kernel == "gaussian":
        d = np.sqrt(((xs[:, None] - xs[nb.clamp(min=0).numpy()]) ** 2).sum(-1))
        sigma = d.max(axis=1).mean() / 3
    else:
        sigma = None
    for i in range(x.shape[0]):
        S = nb[i][nb[i] >= 0].numpy()
        t = w[i][: len(S)].numpy()
        K = _kernel(xs[S], xs[S], kernel, sigma)
        b = _kernel(xs[i:i + 1], xs[S], kernel, sigma)[0]
        g = K @ t - b
        assert np.all(np.abs(g[t > 0]) <= 1e-9), (i, np.abs(g[t > 0]).max())
        assert np.all(g[t == 0] >= -1e-9), (i, g[t == 0].min())
        assert abs(e[i].item() - (1 - 2 * t @ b + t @ K @ t)) <= 1e-12
