"""candidate_metric on knn_graph, nnk_graph and channel_nnk_graph: "euclidean" candidates
are the k nearest points by L2 distance on the raw features (brute force in numpy, ties to
the smaller index), weighed by the kernel; the CPU and device-generic kernels agree; bad
values are refused; and the default ("kernel") gives the outputs saved from the code before
the option existed, bit for bit."""
import json
import pathlib

import numpy as np
import pytest
import torch

import torch_geometry as tg
from torch_geometry.channelwise import channel_graphs

ops = torch.ops.torch_geometry
REFERENCE = pathlib.Path(__file__).parent / "data" / "kernel_ranking_reference.npz"
DTYPES = {"f64": torch.float64, "f32": torch.float32}


def varied_norms(n, d, seed):
    """Points whose norms vary by a factor 25: L2 and cosine rankings then differ."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)) * rng.uniform(0.2, 5.0, (n, 1))


def brute_force_l2(x, k, exclude=()):
    """k nearest other rows by squared L2 distance, ties to the smaller index; rows in
    `exclude` are neither queries (all -1) nor candidates."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    out = np.full((n, k), -1, dtype=np.int64)
    for i in range(n):
        if i in exclude:
            continue
        others = [j for j in range(n) if j != i and j not in exclude]
        order = sorted(others, key=lambda j: (d2[i, j], j))[:k]
        out[i, :len(order)] = order
    return out


def cosine_similarity(x, i, j):
    x = np.asarray(x, dtype=np.float64)
    return 0.5 * (1 + x[i] @ x[j] / np.linalg.norm(x[i]) / np.linalg.norm(x[j]))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_knn_graph_euclidean_equals_brute_force(dtype):
    x = varied_norms(120, 7, seed=1)
    k = 9
    nbr, sim = tg.knn_graph(torch.from_numpy(x).to(dtype), k, candidate_metric="euclidean")
    expected = brute_force_l2(torch.from_numpy(x).to(dtype).double().numpy(), k)
    np.testing.assert_array_equal(nbr.numpy(), expected)
    want = np.array([[cosine_similarity(x, i, j) for j in row] for i, row in enumerate(expected)])
    np.testing.assert_allclose(sim.double().numpy(), want, rtol=0,
                               atol=1e-12 if dtype == torch.float64 else 1e-6)
    # The two rankings really differ on these points (the test would be vacuous otherwise).
    kernel_nbr, _ = tg.knn_graph(torch.from_numpy(x).to(dtype), k)
    assert (np.sort(kernel_nbr.numpy(), 1) != np.sort(expected, 1)).any(1).mean() > 0.5


def test_euclidean_ties_go_to_the_smaller_index():
    # A 4 x 4 grid of integers: many exactly equal distances, all exact in floating point
    # (the column means, 2.5, are exact too).
    g = np.array([[a, b] for a in range(1, 5) for b in range(1, 5)], dtype=np.float64)
    for k in (3, 6, 11):
        nbr, _ = tg.knn_graph(torch.from_numpy(g), k, candidate_metric="euclidean")
        np.testing.assert_array_equal(nbr.numpy(), brute_force_l2(g, k))
        graph = tg.nnk_graph(torch.from_numpy(g), k, candidate_metric="euclidean")
        np.testing.assert_array_equal(np.sort(graph.neighbors.numpy(), 1),
                                      np.sort(brute_force_l2(g, k), 1))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_nnk_graph_euclidean_is_nnk_on_the_l2_candidates(dtype):
    x = torch.from_numpy(varied_norms(150, 6, seed=2)).to(dtype)
    k = 10
    expected = torch.from_numpy(brute_force_l2(x.double().numpy(), k))
    got = tg.nnk_graph(x, k, candidate_metric="euclidean")
    ref = tg.nnk_graph(x, k, candidates=expected)
    assert torch.equal(got.neighbors, ref.neighbors)
    assert torch.equal(got.weights, ref.weights)
    assert torch.equal(got.error, ref.error)
    np.testing.assert_array_equal(np.sort(got.neighbors.numpy(), 1), np.sort(expected.numpy(), 1))
    # Given candidates win: the metric is checked but does not change them.
    given = tg.nnk_graph(x, k, candidates=expected, candidate_metric="euclidean")
    assert torch.equal(given.weights, ref.weights)


