"""NNK early stopping driven by scripted score streams: the exact epochs at which channels
freeze and training stops, in both modes, with check_every > 1, at the patience boundary,
and which weights a frozen channel keeps (best-check vs current)."""
import pytest
import torch
import torch.nn as nn

import torch_geometry  # noqa: F401  (loads the library)
from torch_geometry import _C
from torch_geometry.callbacks import NNKEarlyStopping

INF = float("inf")


def core(mode, patience, min_delta=0.0, restore=True, channels=3):
    options = _C.EarlyStoppingOptions()
    options.mode, options.patience, options.min_delta = mode, patience, min_delta
    options.restore_best_weights = restore
    c = _C.NNKEarlyStoppingCore(options)
    params = [torch.zeros(channels, 2), torch.zeros(channels)]
    c.watch(params)
    return c, params


def run_stream(c, stream):
    """Feeds scores[e] at epoch e until a stop; returns the stop epoch (None if none)."""
    for epoch, scores in enumerate(stream):
        if c.update(epoch, list(scores)):
            return epoch
    return None


@pytest.mark.parametrize("patience", [1, 2, 3])
def test_layer_mode_stops_after_exactly_patience_checks_without_improvement(patience):
    c, _ = core("layer", patience)
    # Best at epoch 1; epochs 2.. do not improve (equal is not an improvement).
    stream = [[0.5], [0.4]] + [[0.4]] * 10
    assert run_stream(c, stream) == 1 + patience
    assert c.best_epoch == 1 and c.best_score == 0.4
    assert c.checks == 2 + patience


def test_layer_mode_min_delta_and_reset_of_the_counter():
    c, _ = core("layer", patience=2, min_delta=0.05)
    # 0.47 is not < 0.5 - 0.05: no improvement (wait 1); 0.44 is: counter resets;
    # then 0.42, 0.40 (not < 0.39) -> wait 1, 2 -> stop at epoch 4.
    stream = [[0.5], [0.47], [0.44], [0.42], [0.40], [0.1]]
    assert run_stream(c, stream) == 4
    assert c.best_epoch == 2 and c.wait_counts == [2]
    assert "not improved for 2 checks" in c.stop_reason


def test_channel_mode_freezes_each_channel_at_its_own_epoch_and_stops_when_all_are():
    c, _ = core("channel", patience=2, channels=3)
    stream = [
        [0.9, 0.9, 0.9],   # epoch 0: all improve from inf
        [0.9, 0.8, 0.8],   # 1: ch0 wait 1
        [0.9, 0.8, 0.7],   # 2: ch0 wait 2 -> frozen at 2; ch1 wait 1
        [0.1, 0.8, 0.7],   # 3: ch0 frozen, its score ignored; ch1 wait 2 -> frozen; ch2 wait 1
        [0.1, 0.1, 0.6],   # 4: ch2 improves
        [0.1, 0.1, 0.6],   # 5: ch2 wait 1
        [0.1, 0.1, 0.6],   # 6: ch2 wait 2 -> frozen -> stop
        [0.0, 0.0, 0.0],
    ]
    assert run_stream(c, stream) == 6
    assert c.frozen_epochs == [2, 3, 6]
    assert c.frozen_channels == [0, 1, 2]
    assert c.best_scores == [0.9, 0.8, 0.6]
    assert c.stop_reason == "every channel is frozen"
    # After the stop nothing changes any more.
    assert c.update(7, [0.0, 0.0, 0.0]) is True and c.checks == 7


