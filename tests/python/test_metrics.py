"""Manifold graph metrics (DESIGN §3, issue 4): naive references and known answers."""

import math

import numpy as np
import pytest
import torch

import torch_geometry
from torch_geometry import metrics

ops = torch.ops.torch_geometry


def _graph(x, k, kernel="cosine", **kwargs):
    return torch_geometry.nnk_graph(x, k, kernel=kernel, **kwargs)


def _fields(g):
    return g.neighbors, g.weights


# ---------------------------------------------------------------- naive references


def _unit(x):
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(norm > 0, x / np.where(norm > 0, norm, 1.0), 0.0)


def _supports(neighbors, weights):
    nb, w = neighbors.numpy(), weights.double().numpy()
    return [([int(j) for j, t in zip(nb[i], w[i]) if j >= 0 and t > 0],
             [float(t) for j, t in zip(nb[i], w[i]) if j >= 0 and t > 0]) for i in range(len(nb))]


def reference_manifold_metrics(x, neighbors, weights, kernel, alpha):
    x = x.double().numpy()
    if kernel == "cosine":
        x = _unit(x)
    n = len(x)
    sup = _supports(neighbors, weights)
    degree = np.zeros(n, np.int64)
    diameter = np.zeros(n)
    local_dim = np.zeros(n, np.int64)
    log_volume = np.zeros(n)
    curvature = np.zeros(n)
    bases = [None] * n
    for i, (idx, _) in enumerate(sup):
        degree[i] = len(idx)
        if not idx:
            continue
        pts = x[[i] + idx]
        diff = pts[:, None, :] - pts[None, :, :]
        if kernel == "cosine":
            dist = 1.0 - pts @ pts.T
        else:
            dist = np.sqrt((diff ** 2).sum(-1))
        diameter[i] = dist.max()
        v = (x[idx] - x[i]).T  # D x |S|
        u, s, _ = np.linalg.svd(v, full_matrices=False)
        ld = int((s ** 2 > alpha * s[0] ** 2).sum()) if s[0] > 0 else 0
        local_dim[i] = ld
        log_volume[i] = sum(math.log(s[r] / math.sqrt(len(idx))) for r in range(ld))
        bases[i] = u[:, :ld]
    for i, (idx, theta) in enumerate(sup):
        acc = total = 0.0
        for j, t in zip(idx, theta):
            m = min(local_dim[i], local_dim[j])
            if m == 0:
                continue
            c = 1.0 - np.linalg.norm(bases[i][:, :m].T @ bases[j][:, :m]) ** 2 / m
            acc += t * c
            total += t
        curvature[i] = acc / total if total > 0 else 0.0
    return degree, diameter, local_dim, log_volume, curvature


def reference_loo(neighbors, weights, labels, num_classes):
    y = labels.numpy()
    hard, soft = [], []
    for i, (idx, theta) in enumerate(_supports(neighbors, weights)):
        if not idx:
            hard.append(1.0)
            soft.append(1.0)
            continue
        yhat = np.zeros(num_classes)
        for j, t in zip(idx, theta):
            yhat[y[j]] += t
        yhat /= yhat.sum()
        hard.append(float(int(np.argmax(yhat)) != y[i]))  # argmax: first (lowest) on ties
        soft.append(1.0 - yhat[y[i]])
    return np.array(hard), np.array(soft)


def reference_smoothness(neighbors, weights, labels):
    y = labels.numpy()
    cross = total = 0.0
    for i, (idx, theta) in enumerate(_supports(neighbors, weights)):
        for j, t in zip(idx, theta):
            total += t
            cross += t * (y[i] != y[j])
    return cross / total if total > 0 else 0.0


def reference_overlap(ga, gb):
    jac, wov = [], []
    for (ia, ta), (ib, tb) in zip(_supports(*ga), _supports(*gb)):
        if not ia and not ib:
            jac.append(1.0)
            wov.append(1.0)
            continue
        sa, sb = set(ia), set(ib)
        jac.append(len(sa & sb) / len(sa | sb))
        pa = {j: t / sum(ta) for j, t in zip(ia, ta)}
        pb = {j: t / sum(tb) for j, t in zip(ib, tb)}
        wov.append(sum(min(pa[j], pb[j]) for j in sa & sb))
    return np.array(jac), np.array(wov)