def test_zero_rows_stay_out_under_the_cosine_kernel():
    x = varied_norms(60, 5, seed=3)
    x[[4, 17]] = 0.0     # the nearest points in L2 of every small-norm point
    k = 6
    nbr, sim = tg.knn_graph(torch.from_numpy(x), k, candidate_metric="euclidean")
    np.testing.assert_array_equal(nbr.numpy(), brute_force_l2(x, k, exclude={4, 17}))
    assert (sim[[4, 17]] == 0).all()
    g = tg.nnk_graph(torch.from_numpy(x), k, candidate_metric="euclidean")
    assert (g.neighbors[[4, 17]] == -1).all() and (g.error[[4, 17]] == 1).all()
    assert not torch.isin(g.neighbors, torch.tensor([4, 17])).any()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gaussian_kernel_ranks_by_l2_already(dtype):
    x = torch.from_numpy(varied_norms(90, 5, seed=4)).to(dtype)
    for sigma in (None, "local", 2.0):
        a = tg.knn_graph(x, 8, kernel="gaussian", sigma=sigma, candidate_metric="euclidean")
        b = tg.knn_graph(x, 8, kernel="gaussian", sigma=sigma)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        ga = tg.nnk_graph(x, 8, kernel="gaussian", sigma=sigma, candidate_metric="euclidean")
        gb = tg.nnk_graph(x, 8, kernel="gaussian", sigma=sigma)
        assert torch.equal(ga.weights, gb.weights) and torch.equal(ga.neighbors, gb.neighbors)
    np.testing.assert_array_equal(a[0].numpy(), brute_force_l2(x.double().numpy(), 8))


def test_channel_nnk_graph_euclidean_per_channel():
    rng = np.random.default_rng(5)
    maps = np.maximum(rng.standard_normal((80, 3, 2, 3)), 0) * rng.uniform(0.3, 4.0, (80, 1, 1, 1))
    a = torch.from_numpy(maps)
    k = 7
    nbr, w, err = ops.channel_nnk_graph(a, k, "cosine", 1e-10, "euclidean")
    for c in range(3):
        xc = maps[:, c].reshape(80, -1)
        zero = {i for i in range(80) if not xc[i].any()}
        cand = torch.from_numpy(brute_force_l2(xc, k, exclude=zero))
        ref = tg.nnk_graph(torch.from_numpy(xc), k, candidates=cand)
        assert torch.equal(nbr[c], ref.neighbors) and torch.equal(w[c], ref.weights)
        assert torch.equal(err[c], ref.error)
    graphs = channel_graphs(a, k, candidate_metric="euclidean")
    assert all(torch.equal(g.weights, w[c]) for c, g in enumerate(graphs))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_generic_kernels_equal_the_cpu_kernels(dtype, monkeypatch):
    # A small memory budget: the generic search runs over several row blocks and tiles.
    monkeypatch.setenv("TORCH_GEOMETRY_GENERIC_BUDGET", "200000")
    x = torch.from_numpy(varied_norms(300, 8, seed=6)).to(dtype)
    x[11] = 0.0
    tol = 1e-10 if dtype == torch.float64 else 5e-5
    k = 12
    cn, cs = ops.knn_graph(x, k, "cosine", None, "mean", "euclidean")
    gn, gs = ops._generic_knn_graph(x, k, "cosine", None, "mean", "euclidean")
    assert torch.equal(cn, gn)
    torch.testing.assert_close(gs, cs, rtol=0, atol=tol)
    cn, cw, ce = ops.nnk_graph(x, k, "cosine", None, "mean", None, 1e-10, "euclidean")
    gn, gw, ge = ops._generic_nnk_graph(x, k, "cosine", None, "mean", None, 1e-10, "euclidean")
    assert torch.equal(torch.sort(cn, 1)[0], torch.sort(gn, 1)[0])
    dense = lambda n_, w_: torch.zeros(300, 301, dtype=torch.float64).scatter_add_(
        1, n_.clamp_min(-1) % 301, w_.double())[:, :300]
    torch.testing.assert_close(dense(gn, gw), dense(cn, cw), rtol=0, atol=tol)
    torch.testing.assert_close(ge, ce, rtol=0, atol=tol)
    maps = torch.relu(torch.from_numpy(varied_norms(90, 8, seed=7))).to(dtype).view(90, 2, 2, 2)
    cn, cw, ce = ops.channel_nnk_graph(maps, 6, "cosine", 1e-10, "euclidean")
    gn, gw, ge = ops._generic_channel_nnk_graph(maps, 6, "cosine", 1e-10, "euclidean")
    assert torch.equal(torch.sort(cn, 2)[0], torch.sort(gn, 2)[0])
    torch.testing.assert_close(ge, ce, rtol=0, atol=tol)


