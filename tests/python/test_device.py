"""The tracker, the probe capture and model selection keep activations on the model's device.

No GPU is needed: ``RemoteDevice`` is a dispatch mode under which tensors on the ``lazy``
device (a device type torch can name without any hardware behind it) hold their values on
the host, where only the mode reads them. Every operation on them runs on those values (the
operators take their CPU kernels), every copy between such a tensor and a CPU tensor is
logged with its shape, an operation that mixes them with a CPU tensor of more than 0 dims
fails as it would on CUDA, and a direct read of their memory (``data_ptr`` in C++) fails
because they have none. A model whose last block moves its activations there stands for a
model on a GPU: the tests assert what came back to the host and that the results equal
those of the same model on the CPU. Plain ``meta`` tensors (no values at all) check the
capture alone: any host copy of them raises.
"""
import pytest
import torch
import torch.nn as nn
from torch.utils._pytree import tree_map
from torch.utils._python_dispatch import TorchDispatchMode

import torch_geometry as tg
from torch_geometry import _C, _inputs
from torch_geometry.callbacks import select_models
from torch_geometry.tracking import ActivationCapture, capture_probe, run_probe

REMOTE = torch.device("lazy")


class Remote(torch.Tensor):
    """A tensor that reports the harness's device and keeps its values in ``.value`` (CPU)."""

    @staticmethod
    def __new__(cls, value):
        r = torch.Tensor._make_wrapper_subclass(
            cls, value.shape, strides=value.stride(), storage_offset=value.storage_offset(),
            dtype=value.dtype, device=REMOTE, requires_grad=False)
        r.value = value
        return r

    __torch_function__ = torch._C._disabled_torch_function_impl

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        raise AssertionError(f"{func} ran on a Remote tensor outside RemoteDevice")


class RemoteDevice(TorchDispatchMode):
    """Runs every operation; logs device <-> host copies as (direction, shape, dtype)."""

    def __init__(self):
        super().__init__()
        self.copies = []        # ("to_host" | "to_device", shape, dtype)
        self.scalar_reads = []  # numel of tensors read with .item()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.__name__ if hasattr(func, "__name__") else str(func)
        if func is torch.ops.aten._to_copy.default:
            src = args[0]
            target = kwargs.get("device")
            remote_src = isinstance(src, Remote)
            remote_out = remote_src if target is None else torch.device(target) == REMOTE
            out = func(src.value if remote_src else src, **dict(kwargs, device=torch.device("cpu")))
            if remote_src != remote_out:
                self.copies.append(("to_device" if remote_out else "to_host", tuple(src.shape),
                                    src.dtype))
            return Remote(out) if remote_out else out
        if func is torch.ops.aten._local_scalar_dense.default and isinstance(args[0], Remote):
            self.scalar_reads.append(args[0].numel())
            return args[0].value.item()
        if func is torch.ops.aten.copy_.default:
            dst, src = args[0], args[1]
            if isinstance(dst, Remote) != isinstance(src, Remote) and src.dim() > 0:
                self.copies.append(("to_device" if isinstance(dst, Remote) else "to_host",
                                    tuple(src.shape), src.dtype))
            (dst.value if isinstance(dst, Remote) else dst).copy_(
                src.value if isinstance(src, Remote) else src)
            return dst
        factory_on_device = "device" in kwargs and kwargs["device"] is not None \
            and torch.device(kwargs["device"]) == REMOTE
        if factory_on_device:
            kwargs = dict(kwargs, device=torch.device("cpu"))
        remote_in = []
        host_in = []

        def unwrap(t):
            if isinstance(t, Remote):
                remote_in.append(t)
                return t.value
            if isinstance(t, torch.Tensor):
                host_in.append(t)
            return t

        plain_args = tree_map(unwrap, args)
        plain_kwargs = tree_map(unwrap, kwargs)
        if remote_in and any(t.dim() > 0 for t in host_in):
            raise RuntimeError(f"{name}: expected all tensors on one device, got a CPU tensor "
                               f"of shape {[tuple(t.shape) for t in host_in if t.dim() > 0]} "
                               f"with device tensors")
        out = func(*plain_args, **plain_kwargs)
        if not (remote_in or factory_on_device):
            return out
        if name.endswith("_") and not name.startswith("_") and remote_in:
            return args[0]   # in place: the Remote argument's value was modified
        return tree_map(lambda t: Remote(t) if isinstance(t, torch.Tensor) else t, out)

    def to_host(self):
        return [c for c in self.copies if c[0] == "to_host"]

    def to_device(self):
        return [c for c in self.copies if c[0] == "to_device"]


