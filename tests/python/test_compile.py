"""torch.compile / torch.export of models that call the operators, the fake implementations
behind them, and the tracker on a compiled model (torch >= 2)."""
import pytest
import torch
import torch.nn as nn

import torch_geometry
from torch_geometry import _compat, _fake

ops = torch.ops.torch_geometry
needs_torch2 = pytest.mark.skipif(not _compat.TORCH2,
                                  reason="torch.compile, torch.export and fake tensors need torch >= 2")


def _library_ops():
    # The public operators; "_"-prefixed ones (the device-generic kernels callable for
    # testing, the native-CUDA switch) are not meant to be traced.
    names = {s.name for s in torch._C._jit_get_all_schemas()}
    ops_ = (n.split("::", 1)[1] for n in names if n.startswith("torch_geometry::"))
    return sorted(n for n in ops_ if not n.startswith("_"))


def test_every_operator_has_a_fake_implementation():
    assert _library_ops() == sorted(_fake.FAKES)


def test_no_fake_registration_without_fake_tensors():
    assert _fake.register() is _compat.TORCH2


# ---- fake outputs vs real outputs ------------------------------------------------------------

def _random_case(seed):
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(12, 40, (1,), generator=g))
    d = int(torch.randint(2, 9, (1,), generator=g))
    k = int(torch.randint(1, 8, (1,), generator=g))
    dtype = (torch.float32, torch.float64)[seed % 2]
    x = torch.randn(n, d, generator=g, dtype=dtype)
    y = torch.randint(0, 3, (n,), generator=g)
    a = torch.relu(torch.randn(n, 3, 2, 2, generator=g, dtype=dtype))
    return x, y, a, k


def _calls(x, y, a, k):
    """(name, thunk) for every operator on the inputs; later calls reuse earlier outputs."""
    nbr, w, err = ops.nnk_graph(x, k, "cosine", None, "mean", None, 1e-10)
    knn, _ = ops.knn_graph(x, k, "gaussian", None, "local")
    cn, cw, _ = ops.channel_nnk_graph(a, k, "cosine", 1e-10)
    return [
        ("knn_graph", lambda: ops.knn_graph(x, k, "cosine", None, "mean")),
        ("nnk_graph", lambda: ops.nnk_graph(x, k, "gaussian", 0.7, "mean", knn, 1e-10)),
        ("nnk_symmetrize", lambda: ops.nnk_symmetrize(nbr, w, err, "max")),
        ("manifold_metrics", lambda: ops.manifold_metrics(x, nbr, w, "cosine", 0.05)),
        ("nnk_loo_error", lambda: ops.nnk_loo_error(nbr, w, y, 3)),
        ("neighborhood_overlap", lambda: ops.neighborhood_overlap(nbr, w, knn, torch.ones_like(w))),
        ("channel_nnk_graph", lambda: ops.channel_nnk_graph(a, k, "cosine", 1e-10)),
        ("channel_overlap", lambda: ops.channel_overlap(cn, cw)),
        ("nnk_neighbors", lambda: ops.nnk_neighbors(x[:5], x[5:], k, "cosine", None, "mean",
                                                    "euclidean", None, 1e-10)),
        ("nnk_interpolate", lambda: ops.nnk_interpolate(knn[:, :k], torch.ones_like(knn[:, :k],
                                                        dtype=x.dtype), a.flatten(1))),
    ]


def _as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


@needs_torch2
@pytest.mark.parametrize("seed", range(6))
def test_fake_outputs_have_the_real_shapes_and_dtypes(seed):
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    x, y, a, k = _random_case(seed)
    real = {name: _as_tuple(call()) for name, call in _calls(x, y, a, k)}
    mode = FakeTensorMode(shape_env=ShapeEnv())
    fx, fy, fa = (mode.from_tensor(t) for t in (x, y, a))
    with mode:
        fake = {name: _as_tuple(call()) for name, call in _calls(fx, fy, fa, k)}
    assert sorted(real) == sorted(n for n in _fake.FAKES if n != "label_smoothness")
    for name in real:
        assert len(fake[name]) == len(real[name]), name
        for r, f in zip(real[name], fake[name]):
            assert f.dtype == r.dtype, name
            assert f.device == r.device, name
            if name == "nnk_symmetrize":
                # the edge count is data-dependent: an unbacked symbol in the fake output
                assert f.dim() == r.dim() and f.shape[:-1] == r.shape[:-1], name
                assert isinstance(f.shape[-1], torch.SymInt), name
            else:
                assert tuple(f.shape) == tuple(r.shape), name
                assert f.stride() == r.stride(), name