BAD = 'candidate_metric should be "kernel" or "euclidean", got "l2"'


@pytest.mark.parametrize("prefix", ["", "_generic_"])
def test_bad_candidate_metric_is_refused(prefix):
    x = torch.randn(30, 4, dtype=torch.float64)
    calls = {
        "knn_graph": lambda: getattr(ops, prefix + "knn_graph")(x, 3, "cosine", None, "mean", "l2"),
        "nnk_graph": lambda: getattr(ops, prefix + "nnk_graph")(
            x, 3, "cosine", None, "mean", None, 1e-10, "l2"),
        "channel_nnk_graph": lambda: getattr(ops, prefix + "channel_nnk_graph")(
            x.view(30, 2, 2), 3, "cosine", 1e-10, "l2"),
    }
    for op, call in calls.items():
        with pytest.raises(RuntimeError, match=f"{op}: {BAD}"):
            call()


def test_bad_candidate_metric_through_the_wrappers():
    x = torch.randn(30, 4)
    with pytest.raises(RuntimeError, match=BAD):
        tg.knn_graph(x, 3, candidate_metric="l2")
    with pytest.raises(RuntimeError, match=BAD.replace('"l2"', '"Euclidean"')):
        tg.nnk_graph(x, 3, candidate_metric="Euclidean")
    with pytest.raises(RuntimeError, match=BAD.replace('"l2"', '""')):
        channel_graphs(x.view(30, 2, 2), 3, candidate_metric="")


@pytest.mark.parametrize("name", ["f64", "f32"])
@pytest.mark.parametrize("metric", [None, "kernel"])
def test_default_ranking_unchanged(name, metric):
    """Bit for bit the outputs of the operators before candidate_metric existed."""
    ref = np.load(REFERENCE)
    dtype = DTYPES[name]
    x = torch.from_numpy(ref["x"]).to(dtype)
    maps = torch.from_numpy(ref["maps"]).to(dtype)
    extra = () if metric is None else (metric,)
    for kern in ("cosine", "gaussian"):
        nb, sim = ops.knn_graph(x, 7, kern, None, "mean", *extra)
        np.testing.assert_array_equal(nb.numpy(), ref[f"knn_{kern}_{name}_nbr"])
        np.testing.assert_array_equal(sim.numpy(), ref[f"knn_{kern}_{name}_sim"])
        nb, w, e = ops.nnk_graph(x, 7, kern, None, "mean", None, 1e-10, *extra)
        np.testing.assert_array_equal(nb.numpy(), ref[f"nnk_{kern}_{name}_nbr"])
        np.testing.assert_array_equal(w.numpy(), ref[f"nnk_{kern}_{name}_w"])
        np.testing.assert_array_equal(e.numpy(), ref[f"nnk_{kern}_{name}_err"])
    nb, w, e = ops.channel_nnk_graph(maps, 6, "cosine", 1e-10, *extra)
    np.testing.assert_array_equal(nb.numpy(), ref[f"ch_{name}_nbr"])
    np.testing.assert_array_equal(w.numpy(), ref[f"ch_{name}_w"])
    np.testing.assert_array_equal(e.numpy(), ref[f"ch_{name}_err"])


