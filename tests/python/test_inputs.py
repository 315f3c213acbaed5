"""What the Python wrappers accept: integer k only, numpy arrays, tensors that carry gradients,
float16/bfloat16 values, and a plain sentence for devices without a kernel."""
import numpy as np
import pytest
import torch

import torch_geometry
from torch_geometry import _compat, _inputs, metrics


def _points(n=60, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g)


def _labels(n=60, seed=0):
    return torch.randint(0, 3, (n,), generator=torch.Generator().manual_seed(seed))


def _assert_graph_equal(a, b):
    assert torch.equal(a.neighbors, b.neighbors)
    assert torch.equal(a.weights, b.weights)
    assert torch.equal(a.error, b.error)


# ---- k: an integer, nothing else -------------------------------------------------------------

@pytest.mark.parametrize("k", [5, np.int64(5), np.int32(5), torch.tensor(5)])
def test_check_k_accepts_integers(k):
    assert _inputs.check_k(k, "op") == 5
    assert type(_inputs.check_k(k, "op")) is int


@pytest.mark.parametrize("k", [2.5, 5.0, True, False, "3", None, np.float64(5.0), np.True_,
                               torch.tensor(5.0), torch.tensor(True), torch.tensor([5, 6])])
def test_check_k_refuses_non_integers(k):
    with pytest.raises(ValueError, match=r"op: k should be an integer, got"):
        _inputs.check_k(k, "op")


def _k_callers():
    x = _points()
    return {
        "knn_graph": lambda k: torch_geometry.knn_graph(x, k),
        "nnk_graph": lambda k: torch_geometry.nnk_graph(x, k),
        "augmentation_invariance": lambda k: metrics.augmentation_invariance(x, [x + 0.01], k),
        "approximate_candidates": lambda k: torch_geometry.approximate_candidates(x, k),
    }


@pytest.mark.parametrize("caller", sorted(_k_callers()))
@pytest.mark.parametrize("k", [2.5, True, "3"])
def test_every_wrapper_refuses_non_integer_k(caller, k):
    with pytest.raises(ValueError, match=rf"{caller}: k should be an integer, got {k!r}"):
        _k_callers()[caller](k)


def test_approximate_candidates_refuses_non_integer_options():
    x = _points()
    for name in ("nlist", "nprobe", "niter", "block"):
        with pytest.raises(ValueError, match=rf"{name} should be an integer, got 2.5"):
            torch_geometry.approximate_candidates(x, 5, **{name: 2.5})


# ---- tensors that carry gradients -------------------------------------------------------------

def test_wrappers_detach_inputs_that_require_grad():
    x = _points()
    layer = torch.nn.Linear(6, 8)
    h = layer(x)  # an activation inside the autograd graph
    assert h.requires_grad
    plain = h.detach().clone()
    nbr, sim = torch_geometry.knn_graph(h, 5)
    nbr_ref, sim_ref = torch_geometry.knn_graph(plain, 5)
    assert torch.equal(nbr, nbr_ref) and torch.equal(sim, sim_ref) and not sim.requires_grad
    g = torch_geometry.nnk_graph(h, 5)
    ref = torch_geometry.nnk_graph(plain, 5)
    _assert_graph_equal(g, ref)
    assert torch.equal(g.edge_index, ref.edge_index)
    m = metrics.manifold_metrics(h, g)
    m_ref = metrics.manifold_metrics(plain, ref)
    for name in m_ref:
        assert torch.equal(m[name], m_ref[name]), name
    # a graph whose weights carry gradients (e.g. scaled by a learned factor)
    scale = torch.ones((), requires_grad=True)
    weighted = (g.neighbors, g.weights * scale)
    hard, soft = metrics.loo_error(weighted, _labels())
    hard_ref, soft_ref = metrics.loo_error(ref, _labels())
    assert torch.equal(hard, hard_ref) and torch.equal(soft, soft_ref)
    inv = metrics.augmentation_invariance(h, [h * 1.01], 5)
    inv_ref = metrics.augmentation_invariance(plain, [plain * 1.01], 5)
    assert torch.equal(inv["diameter"], inv_ref["diameter"])


# ---- float16 / bfloat16 ----------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_in_float32(dtype):
    low = _points().to(dtype)
    as_float = low.float()
    g = torch_geometry.nnk_graph(low, 5)
    ref = torch_geometry.nnk_graph(as_float, 5)
    assert g.weights.dtype == torch.float32 and g.error.dtype == torch.float32
    _assert_graph_equal(g, ref)
    nbr, sim = torch_geometry.knn_graph(low, 5)
    assert sim.dtype == torch.float32
    assert torch.equal(sim, torch_geometry.knn_graph(as_float, 5)[1])
    m = metrics.manifold_metrics(low, g)
    m_ref = metrics.manifold_metrics(as_float, ref)
    for name in m_ref:
        assert torch.equal(m[name], m_ref[name]), name
    # a graph stored in half precision
    half_graph = (g.neighbors, g.weights.to(dtype))
    hard, soft = metrics.loo_error(half_graph, _labels())
    hard_ref, soft_ref = metrics.loo_error((g.neighbors, g.weights.to(dtype).float()), _labels())
    assert soft.dtype == torch.float32 and torch.equal(soft, soft_ref)
    cand = torch_geometry.approximate_candidates(low, 5, nlist=2)
    assert torch.equal(cand, torch_geometry.approximate_candidates(as_float, 5, nlist=2))


