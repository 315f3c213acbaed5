"""GeometryTracker: hooks, probe set, history, memory, distributed, bad input."""
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

import torch_geometry as tg
from torch_geometry import _C
from torch_geometry.tracking import run_probe

from conftest import run_ranks


class SmallCNN(nn.Module):
    def __init__(self, width=8):
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.act1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.act2 = nn.ReLU()
        self.fc = nn.Linear(width * 7 * 7, 10)

    def forward(self, x):
        x = self.pool(self.act1(self.conv1(x)))
        x = self.pool(self.act2(self.conv2(x)))
        return self.fc(x.flatten(1))


def data(n=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 10
    x = torch.randn(n, 1, 28, 28, generator=g) + y.view(-1, 1, 1, 1) * 0.3
    return x, y


def test_history_matches_direct_computation():
    torch.manual_seed(0)
    model = SmallCNN()
    x, y = data()
    tracker = tg.GeometryTracker(model, ["act1", "fc"], (x, y), k=10, progress=False)
    rows = tracker.on_epoch_end(0)
    got = {(r["layer"], r["metric"]): r for r in rows}
    acts = run_probe(model, ["act1", "fc"], x)
    for layer in ["act1", "fc"]:
        a = acts[layer]
        pts = a.mean(dim=(2, 3)) if a.dim() == 4 else a
        g = tg.nnk_graph(pts, 10)
        deg = g.degree.double()
        assert got[(layer, "degree")]["mean"] == pytest.approx(deg.mean().item())
        assert got[(layer, "degree")]["median"] == pytest.approx(deg.median().item())
        assert got[(layer, "degree")]["q25"] == pytest.approx(torch.quantile(deg, 0.25).item())
        assert got[(layer, "error")]["mean"] == pytest.approx(g.error.double().mean().item(), rel=1e-6)
        hard, _ = tg.metrics.loo_error(g, y)
        assert got[(layer, "loo_error")]["mean"] == pytest.approx(hard.double().mean().item())
    # The second layer is compared with the first; no epoch drift before a second epoch.
    assert ("fc", "layer_overlap") in got and ("act1", "layer_overlap") not in got
    assert ("fc", "epoch_overlap") not in got
    rows = tracker.on_epoch_end(1)
    drift = {r["layer"]: r["mean"] for r in rows if r["metric"] == "epoch_overlap"}
    assert drift == {"act1": pytest.approx(1.0), "fc": pytest.approx(1.0)}  # no training: no drift


def test_hooks_removed_and_mode_restored_even_on_error():
    model = SmallCNN()
    x, y = data(100)
    with tg.GeometryTracker(model, ["conv1", "conv2"], (x, y), k=5, progress=False) as t:
        model.train()
        t.on_epoch_end(0)
        assert model.training
        for m in model.modules():
            assert not m._forward_hooks
        model.eval()
        t.on_epoch_end(1)
        assert not model.training

    class Boom(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 4)

        def forward(self, x):
            self.a(x)
            raise RuntimeError("boom")

    bad = Boom()
    t = tg.GeometryTracker(bad, ["a"], torch.randn(50, 4), k=5, progress=False)
    with pytest.raises(RuntimeError, match="boom"):
        t.on_epoch_end(0)
    assert not bad.a._forward_hooks and bad.training


def _rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024


def test_memory_flat_over_100_epochs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 8))
    x = torch.randn(200, 20)
    y = torch.arange(200) % 4
    t = tg.GeometryTracker(model, ["1", "2"], (x, y), k=8, progress=False)
    for e in range(10):
        t.on_epoch_end(e)
    before = _rss_mib()
    for e in range(10, 100):
        t.on_epoch_end(e)
    growth = _rss_mib() - before
    # The history grows by a few KiB per epoch; activations and graphs must not pile up.
    assert growth < 15, f"RSS grew {growth:.1f} MiB over 90 epochs"
    assert len({r["epoch"] for r in t.history}) == 100


def test_probe_subset_is_stratified_and_fixed():
    y = torch.cat([torch.zeros(900), torch.ones(90), torch.full((10,), 2)]).long()
    idx = _C.probe_subset(1000, 100, y, 0)
    counts = torch.bincount(y[idx], minlength=3).tolist()
    assert counts == [90, 9, 1]
    assert torch.equal(idx, _C.probe_subset(1000, 100, y, 0))
    assert bool((idx[1:] > idx[:-1]).all())
    x = torch.randn(1000, 5)
    model = nn.Sequential(nn.Linear(5, 5))
    t = tg.GeometryTracker(model, ["0"], (x, y), max_points=100, k=5, progress=False)
    assert t.probe_x.shape[0] == 100 and torch.equal(t.probe_y, y[idx])


def test_probe_from_dataloader_and_every():
    x, y = data(120)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)
    model = SmallCNN()
    t = tg.GeometryTracker(model, ["fc"], loader, k=5, every=2, progress=False)
    assert t.probe_x.shape[0] == 120 and torch.equal(t.probe_y, y)
    assert t.on_epoch_end(1) is None
    assert t.on_epoch_end(2) is not None
    assert {r["epoch"] for r in t.history} == {2}