def _random_graph(n, k, seed, zero_share=0.3, pad_rows=3):
    """An arbitrary directed graph in the convention's format (not an NNK graph)."""
    gen = torch.Generator().manual_seed(seed)
    nb = torch.stack([torch.randperm(n - 1, generator=gen)[:k] for _ in range(n)])
    nb = nb + (nb >= torch.arange(n).unsqueeze(1)).long()  # skip self
    w = torch.rand(n, k, generator=gen, dtype=torch.float64) + 0.05
    w[torch.rand(n, k, generator=gen) < zero_share] = 0.0
    nb[:pad_rows, k // 2:] = -1
    w[:pad_rows, k // 2:] = 0.0
    w[pad_rows] = 0.0  # one isolated node
    return nb, w


def _assert_metrics_match(x, nb, w, kernel, alpha=0.05, rtol=1e-7, atol=1e-9):
    got = ops.manifold_metrics(x, nb, w, kernel, alpha)
    want = reference_manifold_metrics(x, nb, w, kernel, alpha)
    names = ["degree", "diameter", "local_dim", "log_volume", "curvature"]
    for name, g, r in zip(names, got, want):
        assert g.shape == (x.shape[0],), name
        np.testing.assert_allclose(g.double().numpy(), r, rtol=rtol, atol=atol, err_msg=name)
    assert got[0].dtype == torch.int64 and got[2].dtype == torch.int64
    assert got[1].dtype == x.dtype and got[3].dtype == x.dtype and got[4].dtype == x.dtype
    return got


# ---------------------------------------------------------------- equality with references


@pytest.mark.parametrize("kernel", ["cosine", "gaussian"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("contiguous", [True, False])
def test_manifold_metrics_match_reference_on_nnk_graph(kernel, dtype, contiguous):
    gen = torch.Generator().manual_seed(1)
    # A curved 3-manifold in R^12, so local_dim and curvature are non-trivial.
    t = torch.rand(160, 3, generator=gen, dtype=torch.float64) * 2
    x = torch.cat([t, torch.sin(2 * t), torch.cos(3 * t), t ** 2], dim=1)
    x = x + 0.02 * torch.randn(x.shape, generator=gen, dtype=torch.float64)
    x = x.to(dtype)
    if not contiguous:
        x = x.t().contiguous().t()
        assert not x.is_contiguous()
    g = _graph(x, 15, kernel)
    tol = dict(rtol=1e-7, atol=1e-9) if dtype == torch.float64 else dict(rtol=2e-5, atol=1e-6)
    got = _assert_metrics_match(x, *_fields(g), kernel, **tol)
    assert (got[2] >= 1).all()
    assert (got[4] > 0).any()


@pytest.mark.parametrize("kernel", ["cosine", "gaussian"])
@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.3])
def test_manifold_metrics_match_reference_on_arbitrary_graph(kernel, alpha):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(60, 8, generator=gen, dtype=torch.float64)
    nb, w = _random_graph(60, 10, seed=3)
    got = _assert_metrics_match(x, nb, w, kernel, alpha)
    assert got[0][3] == 0  # the isolated row


def test_wrapper_takes_the_kernel_from_the_graph():
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(120, 6, generator=gen, dtype=torch.float64)
    g = _graph(x, 10, "gaussian")
    m = metrics.manifold_metrics(x, g)
    ref = ops.manifold_metrics(x, g.neighbors, g.weights, "gaussian", 0.05)
    assert torch.equal(m["diameter"], ref[1]) and torch.equal(m["error"], g.error)
    cos = metrics.manifold_metrics(x, g, kernel="cosine")
    assert not torch.equal(cos["diameter"], ref[1])
    tup = metrics.manifold_metrics(x, (g.neighbors, g.weights), kernel="gaussian")
    assert torch.equal(tup["curvature"], ref[4]) and "error" not in tup


def test_isolated_and_duplicate_nodes_are_nan_free_and_counted():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(80, 6, generator=gen, dtype=torch.float64)
    x[5] = 0.0  # no direction under the cosine kernel: no edges
    x[11] = 0.0
    x[20] = x[21]  # exact duplicates: weight 1 to each other, V = 0, local_dim 0
    g = _graph(x, 10, "cosine")
    m = metrics.manifold_metrics(x, g)
    for name, v in m.items():
        assert not torch.isnan(v.double()).any(), name
    assert int(m["isolated"].sum()) == 2
    assert metrics.summarize(m)["isolated"]["count"] == 2
    for i in (5, 11):
        assert m["degree"][i] == 0 and m["diameter"][i] == 0 and m["local_dim"][i] == 0
        assert m["log_volume"][i] == 0 and m["curvature"][i] == 0
    assert m["local_dim"][20] == 0 and m["diameter"][20] == 0 and m["curvature"][20] == 0
    _assert_metrics_match(x, *_fields(g), "cosine")


def test_results_do_not_depend_on_thread_count():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(400, 16, generator=gen, dtype=torch.float64)
    g = _graph(x, 20, "cosine")
    y = torch.randint(0, 4, (400,), generator=gen)
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            results.append(list(ops.manifold_metrics(x, *_fields(g), "cosine", 0.05))
                           + list(ops.nnk_loo_error(*_fields(g), y, 4))
                           + list(ops.neighborhood_overlap(*_fields(g), *_fields(g))))
    finally:
        torch.set_num_threads(before)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


def test_manifold_metrics_torchscript():
    @torch.jit.script
    def scripted(x: torch.Tensor, nb: torch.Tensor, w: torch.Tensor):
        return torch.ops.torch_geometry.manifold_metrics(x, nb, w, "cosine", 0.05)

    gen = torch.Generator().manual_seed(6)
    x = torch.randn(50, 5, generator=gen, dtype=torch.float64)
    nb, w = _random_graph(50, 8, seed=7)
    for a, b in zip(scripted(x, nb, w), ops.manifold_metrics(x, nb, w, "cosine", 0.05)):
        assert torch.equal(a, b)


# ---------------------------------------------------------------- known geometry


def _flat(n, d, ambient, seed, noise=1e-6):
    gen = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(ambient, d, generator=gen, dtype=torch.float64))
    coords = torch.rand(n, d, generator=gen, dtype=torch.float64)
    return coords @ basis.T + noise * torch.randn(n, ambient, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("d", range(1, 9))
def test_local_dim_on_flats_gaussian(d):
    x = _flat(2000, d, 64, seed=10 + d)
    m = metrics.manifold_metrics(x, _graph(x, 40, "gaussian"), kernel="gaussian")
    assert int(m["local_dim"].median()) == d
    assert float(m["curvature"].median()) < 0.05
    assert int(m["isolated"].sum()) == 0


@pytest.mark.parametrize("d", range(2, 7))
def test_local_dim_cosine_sees_a_subspace_as_a_sphere(d):
    # Through the origin a d-dimensional subspace is, in directions, a (d-1)-sphere.
    gen = torch.Generator().manual_seed(30 + d)
    basis, _ = torch.linalg.qr(torch.randn(64, d, generator=gen, dtype=torch.float64))
    x = torch.randn(2000, d, generator=gen, dtype=torch.float64) @ basis.T
    m = metrics.manifold_metrics(x, _graph(x, 40, "cosine"))
    assert int(m["local_dim"].median()) == d - 1
    assert float(m["diameter"].max()) <= 2.0


def _sphere(n, radius, ambient, seed):
    gen = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(ambient, 3, generator=gen, dtype=torch.float64))
    p = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    p = radius * p / p.norm(dim=1, keepdim=True)
    return p @ basis.T


def test_curvature_grows_as_sphere_shrinks_and_flat_is_lowest():
    density = 1200 / (4 * math.pi * 0.5 ** 2)  # points per unit area, same for every shape
    medians = []
    for seed, radius in enumerate([1.0, 0.5, 0.25]):
        n = int(round(density * 4 * math.pi * radius ** 2))
        x = _sphere(n, radius, 64, seed=40 + seed)
        m = metrics.manifold_metrics(x, _graph(x, 40, "gaussian"), kernel="gaussian")
        assert int(m["local_dim"].median()) == 2
        medians.append(float(m["curvature"].median()))
    side = math.sqrt(1200 / density)
    gen = torch.Generator().manual_seed(50)
    basis, _ = torch.linalg.qr(torch.randn(64, 2, generator=gen, dtype=torch.float64))
    flat = (side * torch.rand(1200, 2, generator=gen, dtype=torch.float64)) @ basis.T
    mf = metrics.manifold_metrics(flat, _graph(flat, 40, "gaussian"), kernel="gaussian")
    flat_median = float(mf["curvature"].median())
    assert medians[0] < medians[1] < medians[2], medians
    assert flat_median < medians[0], (flat_median, medians)
    assert flat_median < 1e-6


def test_diameter_cosine_in_range():
    gen = torch.Generator().manual_seed(60)
    # Few points, many candidates: polytopes spread over much of the sphere.
    x = torch.randn(40, 3, generator=gen, dtype=torch.float64)
    g = _graph(x, 39, "cosine")
    m = metrics.manifold_metrics(x, g)
    assert (m["diameter"] >= 0).all() and (m["diameter"] <= 2).all()
    nb, w = _random_graph(40, 30, seed=61, zero_share=0.0)
    d = ops.manifold_metrics(x, nb, w, "cosine", 0.05)[1]
    assert (d >= 0).all() and (d <= 2).all() and float(d.max()) > 1.9


# ---------------------------------------------------------------- label signals


def _blobs(n_per, centers, spread, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.cat([c + spread * torch.randn(n_per, c.shape[0], generator=gen, dtype=torch.float64)
                   for c in centers])
    y = torch.arange(len(centers)).repeat_interleave(n_per)
    return x, y


def test_loo_error_and_smoothness_match_reference():
    gen = torch.Generator().manual_seed(70)
    x = torch.randn(200, 10, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 5, (200,), generator=gen)
    for nb, w in [_fields(_graph(x, 12, "cosine")), _random_graph(200, 12, seed=71)]:
        hard, soft = metrics.loo_error((nb, w), y)
        rh, rs = reference_loo(nb, w, y, 5)
        np.testing.assert_allclose(hard.numpy(), rh)
        np.testing.assert_allclose(soft.numpy(), rs, rtol=1e-12, atol=1e-12)
        assert metrics.label_smoothness((nb, w), y) == pytest.approx(
            reference_smoothness(nb, w, y), rel=1e-12)


def test_loo_error_ties_go_to_lowest_class():
    nb = torch.tensor([[1, 2], [0, 2], [0, 1]])
    w = torch.tensor([[0.5, 0.5], [1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    # Node 0 sees class y_1 and class y_2 with mass 0.5 each: a tie, broken to class 0.
    hard, soft = metrics.loo_error((nb, w), torch.tensor([0, 2, 0]), num_classes=3)
    assert hard.tolist() == [0.0, 1.0, 0.0]
    assert soft.tolist() == [0.5, 1.0, 0.0]
    hard, soft = metrics.loo_error((nb, w), torch.tensor([2, 2, 0]), num_classes=3)
    assert hard.tolist() == [1.0, 0.0, 1.0]
    assert soft.tolist() == [0.5, 0.0, 1.0]


def test_loo_error_zero_on_separated_clusters():
    centers = [torch.full((16,), 10.0 * c, dtype=torch.float64) + torch.eye(16)[c] * 10
               for c in range(4)]
    x, y = _blobs(100, centers, 0.1, seed=72)
    g = _graph(x, 10, "gaussian")
    hard, soft = metrics.loo_error(g, y)
    assert float(hard.sum()) == 0.0 and float(soft.max()) == 0.0
    assert metrics.label_smoothness(g, y) == 0.0


def test_loo_error_near_chance_on_random_labels():
    gen = torch.Generator().manual_seed(73)
    x = torch.randn(3000, 8, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 5, (3000,), generator=gen)
    hard, soft = metrics.loo_error(_graph(x, 20, "cosine"), y)
    assert abs(float(hard.mean()) - 0.8) < 0.04
    assert abs(float(soft.mean()) - 0.8) < 0.03


@pytest.mark.parametrize("kernel", ["cosine", "gaussian"])
def test_loo_error_on_digits_below_five_percent(kernel):
    import sklearn.datasets as sklearn_datasets  # the test environment has scikit-learn
    digits = sklearn_datasets.load_digits()
    x = torch.tensor(digits.data, dtype=torch.float64)
    y = torch.tensor(digits.target)
    hard, _ = metrics.loo_error(_graph(x, 10, kernel), y)
    assert float(hard.mean()) < 0.05


# ---------------------------------------------------------------- comparing graphs


def test_overlap_matches_reference():
    ga = _random_graph(120, 10, seed=80)
    gb = _random_graph(120, 14, seed=81)
    # Rows 7, 8: the same candidates as in A (other weights): high overlap.
    gb[0][7:9, :10] = ga[0][7:9]
    gb[0][7:9, 10:] = -1
    gb[1][7:9, 10:] = 0.0
    jac, wov = ops.neighborhood_overlap(*ga, *gb)
    rj, rw = reference_overlap(ga, gb)
    np.testing.assert_allclose(jac.numpy(), rj, rtol=1e-12)
    np.testing.assert_allclose(wov.numpy(), rw, rtol=1e-12, atol=1e-15)
    assert float(jac.max()) > 0.5


def test_overlap_of_a_graph_with_itself_is_one():
    gen = torch.Generator().manual_seed(82)
    x = torch.randn(300, 12, generator=gen)
    x[7] = 0  # isolated in both
    g = _graph(x, 15, "cosine")
    assert torch.equal(metrics.neighborhood_overlap(g, g), torch.ones(300, dtype=torch.float64))
    assert torch.allclose(metrics.weighted_overlap(g, g), torch.ones(300, dtype=torch.float64))


def test_overlap_rotated_scaled_copy_cosine_is_one():
    gen = torch.Generator().manual_seed(83)
    x = torch.randn(500, 20, generator=gen, dtype=torch.float64)
    rotation, _ = torch.linalg.qr(torch.randn(20, 20, generator=gen, dtype=torch.float64))
    y = 3.7 * x @ rotation
    ga, gb = _graph(x, 20, "cosine"), _graph(y, 20, "cosine")
    assert float(metrics.neighborhood_overlap(ga, gb).min()) == 1.0
    assert float(metrics.weighted_overlap(ga, gb).min()) > 1 - 1e-6


def test_overlap_of_independent_point_sets_is_near_chance():
    gen = torch.Generator().manual_seed(84)
    n = 2000
    ga = _graph(torch.randn(n, 5, generator=gen, dtype=torch.float64), 20, "cosine")
    gb = _graph(torch.randn(n, 5, generator=gen, dtype=torch.float64), 20, "cosine")
    jac = metrics.neighborhood_overlap(ga, gb)
    da = (ga.weights > 0).sum(1).double()
    db = (gb.weights > 0).sum(1).double()
    shared = da * db / (n - 1)  # expected intersection of independent random supports
    chance = float((shared / (da + db - shared)).mean())
    assert abs(float(jac.mean()) - chance) < 0.5 * chance
    assert float(metrics.weighted_overlap(ga, gb).mean()) < 0.05


def test_augmentation_invariance():
    gen = torch.Generator().manual_seed(90)
    f = torch.randn(300, 16, generator=gen, dtype=torch.float64)
    close = [f + 1e-3 * torch.randn(f.shape, generator=gen, dtype=torch.float64)
             for _ in range(3)]
    far = [f + 1.0 * torch.randn(f.shape, generator=gen, dtype=torch.float64) for _ in range(3)]
    inv = metrics.augmentation_invariance(f, close, k=15)
    var = metrics.augmentation_invariance(f, far, k=15)
    assert inv["diameter"].shape == (300,) and inv["self_share"].shape == (300,)
    # Near-copies take most of each original's polytope; noisy copies only a part of it.
    assert float(inv["self_share"].mean()) > 0.6
    assert float(var["self_share"].mean()) < 0.35
    assert float(inv["diameter"].median()) < 0.6 * float(var["diameter"].median())
    assert ((inv["self_share"] >= 0) & (inv["self_share"] <= 1)).all()


def test_summarize():
    gen = torch.Generator().manual_seed(91)
    x = torch.randn(200, 8, generator=gen, dtype=torch.float64)
    s = metrics.summarize(metrics.manifold_metrics(x, _graph(x, 10, "cosine")), bins=10)
    for name in ["degree", "diameter", "local_dim", "log_volume", "curvature", "error"]:
        st = s[name]
        assert st["count"] == 200 and sum(st["hist"]) == 200 and len(st["bin_edges"]) == 11
        assert st["min"] <= st["q25"] <= st["median"] <= st["q75"] <= st["max"]
        v = metrics.manifold_metrics(x, _graph(x, 10, "cosine"))[name].double()
        assert st["mean"] == pytest.approx(v.mean().item())
        assert st["q25"] == pytest.approx(torch.quantile(v, 0.25).item())
        assert st["q75"] == pytest.approx(torch.quantile(v, 0.75).item())
    assert s["isolated"]["count"] == 0


# ---------------------------------------------------------------- bad inputs


def test_bad_inputs():
    gen = torch.Generator().manual_seed(100)
    x = torch.randn(50, 4, generator=gen, dtype=torch.float64)
    g = _graph(x, 8, "cosine")
    nb, w = _fields(g)
    y = torch.randint(0, 3, (50,), generator=gen)
    with pytest.raises(RuntimeError, match=r"nnk_loo_error: labels should have shape \[N\] = \[50\]"):
        metrics.loo_error(g, y[:49])
    with pytest.raises(RuntimeError, match="nnk_loo_error: labels should be integer class indices"):
        metrics.loo_error(g, y.double())
    with pytest.raises(RuntimeError, match="labels should be < num_classes = 2"):
        metrics.loo_error(g, y, num_classes=2)
    with pytest.raises(RuntimeError, match="labels should be >= 0"):
        metrics.loo_error(g, y - 1, num_classes=3)
    with pytest.raises(RuntimeError, match="label_smoothness: labels should have shape"):
        metrics.label_smoothness(g, y[:10])
    with pytest.raises(RuntimeError, match="label_smoothness: labels should be integer class indices"):
        metrics.label_smoothness(g, y.float())
    small = _graph(x[:40], 8, "cosine")
    with pytest.raises(RuntimeError, match="neighborhood_overlap: both graphs should be on the same N"):
        metrics.neighborhood_overlap(g, small)
    with pytest.raises(RuntimeError, match="manifold_metrics: the graph should have N = 40 rows"):
        metrics.manifold_metrics(x[:40], g)
    for alpha in (0.0, 1.0, -0.1, 1.5, float("nan")):
        with pytest.raises(RuntimeError, match=r"manifold_metrics: alpha should be in \(0, 1\)"):
            metrics.manifold_metrics(x, g, alpha=alpha)
    with pytest.raises(RuntimeError, match="manifold_metrics: kernel should be"):
        metrics.manifold_metrics(x, g, kernel="laplace")
    with pytest.raises(RuntimeError, match="neighbors should hold indices in"):
        ops.manifold_metrics(x, nb.clamp(max=49) + 1, w, "cosine", 0.05)
    with pytest.raises(RuntimeError, match="neighbors should be int64"):
        ops.manifold_metrics(x, nb.int(), w, "cosine", 0.05)
    with pytest.raises(RuntimeError, match="weights should have the shape of neighbors"):
        ops.manifold_metrics(x, nb, w[:, :5], "cosine", 0.05)
    with pytest.raises(RuntimeError, match="weights should be finite and >= 0"):
        ops.manifold_metrics(x, nb, -w, "cosine", 0.05)
    with pytest.raises(RuntimeError, match="neighborhood_overlap: weights_b should be 0 on padding"):
        bad = w.clone()
        bad_nb = nb.clone()
        bad_nb[0, 0] = -1
        bad[0, 0] = 1.0
        ops.neighborhood_overlap(nb, w, bad_nb, bad)
    with pytest.raises(RuntimeError, match="manifold_metrics: x should be float32 or float64"):
        ops.manifold_metrics(x.long(), nb, w, "cosine", 0.05)