class ToDevice(nn.Module):
    def forward(self, x):
        return x.to(REMOTE)


def cnn(width=8, remote=False):
    """Two convs, seeded; with ``remote=True`` the activations move to the device after the
    second conv block, and layers 6 to 8 run there."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),      # 0, 1, 2
        nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),                   # 3, 4
        ToDevice() if remote else nn.Identity(),                            # 5
        nn.MaxPool2d(2), nn.Flatten(), nn.ReLU())                           # 6, 7, 8


def data(n=120, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    x = torch.randn(n, 1, 12, 12, generator=g) + y.view(-1, 1, 1, 1) * 0.5
    return x, y


def numbers(rows):
    keys = ("epoch", "layer", "metric", "count", "mean", "median", "q25", "q75", "min", "max")
    return [tuple(r[k] for k in keys) for r in rows]


def same_rows(a, b):
    """Equal history rows; NaN == NaN (a metric with no values)."""
    assert len(a) == len(b)
    for ra, rb in zip(numbers(a), numbers(b)):
        assert all(x == y or (x != x and y != y) for x, y in zip(ra, rb)), (ra, rb)


# ------------------------------------------------------------------------- the harness

def test_the_harness_logs_copies_and_refuses_mixed_devices():
    with RemoteDevice() as dev:
        a = torch.arange(6.0).to(REMOTE)
        b = (a * 2).reshape(2, 3)
        assert isinstance(b, Remote) and b.device == REMOTE
        assert torch.equal(b.cpu(), torch.tensor([[0.0, 2, 4], [6, 8, 10]]))
        assert (b.sum() > 1).item()
        with pytest.raises(RuntimeError, match="one device"):
            b + torch.ones(2, 3)
    assert dev.copies == [("to_device", (6,), torch.float32), ("to_host", (2, 3), torch.float32)]
    assert dev.scalar_reads == [1]


# ------------------------------------------------------------------------- capture

def test_capture_on_meta_keeps_activations_there():
    model = cnn()[:5].to("meta")           # no values anywhere: any host copy raises
    x, _ = data(50)
    acts = run_probe(model, ["1", "4"], x, batch_size=16)
    assert acts["1"].device.type == "meta" and acts["1"].shape == (50, 8, 12, 12)
    assert acts["4"].device.type == "meta" and acts["4"].shape == (50, 8, 6, 6)
    with ActivationCapture(model, ["4"]) as cap:
        model(x[:3].to("meta"))
    assert cap.collect()["4"].device.type == "meta"


def test_capture_follows_a_model_converted_after_the_probe_was_taken():
    model = cnn()[:5]
    x, _ = data(40)
    model.double()
    acts = capture_probe(model, ["4"], x, batch_size=16)
    assert acts["4"].dtype == torch.float64
    expected = model(x.double())
    assert torch.equal(acts["4"], expected)


# ------------------------------------------------------------------------- tracker

def test_tracker_builds_graphs_on_the_device_and_brings_back_only_per_node_values():
    x, y = data()
    n, layers, k = x.shape[0], ["4", "6", "8"], 10
    host = tg.GeometryTracker(cnn(), layers, (x, y), k=k, progress=False)
    host_rows = host.on_epoch_end(0) + host.on_epoch_end(1)
    dev = RemoteDevice()
    with dev:
        tracker = tg.GeometryTracker(cnn(remote=True), layers, (x, y), k=k, progress=False)
        acts = tracker.capture()
        assert [type(acts[l]) for l in layers] == [torch.Tensor, Remote, Remote]
        del acts
        dev.copies.clear()
        rows = tracker.on_epoch_end(0) + tracker.on_epoch_end(1)
    same_rows(rows, host_rows)
    # What crossed: per-node metric vectors [N] (and include masks), nothing larger; the
    # activations [N, 8, 3, 3] / [N, 72] and the graphs [N, k] stayed on the device.
    back = dev.to_host()
    assert back and all(shape == (n,) for _, shape, _ in back), sorted(set(back))
    # Host -> device: the model's own move of its activations (one batch per epoch), the
    # labels once for both epochs, and the graph of layer "4" (on the host) that layer "6"
    # is compared with, once per epoch.
    to_dev = dev.to_device()
    labels = [c for c in to_dev if c[1] == (n,) and c[2] == torch.long]
    assert len(labels) == 1, to_dev
    graphs = [c for c in to_dev if c[1] == (n, k)]
    assert len(graphs) == 2 * 2, to_dev     # neighbors and weights, two epochs
    batches = [c for c in to_dev if len(c[1]) == 4]
    assert [c[1][0] for c in batches] == [n, n], to_dev   # one probe pass per epoch


def test_tracker_state_round_trip_with_graphs_on_the_device():
    x, y = data()
    layers = ["6", "8"]
    host = tg.GeometryTracker(cnn(), layers, (x, y), k=10, progress=False)
    host.on_epoch_end(0)
    host_rows = host.on_epoch_end(1)
    with RemoteDevice():
        first = tg.GeometryTracker(cnn(remote=True), layers, (x, y), k=10, progress=False)
        first.on_epoch_end(0)
        state = first.state_dict()
        # A checkpoint holds host tensors: it loads on a machine without the device.
        assert all(type(t) is torch.Tensor for t in state.values())
        second = tg.GeometryTracker(cnn(remote=True), layers, (x, y), k=10, progress=False)
        second.load_state_dict(state)
        rows = second.on_epoch_end(1)
    same_rows(rows, host_rows)
    assert any(r["metric"] == "epoch_overlap" for r in rows)


def test_tracker_follows_a_model_converted_to_double_after_creation():
    x, y = data()
    layers = ["4", "8"]
    model = cnn()
    tracker = tg.GeometryTracker(model, layers, (x, y), k=10, progress=False)
    tracker.on_epoch_end(0)
    state = tracker.state_dict()
    model.double()
    rows = tracker.on_epoch_end(1)
    # The reference: the tracker's core as it was after epoch 0, fed the float64 model's
    # activations of float64 inputs.
    opts = _C.TrackerOptions()
    opts.k = 10
    ref = _C.GeometryTrackerCore(layers, opts)
    ref.set_labels(y)
    ref.load_state_dict(state)
    acts = run_probe(model, layers, x.double())
    assert acts["8"].dtype == torch.float64
    same_rows(rows, ref.step(1, acts))


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_half_activations_give_the_metrics_of_their_float32_copy(half):
    x, y = data()
    acts = run_probe(cnn(), ["4", "8"], x)
    low = {k: v.to(half) for k, v in acts.items()}
    widened = {k: v.float() for k, v in low.items()}
    opts = _C.TrackerOptions()
    opts.k = 10
    a, b = _C.GeometryTrackerCore(["4", "8"], opts), _C.GeometryTrackerCore(["4", "8"], opts)
    a.set_labels(y)
    b.set_labels(y)
    same_rows(a.step(0, low), b.step(0, widened))
    # avgpool of the half map equals that of its float32 copy: the mean is taken in float32
    assert torch.equal(_C.reduce_activations(low["4"], "avgpool"),
                       widened["4"].mean(dim=(2, 3)))
    assert _C.reduce_activations(low["8"], "avgpool").dtype == torch.float32


# ------------------------------------------------------------------------- selection

def test_select_models_ranks_on_the_device():
    x, y = data()
    def models(remote):
        out = {"a": cnn(remote=remote), "b": cnn(4, remote=remote)}
        with torch.no_grad():
            for p in out["b"].parameters():
                p.mul_(-0.3)
        return out
    host = select_models(models(False), (x, y), layer="8", k=10)
    dev = RemoteDevice()
    with dev:
        got = select_models(models(True), (x, y), layer="8", k=10)
    assert got == host
    assert dev.to_host() == []                          # only the two LOO errors, as scalars
    labels = [c for c in dev.to_device() if c[1] == (x.shape[0],)]
    assert len(labels) == 1                             # both models on one device: one copy


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_rank_models_half_equals_its_float32_copy(half):
    x, y = data()
    acts = [run_probe(cnn(), ["4"], x)["4"], run_probe(cnn(4), ["4"], x)["4"]]
    low = [a.to(half) for a in acts]
    assert _C.rank_models(["a", "b"], low, y, 10, "cosine", "avgpool") == \
        _C.rank_models(["a", "b"], [a.float() for a in low], y, 10, "cosine", "avgpool")


# ------------------------------------------------------------------------- metrics

def test_functional_metrics_move_labels_to_the_graph(monkeypatch):
    # The user-facing device check refuses devices without a kernel of the operators; the
    # harness's device is one only in name.
    monkeypatch.setattr(_inputs, "_has_kernel", lambda qualname, key: True)
    x, y = data()
    pts = run_probe(cnn(), ["8"], x)["8"]
    g = tg.nnk_graph(pts, 10)
    want = tg.metrics.loo_error(g, y)
    smooth = tg.metrics.label_smoothness(g, y)
    summary = tg.metrics.summarize(tg.metrics.manifold_metrics(pts, g))
    dev = RemoteDevice()
    with dev:
        rg = (g.neighbors.to(REMOTE), g.weights.to(REMOTE))
        got = tg.metrics.loo_error(rg, y.tolist())
        assert isinstance(got[0], Remote)
        assert torch.equal(got[0].cpu(), want[0]) and torch.equal(got[1].cpu(), want[1])
        assert tg.metrics.label_smoothness(rg, y) == smooth
        m = tg.metrics.manifold_metrics(pts.to(REMOTE), rg + (g.error.to(REMOTE),))
        assert tg.metrics.summarize(m) == summary


def test_augmentation_invariance_on_the_device(monkeypatch):
    # (see test_functional_metrics_move_labels_to_the_graph)
    monkeypatch.setattr(_inputs, "_has_kernel", lambda qualname, key: True)
    g = torch.Generator().manual_seed(3)
    feats = torch.randn(60, 6, generator=g)
    augmented = [feats + 0.05 * torch.randn(60, 6, generator=g) for _ in range(2)]
    want = tg.metrics.augmentation_invariance(feats, augmented, k=8)
    with RemoteDevice():
        got = tg.metrics.augmentation_invariance(feats.to(REMOTE), [a.to(REMOTE) for a in augmented],
                                                 k=8)
        got = {name: v.cpu() for name, v in got.items()}
    assert set(got) == set(want)
    for name in want:
        assert torch.equal(got[name], want[name]), name
    assert want["self_share"].mean() > 0.5      # the copies are found: the check has teeth


def test_capture_is_not_changed_by_a_later_in_place_layer():
    # conv -> ReLU(inplace=True) is common; the captured conv output must keep its negatives.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(inplace=True))
    x = torch.randn(30, 5)
    acts = capture_probe(model, ["0"], x, batch_size=8)
    with torch.no_grad():
        want = model[0](x)
    assert (want < 0).any()
    assert torch.allclose(acts["0"], want, rtol=0, atol=1e-6)