def test_json_csv_plot_and_cli(tmp_path):
    x, y = data(150)
    t = tg.GeometryTracker(SmallCNN(), ["conv1", "fc"], (x, y), k=5, progress=False)
    for e in range(3):
        t.on_epoch_end(e)
    t.to_json(str(tmp_path / "history.json"))
    t.to_csv(str(tmp_path / "history.csv"))
    data_json = json.loads((tmp_path / "history.json").read_text())
    assert data_json["layers"] == ["conv1", "fc"] and len(data_json["history"]) == len(t.history)
    lines = (tmp_path / "history.csv").read_text().strip().splitlines()
    assert lines[0].startswith("epoch,layer,metric") and len(lines) == len(t.history) + 1
    png = t.plot(str(tmp_path / "geometry.png"))
    assert os.path.getsize(png) > 10_000
    out = subprocess.run([sys.executable, "-m", "torch_geometry", "plot", str(tmp_path / "history.json"),
                          "--out", str(tmp_path / "again.png")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert os.path.getsize(tmp_path / "again.png") > 10_000


def test_tuple_outputs_use_first_tensor_and_dicts_are_refused():
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(6, 6)

        def forward(self, x):
            return self.lin(x), x

    class Wrap(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            out = self.inner(x)
            return out[0] if isinstance(out, tuple) else out["a"]

    x = torch.randn(60, 6)
    t = tg.GeometryTracker(Wrap(Pair()), ["inner"], x, k=5, progress=False)
    rows = t.on_epoch_end(0)
    acts = run_probe(t.model, ["inner.lin"], x)["inner.lin"]
    deg = tg.nnk_graph(acts, 5).degree.double().mean().item()
    assert [r["mean"] for r in rows if r["metric"] == "degree"] == [pytest.approx(deg)]

    class DictOut(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(6, 6)

        def forward(self, x):
            return {"a": self.lin(x)}

    t = tg.GeometryTracker(Wrap(DictOut()), ["inner"], x, k=5, progress=False)
    with pytest.raises(TypeError, match="dict"):
        t.on_epoch_end(0)


def test_bad_input():
    model = SmallCNN()
    x, y = data(60)
    with pytest.raises(ValueError, match=r"'conv3' is not a module.*closest: \['conv2', 'conv1'\]"):
        tg.GeometryTracker(model, ["conv3"], (x, y))
    with pytest.raises(ValueError, match="needs more than k = 25"):
        tg.GeometryTracker(model, ["conv1"], (x[:20], y[:20]))
    with pytest.raises(ValueError, match=r"labels should have shape \[60\]"):
        tg.GeometryTracker(model, ["conv1"], x, labels=y[:50], k=5)
    with pytest.raises(ValueError, match="integer class indices"):
        tg.GeometryTracker(model, ["conv1"], x, labels=y.float(), k=5)
    for every in (0, -1, 1.5):
        with pytest.raises(ValueError, match="every should be a positive integer"):
            tg.GeometryTracker(model, ["conv1"], (x, y), k=5, every=every)
    with pytest.raises(RuntimeError, match="reduce should be"):
        tg.GeometryTracker(model, ["conv1"], (x, y), k=5, reduce="maxpool")
    with pytest.raises(RuntimeError, match="listed twice"):
        tg.GeometryTracker(model, ["conv1", "conv1"], (x, y), k=5)


# ------------------------------------------------------------------ distributed
_WORKER = r"""
import json, os, sys, torch, torch.distributed as dist
sys.path.insert(0, os.environ["TEST_DIR"])
from test_tracking import SmallCNN, data
import torch_geometry as tg
rank, world, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
torch.manual_seed(0)
model = SmallCNN()
x, y = data(203)   # 203 = unequal shards over 2 ranks
t = tg.GeometryTracker(model, ["act1", "fc"], (x, y), k=8, progress=False)
for e in range(2):
    t.on_epoch_end(e)
with open(f"{out}.{rank}", "w") as f:
    f.write(t.to_json())
dist.destroy_process_group()
"""


def test_distributed_two_ranks_equal_single_process(tmp_path):
    out = run_ranks(tmp_path, _WORKER)
    h0 = json.loads(open(out + ".0").read())["history"]
    h1 = json.loads(open(out + ".1").read())["history"]
    assert h0 == h1
    torch.manual_seed(0)
    model = SmallCNN()
    x, y = data(203)
    t = tg.GeometryTracker(model, ["act1", "fc"], (x, y), k=8, progress=False)
    for e in range(2):
        t.on_epoch_end(e)
    single = json.loads(t.to_json())["history"]
    assert len(single) == len(h0)
    # Ranks run other batch compositions than the single process, so float32 activations
    # differ by rounding (~1e-7), which continuous metrics carry at ~1e-5.
    for a, b in zip(single, h0):
        assert (a["epoch"], a["layer"], a["metric"]) == (b["epoch"], b["layer"], b["metric"])
        for key in ("mean", "median", "q25", "q75"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), (a["metric"], a["layer"], key)
