"""GeometryTracker.log_to: the history written as TensorBoard scalars, read back with
TensorBoard's own event reader."""
import math

import pytest
import torch
import torch.nn as nn
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

import torch_geometry
from torch_geometry.tensorboard import STATISTICS, row_scalars, write_history


def _tracked_run(epochs=3):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(),
                          nn.Linear(8, 3))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(150, 10, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    tracker = torch_geometry.GeometryTracker(model, ["1", "3"], (x, y), k=8, progress=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for epoch in range(epochs):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        tracker.on_epoch_end(epoch)
    return tracker


def _read(logdir):
    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def _same(stored, expected):
    # event files hold float32 values
    if math.isnan(expected):
        return math.isnan(stored)
    return stored == pytest.approx(expected, rel=1e-6, abs=1e-30)


def test_log_to_writes_every_history_value(tmp_path):
    tracker = _tracked_run()
    history = tracker.history
    with SummaryWriter(str(tmp_path)) as writer:
        written = tracker.log_to(writer)
    assert written == len(history) * len(STATISTICS)
    scalars = _read(tmp_path)
    expected_steps = {}
    for row in history:
        base = f"geometry/{row['layer']}/{row['metric']}"
        for stat in STATISTICS:
            tag = base if stat == "mean" else f"{base}/{stat}"
            expected_steps.setdefault(tag, set()).add(row["epoch"])
            assert _same(scalars[tag][row["epoch"]], row[stat]), (tag, row)
    # nothing else was written: every tag holds exactly the epochs of its rows
    assert {tag: set(by_step) for tag, by_step in scalars.items()} == expected_steps
    assert {row["epoch"] for row in history} == {0, 1, 2}
    # the metrics the tracker measures appear for both layers
    for layer in ("1", "3"):
        for metric in ("loo_error", "degree", "local_dim", "epoch_overlap"):
            assert f"geometry/{layer}/{metric}" in scalars


def test_log_to_one_epoch_writes_only_its_rows(tmp_path):
    tracker = _tracked_run(epochs=2)
    with SummaryWriter(str(tmp_path)) as writer:
        written = tracker.log_to(writer, epoch=1)
    rows = [r for r in tracker.history if r["epoch"] == 1]
    assert written == len(rows) * len(STATISTICS)
    scalars = _read(tmp_path)
    for row in rows:
        tag = f"geometry/{row['layer']}/{row['metric']}"
        assert list(scalars[tag]) == [1]
        assert _same(scalars[tag][1], row["mean"])


def test_row_scalars_names_and_refusals():
    row = {"epoch": 4, "layer": "features.0", "metric": "diameter", "count": 10, "mean": 0.5,
           "median": 0.25, "q25": 0.125, "q75": 0.75, "min": 0.0, "max": 1.0}
    assert row_scalars(row, ("mean", "q75")) == {"geometry/features.0/diameter": 0.5,
                                                 "geometry/features.0/diameter/q75": 0.75}
    with pytest.raises(ValueError, match=r"statistics should be among .* got \['std'\]"):
        row_scalars(row, ("mean", "std"))
    with pytest.raises(TypeError, match="writer should have add_scalar"):
        write_history(object(), [row])