@pytest.mark.parametrize("restore", [True, False])
def test_frozen_channel_keeps_its_best_check_weights_or_its_current_ones(restore):
    c, (w, b) = core("channel", patience=2, restore=restore, channels=2)
    stream = [[0.5, 0.5], [0.6, 0.4], [0.6, 0.3], [0.6, 0.2]]
    for epoch, scores in enumerate(stream):
        # The "optimiser" moves every parameter to a value naming the epoch; the optimizer
        # hook then re-imposes the frozen channels.
        w.fill_(float(epoch + 1))
        b.fill_(float(-(epoch + 1)))
        c.enforce()
        c.update(epoch, scores)
    # Channel 0: best at epoch 0, frozen at epoch 2.
    assert c.frozen_epochs == [2, -1]
    expected = 1.0 if restore else 3.0      # epoch 0's values, or epoch 2's
    assert torch.equal(w[0], torch.full((2,), expected)) and b[0].item() == -expected
    # Later moves are undone by enforce(); the unfrozen channel keeps moving.
    w.fill_(10.0)
    b.fill_(10.0)
    c.enforce()
    assert torch.equal(w[0], torch.full((2,), expected)) and b[0].item() == -expected
    assert torch.equal(w[1], torch.full((2,), 10.0)) and b[1].item() == 10.0


def test_layer_mode_restores_the_best_checks_weights_on_stop():
    c, (w, b) = core("layer", patience=1)
    for epoch, score in enumerate([0.5, 0.3, 0.4]):
        w.fill_(float(epoch))
        b.fill_(float(epoch))
        c.update(epoch, [score])
    assert c.stopped_epoch == 2
    assert bool((w == 1.0).all()) and bool((b == 1.0).all())


def test_non_finite_score_stops_without_freezing_or_restoring():
    c, (w, _) = core("channel", patience=1, channels=2)
    c.update(0, [0.5, 0.5])
    w.fill_(7.0)
    assert c.update(1, [0.5, float("nan")]) is True
    assert c.frozen_channels == [] and "non-finite" in c.stop_reason
    assert bool((w == 7.0).all())


def test_update_refuses_scores_that_do_not_fit():
    c, _ = core("channel", patience=1, channels=3)
    with pytest.raises(RuntimeError, match="the layer has 2 channels but a watched parameter"):
        c.update(0, [0.1, 0.2])
    c.update(0, [0.1, 0.2, 0.3])
    with pytest.raises(RuntimeError, match="expects one per channel"):
        c.update(1, [])
    lc, _ = core("layer", patience=1)
    with pytest.raises(RuntimeError, match="layer mode expects one score, got 2"):
        lc.update(0, [0.1, 0.2])


# ------------------------------------------------------------------ through the callback
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(3 * 6 * 6, 4)

    def forward(self, x):
        return self.fc(self.relu(self.conv(x)).flatten(1))


@pytest.mark.parametrize("mode,check_every,patience,expected_checks,expected_stop", [
    # A constant score: the first check improves from inf, then `patience` more checks.
    ("layer", 1, 2, [0, 1, 2], 2),
    ("layer", 3, 2, [0, 3, 6], 6),
    ("channel", 2, 1, [0, 2], 2),
    ("channel", 4, 3, [0, 4, 8, 12], 12),
])
def test_callback_checks_every_check_every_epochs_and_stops_at_the_exact_epoch(
        monkeypatch, mode, check_every, patience, expected_checks, expected_stop):
    torch.manual_seed(0)
    model = Net()
    x, y = torch.randn(40, 1, 8, 8), torch.arange(40) % 4
    es = NNKEarlyStopping(model, "relu", (x, y), mode=mode, patience=patience, k=5,
                          check_every=check_every, verbose=False)
    width = 1 if mode == "layer" else 3
    calls = []
    monkeypatch.setattr(es, "_score", lambda acts: calls.append(acts.shape) or [0.5] * width)
    checked, stop = [], None
    for epoch in range(100):
        before = len(calls)
        if es.step(epoch):
            stop = epoch
        if len(calls) > before:
            checked.append(epoch)
        if stop is not None:
            break
    assert checked == expected_checks
    assert stop == expected_stop and es.stopped_epoch == expected_stop
    assert calls[0] == (40, 3, 6, 6)
