"""Same answers everywhere: the Python tracker (forward hooks + the bound C++ core) and a
LibTorch program running the C++ GeometryTracker on the same activations agree to 1e-6.

The activations the Python tracker captured are handed to C++ inside a scripted module's
buffers (torch::jit::load + attr); build/torch_geometry_tracker_replay prints the C++
history as JSON.
"""
import json
import math
import subprocess

import pytest
import torch
import torch.nn as nn

from torch_geometry.tracking import GeometryTracker


class _Saved(nn.Module):
    def __init__(self, tensors, attrs):
        super().__init__()
        for name, t in tensors.items():
            self.register_buffer(name, t)
        for name, v in attrs.items():
            setattr(self, name, v)

    def forward(self) -> int:
        return 0


def _model():
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 7 * 7, 16), nn.ReLU(), nn.Linear(16, 4))


@pytest.mark.parametrize("kernel, reduce", [("cosine", "avgpool"), ("gaussian", "flatten")])
def test_python_and_cpp_trackers_agree(tmp_path, build_dir, kernel, reduce):
    replay = build_dir / "torch_geometry_tracker_replay"
    if not replay.exists():
        pytest.fail(f"{replay} missing: build the CMake tree first (make build)")
    torch.manual_seed(0)
    n = 240
    y = torch.arange(n) % 4
    x = torch.randn(n, 1, 14, 14) + y.view(-1, 1, 1, 1).float() * 0.4
    model = _model()
    layers = ["1", "4", "7"]  # conv maps [N, 6, 14, 14], [N, 8, 7, 7] and a vector [N, 16]
    k, alpha, bins = 10, 0.05, 20
    tracker = GeometryTracker(model, layers, (x, y), k=k, kernel=kernel, reduce=reduce,
                              progress=False, alpha=alpha)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    tensors, epochs = {"labels": tracker.probe_y}, []
    for epoch in range(3):
        for _ in range(3):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        tracker.on_epoch_end(epoch)
        acts = tracker.capture()  # eval mode + no_grad: the activations the tracker saw
        for li, name in enumerate(layers):
            tensors[f"act_{len(epochs)}_{li}"] = acts[name]
        epochs.append(epoch)
    saved = torch.jit.script(_Saved(tensors, dict(
        layers=layers, epochs=epochs, k=k, kernel=kernel, reduce=reduce, alpha=alpha,
        bins=bins, has_labels=True)))
    path = tmp_path / "activations.pt"
    saved.save(str(path))

    out = subprocess.run([str(replay), str(path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    cpp = json.loads(out.stdout)
    py = tracker.history
    assert cpp["layers"] == layers
    assert len(cpp["history"]) == len(py) > 0
    metrics = {r["metric"] for r in py}
    assert {"loo_error", "epoch_overlap", "layer_overlap", "local_dim"} <= metrics
    for a, b in zip(py, cpp["history"]):
        assert (a["epoch"], a["layer"], a["metric"], a["count"]) == \
            (b["epoch"], b["layer"], b["metric"], b["count"])
        for key in ("mean", "median", "q25", "q75", "min", "max"):
            va = a[key]
            vb = math.nan if b[key] is None else b[key]
            if math.isnan(va):
                assert math.isnan(vb), (a, b, key)
            else:
                assert vb == pytest.approx(va, rel=1e-6, abs=1e-6), (a["layer"], a["metric"], key)


def test_early_stopping_state_as_json_from_the_shared_core():
    from torch_geometry import _C

    opts = _C.EarlyStoppingOptions()
    opts.mode, opts.patience, opts.min_delta, opts.k = "channel", 1, 2.0, 5
    core = _C.NNKEarlyStoppingCore(opts)
    torch.manual_seed(1)
    weight, bias = torch.randn(3, 2, 3, 3), torch.randn(3)
    core.watch([weight, bias])
    core.set_labels(torch.arange(40) % 2)
    acts = torch.relu(torch.randn(40, 3, 4, 4))
    assert not core.step(0, acts)
    assert core.step(1, acts)  # min_delta 2 cannot be met: every channel frozen at check 2
    state = json.loads(core.to_json())
    assert state["options"]["mode"] == "channel" and state["checks"] == 2
    assert state["frozen"] == [{"channel": c, "epoch": 1} for c in range(3)]
    assert state["stopped_epoch"] == 1 and state["should_stop"] is True
    assert state["stop_reason"] == core.stop_reason
    assert state["best_scores"] == pytest.approx(core.best_scores)