@needs_torch2
def test_fake_label_smoothness_refuses_with_the_reason():
    from torch._subclasses.fake_tensor import FakeTensorMode

    x, y, _, k = _random_case(0)
    nbr, w, _ = ops.nnk_graph(x, k, "cosine", None, "mean", None, 1e-10)
    from torch._subclasses.fake_tensor import DataDependentOutputException

    mode = FakeTensorMode()
    fn, fw, fy = (mode.from_tensor(t) for t in (nbr, w, y))
    with mode, pytest.raises(DataDependentOutputException) as info:
        ops.label_smoothness(fn, fw, fy)
    assert "returns a Python float computed from the values" in str(info.value.__cause__)


@needs_torch2
def test_fake_checks_k_against_n():
    from torch._subclasses.fake_tensor import FakeTensorMode

    mode = FakeTensorMode()
    fx = mode.from_tensor(torch.randn(5, 3))
    with mode, pytest.raises(RuntimeError, match="k should be < N"):
        ops.nnk_graph(fx, 5, "cosine", None, "mean", None, 1e-10)


# ---- a model whose forward calls every operator -----------------------------------------------

class GraphModel(nn.Module):
    """Embeds points and measures the embedding's NNK geometry with every operator."""

    def __init__(self, k=4):
        super().__init__()
        self.k = k
        self.embed = nn.Linear(6, 5)
        self.conv = nn.Conv1d(1, 3, kernel_size=3, padding=1)

    def forward(self, x, y):
        h = torch.relu(self.embed(x)).detach() + 1e-3  # the operators are not differentiable
        nbr, w, err = ops.nnk_graph(h, self.k, "cosine", None, "mean", None, 1e-10)
        knn, sim = ops.knn_graph(h, self.k, "cosine", None, "mean")
        edge_index, edge_weight = ops.nnk_symmetrize(nbr, w, err, "min_error")
        degree, diameter, local_dim, log_volume, curvature = ops.manifold_metrics(
            h, nbr, w, "cosine", 0.05)
        hard, soft = ops.nnk_loo_error(nbr, w, y, 3)
        jaccard, weighted = ops.neighborhood_overlap(nbr, w, knn, sim)
        maps = torch.relu(self.conv(x.unsqueeze(1))).detach()
        cn, cw, cerr = ops.channel_nnk_graph(maps, self.k, "cosine", 1e-10)
        overlap = ops.channel_overlap(cn, cw)
        return (nbr, w, err, edge_weight.sum(), edge_index.shape[1] * 1.0 + 0 * err.sum(),
                degree, diameter, local_dim, log_volume, curvature, hard.mean(), soft,
                jaccard, weighted, cn, cw, cerr, overlap)


def _model_inputs(n=48, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def _assert_outputs_equal(out, ref):
    assert len(out) == len(ref)
    for i, (o, r) in enumerate(zip(out, ref)):
        assert o.dtype == r.dtype, i
        assert torch.equal(o, r), i


def _capture_dynamic_shapes():
    # keeps nnk_symmetrize (data-dependent edge count) inside the graph
    return torch._dynamo.config.patch(capture_dynamic_output_shape_ops=True)


@needs_torch2
def test_compiled_model_has_no_graph_break_and_matches_eager():
    torch.manual_seed(0)
    model = GraphModel().eval()
    x, y = _model_inputs()
    with torch.no_grad(), _capture_dynamic_shapes():
        eager = model(x, y)
        explanation = torch._dynamo.explain(model)(x, y)
        assert explanation.graph_break_count == 0, explanation.break_reasons
        assert explanation.graph_count == 1
        torch._dynamo.reset()
        compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
        _assert_outputs_equal(compiled(x, y), eager)
        # a different number of points runs through the same (dynamic) graph or a recompile
        x2, y2 = _model_inputs(n=61, seed=2)
        _assert_outputs_equal(compiled(x2, y2), model(x2, y2))


@needs_torch2
def test_compiled_model_with_dynamic_shapes_matches_eager():
    torch.manual_seed(0)
    model = GraphModel().eval()
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True, dynamic=True)
    with torch.no_grad(), _capture_dynamic_shapes():
        for n, seed in ((40, 3), (57, 4)):
            x, y = _model_inputs(n=n, seed=seed)
            _assert_outputs_equal(compiled(x, y), model(x, y))


@needs_torch2
def test_default_dynamo_config_breaks_at_nnk_symmetrize_and_stays_correct():
    torch.manual_seed(0)
    model = GraphModel().eval()
    x, y = _model_inputs()
    torch._dynamo.reset()
    with torch.no_grad():
        explanation = torch._dynamo.explain(model)(x, y)
        reasons = " ".join(str(r.reason) for r in explanation.break_reasons)
        assert explanation.graph_break_count == 1 and "nnk_symmetrize" in reasons, reasons
        torch._dynamo.reset()
        _assert_outputs_equal(torch.compile(model, backend="aot_eager")(x, y), model(x, y))


