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
    # Labels reach the C++ check as given (float labels are not truncated on the way).
    with pytest.raises(RuntimeError, match=r"integer class indices.*got Float"):
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
# Leave without running exit-time destructors: with torch 2.15 a worker sometimes aborted at
# exit ("terminate called without an active exception") after its results were written.
os._exit(0)
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


# ------------------------------------------------------------------ every metric, trained
def _summary(values, include=None):
    """The tracker's summary of a per-node metric, computed independently with numpy."""
    import numpy as np

    v = values.double().numpy()
    keep = np.isfinite(v) if include is None else np.isfinite(v) & include.numpy()
    v = np.sort(v[keep])
    return {"count": len(v), "mean": v.mean(), "median": np.quantile(v, 0.5),
            "q25": np.quantile(v, 0.25), "q75": np.quantile(v, 0.75), "min": v.min(),
            "max": v.max()}


def test_every_metric_of_two_trained_epochs_matches_a_direct_computation():
    torch.manual_seed(0)
    model = SmallCNN()
    x, y = data(240)
    layers, k, alpha = ["act1", "act2", "fc"], 8, 0.2      # alpha not the default 0.05
    tracker = tg.GeometryTracker(model, layers, (x, y), k=k, alpha=alpha, progress=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    previous = None
    for epoch in range(2):
        for s in range(0, 240, 40):                     # train: the geometry moves
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[s:s + 40]), y[s:s + 40]).backward()
            opt.step()
        rows = tracker.on_epoch_end(epoch)
        got = {(r["layer"], r["metric"]): r for r in rows}
        acts = run_probe(model, layers, x)
        graphs = {}
        for i, layer in enumerate(layers):
            a = acts[layer]
            pts = a.mean(dim=(2, 3)) if a.dim() == 4 else a    # the default reduce: avgpool
            g = tg.nnk_graph(pts, k)
            graphs[layer] = g
            m = tg.metrics.manifold_metrics(pts, g, alpha=alpha)
            connected = m["degree"] > 0
            hard, soft = tg.metrics.loo_error(g, y)
            expected = {
                "degree": _summary(m["degree"]),
                "diameter": _summary(m["diameter"], connected),
                "local_dim": _summary(m["local_dim"], connected),
                "log_volume": _summary(m["log_volume"], connected),
                "curvature": _summary(m["curvature"], connected),
                "error": _summary(g.error),
                "isolated": _summary((m["degree"] == 0).double()),
                "loo_error": _summary(hard),
                "loo_soft_error": _summary(soft),
                "label_smoothness": _summary(
                    torch.tensor([tg.metrics.label_smoothness(g, y)], dtype=torch.float64)),
            }
            if i > 0:
                expected["layer_overlap"] = _summary(
                    tg.metrics.neighborhood_overlap(g, graphs[layers[i - 1]]))
            if previous is not None:
                expected["epoch_overlap"] = _summary(
                    tg.metrics.neighborhood_overlap(g, previous[layer]))
            assert {mt for (l, mt) in got if l == layer} == set(expected), layer
            for metric, want in expected.items():
                row = got[(layer, metric)]
                for stat, value in want.items():
                    assert row[stat] == pytest.approx(value, rel=1e-9, abs=1e-12), \
                        (epoch, layer, metric, stat)
        if previous is not None:
            # Training moved the graphs: the drift is measured, not a self-comparison.
            assert got[("act2", "epoch_overlap")]["mean"] < 0.999
        previous = graphs


# ------------------------------------------------------------------ resume, repeats, tqdm
def _perturb(model, epoch):
    with torch.no_grad():
        g = torch.Generator().manual_seed(100 + epoch)
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))


def test_state_dict_resumes_the_history_and_the_epoch_drift():
    import io

    x, y = data(120)
    torch.manual_seed(0)
    model = SmallCNN()
    full = tg.GeometryTracker(model, ["conv1", "fc"], (x, y), k=6, progress=False)
    for e in range(3):
        _perturb(model, e)
        full.on_epoch_end(e)
    torch.manual_seed(0)
    model = SmallCNN()
    first = tg.GeometryTracker(model, ["conv1", "fc"], (x, y), k=6, progress=False)
    for e in range(2):
        _perturb(model, e)
        first.on_epoch_end(e)
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    resumed = tg.GeometryTracker(model, ["conv1", "fc"], (x, y), k=6, progress=False)
    resumed.load_state_dict(torch.load(buf))
    assert resumed.history == first.history
    _perturb(model, 2)
    rows = resumed.on_epoch_end(2)
    assert any(r["metric"] == "epoch_overlap" for r in rows)
    assert resumed.history == full.history
    assert resumed.to_json() == full.to_json()


def test_refused_tracker_state_leaves_it_unchanged():
    x, y = data(80)
    t = tg.GeometryTracker(SmallCNN(), ["conv1", "fc"], (x, y), k=5, progress=False)
    t.on_epoch_end(0)
    good = t.state_dict()
    other = tg.GeometryTracker(SmallCNN(), ["fc"], (x, y), k=5, progress=False)
    with pytest.raises(RuntimeError, match="the state tracks layers"):
        other.load_state_dict(good)
    bad_k = tg.GeometryTracker(SmallCNN(), ["conv1", "fc"], (x, y), k=7, progress=False)
    with pytest.raises(RuntimeError, match=r"k = 7"):
        bad_k.load_state_dict(good)
    before = t.history
    for key, value in [("history.layer", good["history.layer"] + 5),
                       ("history.stats", good["history.stats"][:, :5]),
                       ("history.epoch", good["history.epoch"].float()),
                       ("last_epoch", torch.zeros(0, dtype=torch.long)),
                       ("previous.fc.neighbors", good["previous.fc.neighbors"] + 1000)]:
        with pytest.raises(RuntimeError, match="GeometryTracker.load_state_dict"):
            t.load_state_dict({**good, key: value})
        assert t.history == before, key
    with pytest.raises(RuntimeError, match="missing key"):
        t.load_state_dict({k: v for k, v in good.items() if k != "history.hist"})


def test_the_same_epoch_twice_records_once_and_going_back_is_refused():
    x, y = data(80)
    t = tg.GeometryTracker(SmallCNN(), ["fc"], (x, y), k=5, progress=False)
    rows = t.on_epoch_end(3)
    assert t.on_epoch_end(3) == rows
    assert len(t.history) == len(rows)
    with pytest.raises(RuntimeError, match="comes before the last recorded epoch 3"):
        t.on_epoch_end(2)
    assert len(t.history) == len(rows)


def test_progress_bars_default_off_when_stderr_is_not_a_terminal(monkeypatch):
    import io

    x, y = data(60)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert tg.GeometryTracker(SmallCNN(), ["fc"], (x, y), k=5).progress is False
    assert tg.GeometryTracker(SmallCNN(), ["fc"], (x, y), k=5, progress=True).progress is True

    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", Tty())
    assert tg.GeometryTracker(SmallCNN(), ["fc"], (x, y), k=5).progress is True
