"""The training state objects under abuse: refused state dicts leave them as they were,
threads share them safely, and their JSON survives any stop reason."""
import io
import json
import threading

import pytest
import torch
import torch.nn as nn

import torch_geometry as tg
from torch_geometry import _C
from torch_geometry.callbacks import NNKEarlyStopping


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        return self.fc(self.relu(self.conv(x)).flatten(1))


def probe(n=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    return torch.randn(n, 1, 8, 8, generator=g) + y.view(-1, 1, 1, 1).float(), y


def callback(mode="channel", **kw):
    torch.manual_seed(0)
    model = Net()
    es = NNKEarlyStopping(model, "relu", probe(), mode=mode, k=5, verbose=False, **kw)
    return model, es


def same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


# ------------------------------------------------------------------ load_state_dict
def corruptions(state, channels):
    """(description, corrupted state) pairs; each must be refused."""
    def with_(**changes):
        s = dict(state)
        for k, v in changes.items():
            if v is None:
                del s[k]
            else:
                s[k] = v
        return s

    long, dbl = torch.long, torch.double
    yield "empty wait", with_(wait=torch.zeros(0, dtype=long))
    yield "wait one short", with_(wait=torch.zeros(channels - 1, dtype=long))
    yield "frozen_epoch one long", with_(frozen_epoch=torch.full((channels + 1,), -1, dtype=long))
    yield "best_scores one long", with_(best_scores=torch.zeros(channels + 1, dtype=dbl))
    yield "last_scores one short", with_(last_scores=torch.zeros(channels - 1, dtype=dbl))
    yield "float wait", with_(wait=torch.zeros(channels, dtype=torch.float32))
    yield "negative wait", with_(wait=torch.full((channels,), -1, dtype=long))
    yield "frozen_epoch < -1", with_(frozen_epoch=torch.full((channels,), -5, dtype=long))
    yield "nan best", with_(best_scores=torch.full((channels,), float("nan"), dtype=dbl))
    yield "2-D wait", with_(wait=torch.zeros(channels, 1, dtype=long))
    yield "counters short", with_(counters=torch.zeros(2, dtype=long))
    yield "negative checks", with_(counters=torch.tensor([-1, -1, -3]))
    yield "missing key", with_(counters=None)
    yield "bad stop_reason byte", with_(stop_reason=torch.tensor([65, 300]))
    yield "snapshot shape", with_(**{"best_params.0": torch.zeros(channels + 1, 1, 3, 3)})
    yield "integer snapshot", with_(**{"best_params.1": torch.zeros(channels, dtype=long)})
    yield "extra snapshot", with_(**{"best_params.2": torch.zeros(channels)})
    yield "missing snapshot", with_(**{"best_params.1": None})


@pytest.mark.parametrize("mode", ["channel", "layer"])
def test_refused_state_leaves_the_callback_as_it_was_and_step_still_works(mode):
    model, es = callback(mode=mode, patience=3)
    es.step(0)
    es.step(1)
    good = es.state_dict()
    channels = 4 if mode == "channel" else 1
    assert good["wait"].shape == (channels,)
    for what, bad in corruptions(good, channels):
        with pytest.raises(RuntimeError, match="NNKEarlyStopping.load_state_dict"):
            es.load_state_dict(bad)
        same_state(es.state_dict(), good)          # nothing half-loaded
    es.step(2)                                    # reads every vector: no crash
    assert es._core.checks == 3


def test_a_layer_mode_state_is_refused_by_a_channel_mode_callback():
    _, layer_es = callback(mode="layer")
    layer_es.step(0)
    _, es = callback(mode="channel")
    es.step(0)
    before = es.state_dict()
    state = layer_es.state_dict()
    with pytest.raises(RuntimeError, match="load_state_dict"):
        es.load_state_dict(state)
    same_state(es.state_dict(), before)


def test_state_round_trips_through_torch_save_into_a_fresh_callback():
    model, es = callback(patience=1)
    for e in range(3):
        with torch.no_grad():
            model.conv.weight.mul_(1.1)
        es.step(e)
    buf = io.BytesIO()
    torch.save(es.state_dict(), buf)
    buf.seek(0)
    _, fresh = callback(patience=1)
    fresh.load_state_dict(torch.load(buf))
    same_state(fresh.state_dict(), es.state_dict())
    assert fresh.frozen_channels == es.frozen_channels


def test_stop_reason_with_bytes_that_are_not_utf8_gives_valid_json():
    _, es = callback()
    es.step(0)
    state = es.state_dict()
    raw = b"bad \xff\xfe byte, half \xe2\x82 euro, whole \xe2\x82\xac, quote \" nl \n"
    state["stop_reason"] = torch.tensor(list(raw), dtype=torch.long)
    es.load_state_dict(state)
    parsed = json.loads(es._core.to_json())
    assert parsed["stop_reason"] == raw.decode("utf-8", errors="replace")
    assert es.stop_reason == raw.decode("utf-8", errors="replace")
    # The bytes themselves survive a save and load.
    assert torch.equal(es.state_dict()["stop_reason"], state["stop_reason"])


# ------------------------------------------------------------------ threads
def test_threads_share_one_early_stopping_core():
    options = _C.EarlyStoppingOptions()
    options.mode, options.patience, options.k = "channel", 10_000, 5
    core = _C.NNKEarlyStoppingCore(options)
    torch.manual_seed(0)
    acts = torch.relu(torch.randn(60, 4, 3, 3))
    y = torch.arange(60) % 3
    core.set_labels(y)
    weight, bias = torch.zeros(4, 1, 3, 3), torch.zeros(4)
    core.watch([weight, bias])
    errors = []
    steps_per_thread, threads = 15, 3

    def stepper(t):
        try:
            for i in range(steps_per_thread):
                core.step(t * 1000 + i, acts)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    def meddler():
        try:
            for _ in range(200):
                core.enforce()
                core.mask_gradients()
                s = core.state_dict()
                core.to_json()
                core.rebind([weight, bias])
                _ = core.wait_counts, core.best_scores, core.frozen_channels, s
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    workers = [threading.Thread(target=stepper, args=(t,)) for t in range(threads)]
    workers.append(threading.Thread(target=meddler))
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors, errors
    # Same activations at every check: one improvement, then one more wait per check;
    # no check lost to a race.
    n = steps_per_thread * threads
    assert core.checks == n
    assert core.wait_counts == [n - 1] * 4


def test_step_racing_load_state_dict_keeps_every_state_whole():
    options = _C.EarlyStoppingOptions()
    options.mode, options.patience, options.k = "channel", 10_000, 5
    core = _C.NNKEarlyStoppingCore(options)
    torch.manual_seed(1)
    acts = torch.relu(torch.randn(60, 4, 3, 3))
    core.set_labels(torch.arange(60) % 3)
    core.watch([torch.zeros(4, 2), torch.zeros(4)])
    core.step(0, acts)
    errors = []

    def stepper():
        try:
            for i in range(1, 30):
                core.step(i, acts)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    def loader():
        try:
            for _ in range(100):
                core.load_state_dict(core.state_dict())
                core.enforce()
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    workers = [threading.Thread(target=stepper), threading.Thread(target=loader)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors, errors
    # A loaded snapshot may undo later checks, but every state keeps wait = checks - 1.
    assert 1 <= core.checks <= 30
    assert core.wait_counts == [core.checks - 1] * 4


def test_threads_stepping_one_tracker_record_each_epoch_once():
    torch.manual_seed(0)
    layers = ["a", "b"]
    options = _C.TrackerOptions()
    options.k = 5
    core = _C.GeometryTrackerCore(layers, options)
    core.set_labels(torch.arange(50) % 5)
    acts = {"a": torch.randn(50, 6), "b": torch.randn(50, 4, 2, 2)}
    errors, results = [], {}
    barrier = threading.Barrier(3)

    def stepper(t):
        try:
            for epoch in range(6):
                barrier.wait()
                results[(t, epoch)] = core.step(epoch, acts)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    def reader():
        try:
            for _ in range(6):
                barrier.wait()
                for _ in range(20):
                    core.to_json(), core.to_csv(), core.history, core.state_dict()
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    workers = [threading.Thread(target=stepper, args=(t,)) for t in range(2)]
    workers.append(threading.Thread(target=reader))
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors, errors
    history = core.history
    per_epoch = {e: [r for r in history if r["epoch"] == e] for e in range(6)}
    # Each (epoch, layer, metric) once, and both threads got the same rows.
    for e, rows in per_epoch.items():
        keys = [(r["layer"], r["metric"]) for r in rows]
        assert len(keys) == len(set(keys)) and ("b", "layer_overlap") in keys
        assert results[(0, e)] == results[(1, e)] == rows
    assert len(history) == sum(len(r) for r in per_epoch.values())