@needs_torch2
def test_exported_model_matches_eager():
    torch.manual_seed(0)
    model = GraphModel().eval()
    x, y = _model_inputs()
    with torch.no_grad():
        program = torch.export.export(model, (x, y))
        targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
        for op in ("nnk_graph", "nnk_symmetrize", "manifold_metrics", "channel_overlap"):
            assert f"torch_geometry.{op}.default" in targets, targets
        _assert_outputs_equal(program.module()(x, y), model(x, y))


# ---- label_smoothness (a Python float) under torch.compile -------------------------------------

class SmoothnessModel(nn.Module):
    def forward(self, x, y):
        nbr, w, _ = ops.nnk_graph(x, 4, "cosine", None, "mean", None, 1e-10)
        return torch.tensor(ops.label_smoothness(nbr, w, y)) + w.sum() * 0


@needs_torch2
def test_label_smoothness_breaks_the_graph_and_stays_correct():
    model = SmoothnessModel()
    x, y = _model_inputs()
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(model)(x, y)
    assert explanation.graph_break_count >= 1
    torch._dynamo.reset()
    with pytest.raises(Exception, match="label_smoothness"):
        torch.compile(model, backend="aot_eager", fullgraph=True)(x, y)
    torch._dynamo.reset()
    assert torch.equal(torch.compile(model, backend="aot_eager")(x, y), model(x, y))


# ---- the default backend (Inductor) ----------------------------------------------------------

@needs_torch2
def test_default_inductor_backend_compiles_every_operator_with_a_kernel_argument():
    # Inductor builds its fallback kernels with FallbackKernel.create(kernel, *args, **kwargs):
    # an operator argument named "kernel" collided with it ("got multiple values for argument
    # 'kernel'"), so the schemas name it kernel_name.
    def f(x, a):
        nbr, w, err = ops.nnk_graph(x, 5, "gaussian", None, "local", None, 1e-10, "euclidean")
        knn, sim = ops.knn_graph(x, 5, "cosine", None, "mean", "kernel")
        deg = ops.manifold_metrics(x, nbr, w, "gaussian", 0.05)[0]
        cn, cw, ce = ops.channel_nnk_graph(a, 4, "cosine", 1e-10, "kernel")
        qn, qw, qe = ops.nnk_neighbors(x[:7], x[7:], 4, "cosine")
        return nbr, w, err, knn, sim, deg, cn, cw, ce, qn, qw, qe

    g = torch.Generator().manual_seed(3)
    x = torch.randn(40, 6, generator=g)
    a = torch.relu(torch.randn(30, 2, 3, 3, generator=g))
    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True)
    for got, want in zip(compiled(x, a), f(x, a)):
        assert torch.equal(got, want)


# ---- the tracker on a compiled model ---------------------------------------------------------

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(16, 8)
        self.out = nn.Linear(8, 3)

    def forward(self, x):
        h = self.pool(torch.relu(self.conv1(x))).flatten(1)
        return self.out(torch.relu(self.fc(h)))


@needs_torch2
def test_tracker_on_a_compiled_model_captures_what_the_plain_model_gives():
    torch.manual_seed(0)
    model = Net()
    g = torch.Generator().manual_seed(5)
    x = torch.randn(90, 1, 6, 6, generator=g)
    y = torch.randint(0, 3, (90,), generator=g)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager")
    compiled(x[:8])  # compiled before the tracker registers anything
    layers = ["conv1", "fc"]
    plain = torch_geometry.GeometryTracker(model, layers, (x, y), k=6, progress=False)
    tracked = torch_geometry.GeometryTracker(compiled, layers, (x, y), k=6, progress=False)
    prefixed = torch_geometry.GeometryTracker(compiled, ["_orig_mod.conv1", "_orig_mod.fc"],
                                              (x, y), k=6, progress=False)
    ref = plain.capture()
    for tracker, names in ((tracked, layers), (prefixed, ["_orig_mod.conv1", "_orig_mod.fc"])):
        acts = tracker.capture()
        assert sorted(acts) == sorted(names)
        for name, ref_name in zip(names, layers):
            assert torch.allclose(acts[name], ref[ref_name], rtol=1e-5, atol=1e-6), name
    plain.on_epoch_end(0)
    tracked.on_epoch_end(0)
    assert len(tracked.history) == len(plain.history) > 0
    for row, ref_row in zip(tracked.history, plain.history):
        assert (row["layer"], row["metric"]) == (ref_row["layer"], ref_row["metric"])
        assert row["mean"] == pytest.approx(ref_row["mean"], rel=1e-4, abs=1e-6, nan_ok=True), row