# ---- numpy arrays ----------------------------------------------------------------------------

def test_numpy_arrays_are_accepted():
    x = _points().double()
    xn = x.numpy()
    g = torch_geometry.nnk_graph(xn, 5)
    ref = torch_geometry.nnk_graph(x, 5)
    _assert_graph_equal(g, ref)
    nbr, sim = torch_geometry.knn_graph(xn, 5)
    assert torch.equal(nbr, torch_geometry.knn_graph(x, 5)[0])
    cand = torch_geometry.knn_graph(x, 5)[0]
    g_cand = torch_geometry.nnk_graph(xn, 5, candidates=cand.numpy())
    _assert_graph_equal(g_cand, torch_geometry.nnk_graph(x, 5, candidates=cand))
    graph_np = (ref.neighbors.numpy(), ref.weights.numpy(), ref.error.numpy())
    m = metrics.manifold_metrics(xn, graph_np)
    m_ref = metrics.manifold_metrics(x, ref)
    for name in m_ref:
        assert torch.equal(m[name], m_ref[name]), name
    y = _labels()
    assert torch.equal(metrics.loo_error(graph_np, y.numpy())[1], metrics.loo_error(ref, y)[1])
    assert metrics.label_smoothness(graph_np, y.numpy()) == metrics.label_smoothness(ref, y)
    other = torch_geometry.nnk_graph(x * torch.linspace(1, 2, 6, dtype=x.dtype), 5)
    other_np = {"neighbors": other.neighbors.numpy(), "weights": other.weights.numpy()}
    assert torch.equal(metrics.neighborhood_overlap(graph_np, other_np),
                       metrics.neighborhood_overlap(ref, other))
    assert torch.equal(torch_geometry.approximate_candidates(xn, 5, nlist=2),
                       torch_geometry.approximate_candidates(x, 5, nlist=2))


def test_other_containers_are_refused_plainly():
    with pytest.raises(ValueError, match=r"nnk_graph: x should be a torch.Tensor or a numpy "
                                         r"array, got list"):
        torch_geometry.nnk_graph([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], 1)


# ---- devices ---------------------------------------------------------------------------------

def test_cpu_is_a_supported_device_of_every_operator():
    for op in ("knn_graph", "nnk_graph", "nnk_symmetrize", "manifold_metrics", "nnk_loo_error",
               "label_smoothness", "neighborhood_overlap", "channel_nnk_graph", "channel_overlap"):
        assert "cpu" in _inputs.supported_devices(op), op


def test_device_without_kernel_gets_one_sentence(monkeypatch):
    # Pretend the meta device has no kernel (on torch 2 the fake implementations give it one),
    # so that the message is checked on both torch builds.
    real = _inputs._has_kernel
    monkeypatch.setattr(_inputs, "_has_kernel", lambda op, key: key != "Meta" and real(op, key))
    x = torch.empty(10, 3, device="meta")
    with pytest.raises(NotImplementedError) as info:
        torch_geometry.nnk_graph(x, 3)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("torch_geometry.nnk_graph does not run on meta tensors: this "
                              "build has kernels for cpu")
    with pytest.raises(NotImplementedError, match="manifold_metrics does not run on meta"):
        metrics.manifold_metrics(x, (torch.zeros(10, 3, dtype=torch.long), torch.zeros(10, 3)))


@pytest.mark.skipif(_compat.TORCH2, reason="torch 2 gives meta tensors the fake kernels")
def test_meta_tensors_on_torch_1_13_get_one_sentence():
    x = torch.empty(10, 3, device="meta")
    with pytest.raises(NotImplementedError,
                       match=r"^torch_geometry.knn_graph does not run on meta tensors: this "
                             r"build has kernels for cpu, cuda only \(move the input there"):
        torch_geometry.knn_graph(x, 3)


@pytest.mark.skipif(not _compat.TORCH2, reason="fake (meta) kernels need torch >= 2")
def test_meta_tensors_on_torch_2_run_the_fake_kernels():
    x = torch.empty(10, 3, device="meta")
    g = torch_geometry.nnk_graph(x, 4)
    assert g.neighbors.device.type == "meta"
    assert g.neighbors.shape == (10, 4) and g.weights.shape == (10, 4) and g.error.shape == (10,)
    assert g.neighbors.dtype == torch.long and g.weights.dtype == torch.float32