def test_torchscript_passes_the_metric():
    def f(x: torch.Tensor):
        return torch.ops.torch_geometry.nnk_graph(x, 5, "cosine", None, "mean", None, 1e-10,
                                                  "euclidean")

    x = torch.from_numpy(varied_norms(40, 4, seed=8))
    scripted = torch.jit.script(f)
    assert torch.equal(scripted(x)[1], tg.nnk_graph(x, 5, candidate_metric="euclidean").weights)


# ------------------------------------------------------------------ tracker and model selection
def _loo(x, y, k, metric):
    nbr, w, _ = ops.nnk_graph(x, k, candidate_metric=metric)
    return float(ops.nnk_loo_error(nbr, w, y, 4)[0].mean())


class _Two(torch.nn.Module):
    """A fixed linear map (no bias: the probe's varied norms carry over to the output, so
    kernel and L2 rankings differ) and a head."""

    def __init__(self, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.lin = torch.nn.Linear(6, 6, bias=False)
        self.head = torch.nn.Linear(6, 4)

    def forward(self, x):
        return self.head(self.lin(x))


def _probe(n=150, seed=3):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    x = torch.randn(n, 6, generator=g) + y.view(-1, 1).float() * 0.7
    return x * (0.2 + 4.8 * torch.rand(n, 1, generator=g)), y


@pytest.mark.parametrize("metric", ["kernel", "euclidean"])
def test_tracker_builds_its_graphs_with_the_candidate_metric(metric):
    x, y = _probe()
    model = _Two(0)
    tracker = tg.GeometryTracker(model, ["lin"], (x, y), k=10, candidate_metric=metric,
                                 progress=False)
    rows = tracker.on_epoch_end(0)
    loo = [r for r in rows if r["metric"] == "loo_error"][0]["mean"]
    with torch.no_grad():
        acts = model.lin(x)
    assert loo == pytest.approx(_loo(acts, y, 10, metric), abs=1e-6)
    assert json.loads(tracker.to_json())["options"]["candidate_metric"] == metric


def test_tracker_and_selection_metrics_differ_where_the_rankings_do():
    # The data of the tests above gives different LOO errors under the two rankings, so
    # their equalities show that the option reaches the graph, not only that it is accepted.
    x, y = _probe()
    with torch.no_grad():
        assert _loo(_Two(0).lin(x), y, 10, "kernel") != _loo(_Two(0).lin(x), y, 10, "euclidean")
        for s in range(3):
            assert _loo(_Two(s).lin(x), y, 10, "kernel") != _loo(_Two(s).lin(x), y, 10,
                                                                 "euclidean")


@pytest.mark.parametrize("metric", ["kernel", "euclidean"])
def test_select_models_ranks_by_the_loo_error_of_the_candidate_metric(metric):
    x, y = _probe()
    models = {f"m{s}": _Two(s) for s in range(3)}
    ranked = tg.select_models(models, (x, y), layer="lin", k=10, candidate_metric=metric,
                              max_points=None)
    expect = {}
    with torch.no_grad():
        for name, m in models.items():
            expect[name] = _loo(m.lin(x), y, 10, metric)
    assert [n for n, _ in ranked] == sorted(expect, key=lambda n: (expect[n], n))
    for name, err in ranked:
        assert err == pytest.approx(expect[name], abs=1e-6)


def test_tracker_and_selection_refuse_an_unknown_candidate_metric():
    x, y = _probe()
    with pytest.raises(RuntimeError, match="candidate_metric should be"):
        tg.GeometryTracker(_Two(0), ["lin"], (x, y), k=10, candidate_metric="cosine")
    with pytest.raises(RuntimeError, match="candidate_metric should be"):
        tg.select_models({"a": _Two(0)}, (x, y), layer="lin", k=10, candidate_metric="l2")
