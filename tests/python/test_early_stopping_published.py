"""The published semantics of DeepNNK / channel-wise DeepNNK early stopping on small scripted
cases: freeze in place (bitwise), the last-improvement model on stop, min_delta="auto" at its
exact threshold, smoothing, the whole probe as nodes, their state through a resume, and the
scoring dtype/device rules (float16/bfloat16 scored in float32, a model moved after the
callback was created)."""
import copy
import math

import pytest
import torch
import torch.nn as nn

import torch_geometry  # noqa: F401  (loads the library)
from torch_geometry import _C
from torch_geometry.callbacks import NNKEarlyStopping


class Net(nn.Module):
    """A conv with 3 channels, BatchNorm (buffers that training moves) and a head."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)
        self.bn = nn.BatchNorm2d(3)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(3 * 6 * 6, 4)

    def forward(self, x):
        return self.fc(self.relu(self.bn(self.conv(x))).flatten(1))


def data(n=48):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 4
    return torch.randn(n, 1, 8, 8, generator=g) + y.view(-1, 1, 1, 1).float(), y


def train_epoch(model, opt, x, y):
    model.train()
    for s in range(0, x.shape[0], 16):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[s:s + 16]), y[s:s + 16]).backward()
        opt.step()


def scripted(monkeypatch, es, stream):
    """Replaces the NNK scoring by scores[epoch] (the probe pass still runs)."""
    monkeypatch.setattr(es, "_score", lambda acts: list(stream[es._epoch]))


def run_scripted(monkeypatch, stream, epochs=None, **kwargs):
    """Trains Net with SGD (momentum, weight decay) under scripted scores. Returns the model,
    the callback, and the model's full state (parameters and buffers) right after each
    check, by epoch (``es.before``: right before each check)."""
    torch.manual_seed(0)
    model = Net()
    x, y = data()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    kwargs.setdefault("patience", 2)
    es = NNKEarlyStopping(model, "relu", (x, y), k=5, optimizer=opt, verbose=False, **kwargs)
    scripted(monkeypatch, es, stream)
    states, es.before = {}, {}
    for epoch in range(len(stream) if epochs is None else epochs):
        train_epoch(model, opt, x, y)
        es._epoch = epoch
        es.before[epoch] = copy.deepcopy(model.state_dict())
        stop = es.step(epoch)
        states[epoch] = copy.deepcopy(model.state_dict())
        if stop:
            break
    return model, opt, es, states


# Patience 2. Channel 0 stops improving after epoch 0 and freezes at epoch 2 (its later
# scores are ignored); channel 1 improves last at epoch 3 and freezes at 5; channel 2 improves
# last at epoch 4 and freezes at 6: the last check at which any channel improved is epoch 4,
# and training stops at 6.
STREAM = [
    [0.9, 0.9, 0.9],
    [0.9, 0.8, 0.8],
    [0.95, 0.7, 0.7],
    [0.1, 0.65, 0.6],
    [0.1, 0.7, 0.5],
    [0.1, 0.7, 0.5],
    [0.1, 0.7, 0.55],
]


def test_defaults_are_the_published_ones():
    model = Net()
    es = NNKEarlyStopping(model, "relu", data(), k=5, verbose=False)
    assert es._core.options.restore_best_weights is False
    assert es._core.options.restore_on_stop == "last_improvement"
    layer = NNKEarlyStopping(model, "fc", data(), mode="layer", k=5, verbose=False)
    assert layer._core.options.restore_best_weights is True
    assert layer._core.options.restore_on_stop == "best"


def test_freeze_in_place_keeps_the_weights_of_the_freezing_check_bitwise(monkeypatch):
    model, opt, es, states = run_scripted(monkeypatch, STREAM, epochs=6,
                                          restore_on_stop="none")
    assert es._core.frozen_epochs == [2, 5, -1]
    x, y = data()
    for _ in range(3):  # more training: momentum and weight decay keep pushing
        train_epoch(model, opt, x, y)
    # Channel 0 holds exactly its values at the check of epoch 2, channel 1 those of epoch 5.
    for ch, epoch in ((0, 2), (1, 5)):
        for name in ("conv.weight", "conv.bias", "bn.weight", "bn.bias"):
            assert torch.equal(model.state_dict()[name][ch], states[epoch][name][ch]), (name, ch)
    # They were not frozen at their best check (epoch 0 / 2): in place, as published.
    assert not torch.equal(states[2]["conv.weight"][0], states[0]["conv.weight"][0])
    # Channel 2 and the rest of the network kept training.
    assert not torch.equal(model.conv.weight[2], states[5]["conv.weight"][2])
    assert not torch.equal(model.fc.weight, states[5]["fc.weight"])


def test_restore_best_weights_freezes_at_the_best_check_instead(monkeypatch):
    model, _, es, states = run_scripted(monkeypatch, STREAM, epochs=6,
                                        restore_best_weights=True, restore_on_stop="none")
    # Channel 0's best check is epoch 0, channel 1's epoch 3.
    assert es._core.frozen_epochs == [2, 5, -1]
    assert torch.equal(model.conv.weight[0], states[0]["conv.weight"][0])
    assert torch.equal(model.conv.weight[1], states[3]["conv.weight"][1])


def test_last_improvement_restore_returns_the_whole_model_of_that_check(monkeypatch):
    model, opt, es, states = run_scripted(monkeypatch, STREAM)
    assert es.stopped_epoch == 6 and es.last_improvement_epoch == 4
    restored = model.state_dict()
    # Every parameter and buffer (BatchNorm running statistics, its batch counter) is back at
    # its value at the check of epoch 4, bit for bit; the state at the stop differed.
    for name, value in states[4].items():
        assert torch.equal(restored[name], value), name
    assert not torch.equal(es.before[6]["fc.weight"], states[4]["fc.weight"])
    assert not torch.equal(es.before[6]["bn.running_mean"], states[4]["bn.running_mean"])
    assert not torch.equal(es.before[6]["conv.weight"][2], states[4]["conv.weight"][2])
    # Every channel is frozen: further steps keep the restored conv.
    x, y = data()
    train_epoch(model, opt, x, y)
    assert torch.equal(model.conv.weight, states[4]["conv.weight"])
    assert torch.equal(model.bn.bias, states[4]["bn.bias"])


def test_layer_mode_last_improvement_restores_parameters_and_buffers(monkeypatch):
    stream = [[0.5], [0.4], [0.45], [0.41], [0.42]]
    model, _, es, states = run_scripted(monkeypatch, stream, mode="layer", patience=3,
                                        restore_on_stop="last_improvement")
    assert es.stopped_epoch == 4 and es._core.best_epoch == 1
    for name, value in states[1].items():
        assert torch.equal(model.state_dict()[name], value), name


def test_restore_on_stop_none_leaves_the_model_as_it_stands(monkeypatch):
    model, _, es, states = run_scripted(monkeypatch, STREAM, restore_on_stop="none")
    assert es.stopped_epoch == 6
    for name, value in states[6].items():
        assert torch.equal(model.state_dict()[name], value), name


def test_finish_at_the_budget_returns_the_last_improvement_model(monkeypatch):
    # The budget (6 epochs) ends before channel 2 freezes: finish() restores the model of the
    # last improving check (epoch 4) as a stop would, and the callback reads as stopped.
    model, opt, es, states = run_scripted(monkeypatch, STREAM, epochs=6)
    assert es.stopped_epoch == -1 and not es._core.should_stop
    assert not torch.equal(model.conv.weight, states[4]["conv.weight"])
    assert es.finish(5) is True
    assert es.stopped_epoch == 5 and "training ended at epoch 5" in es.stop_reason
    for name, value in states[4].items():
        assert torch.equal(model.state_dict()[name], value), name
    assert es.step(6) is True          # stopped: nothing more is checked
    assert es.finish(6) is False       # and a second finish changes nothing
    for name, value in states[4].items():
        assert torch.equal(model.state_dict()[name], value), name


def test_finish_after_a_stop_or_without_restore_leaves_the_model(monkeypatch):
    model, _, es, states = run_scripted(monkeypatch, STREAM)
    assert es.stopped_epoch == 6
    before = copy.deepcopy(model.state_dict())
    assert es.finish(9) is False and es.stopped_epoch == 6
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    model, _, es, states = run_scripted(monkeypatch, STREAM, epochs=6, restore_on_stop="none")
    assert es.finish(5) is False and es.stopped_epoch == 5
    for name, value in states[5].items():
        assert torch.equal(model.state_dict()[name], value), name


def test_finish_before_the_first_check_restores_nothing():
    model = Net()
    es = NNKEarlyStopping(model, "relu", data(), k=5, verbose=False, check_every=10)
    before = copy.deepcopy(model.state_dict())
    assert es.finish(3) is False
    assert "before the first check" in es.stop_reason and es.stopped_epoch == 3
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    with pytest.raises(RuntimeError, match="epoch should be >= 0"):
        NNKEarlyStopping(model, "relu", data(), k=5, verbose=False).finish(-1)


def test_restore_options_refused_when_they_contradict():
    model = Net()
    with pytest.raises(RuntimeError, match="restore_on_stop should be"):
        NNKEarlyStopping(model, "relu", data(), k=5, restore_on_stop="epoch")
    with pytest.raises(RuntimeError, match="restore_on_stop=\"best\" is for layer mode"):
        NNKEarlyStopping(model, "relu", data(), k=5, restore_on_stop="best")
    with pytest.raises(RuntimeError, match="contradicts restore_on_stop"):
        NNKEarlyStopping(model, "fc", data(), mode="layer", k=5, restore_best_weights=True,
                         restore_on_stop="none")


# ------------------------------------------------------------------ min_delta="auto"
def core(mode="layer", n=400, channels=1, **opts):
    options = _C.EarlyStoppingOptions()
    options.mode, options.patience = mode, opts.pop("patience", 3)
    for key, value in opts.items():
        setattr(options, key, value)
    c = _C.NNKEarlyStoppingCore(options)
    c.set_labels(torch.arange(n) % 4)
    c.watch([torch.zeros(channels, 2)])
    return c


def se(e, n):
    return math.sqrt(e * (1 - e) / n)


@pytest.mark.parametrize("n", [400, 10000])
def test_auto_min_delta_refuses_jitter_and_accepts_a_larger_improvement(n):
    c = core(n=n, auto_min_delta=True)
    c.update(0, [0.3])
    threshold = se(0.3, n)           # 0.0229 at N = 400, 0.00458 at N = 10,000
    c.update(1, [0.3 - 0.99 * threshold])   # within the noise: a wait, the best stays
    assert c.wait_counts == [1] and c.best_scores == [0.3] and c.best_epoch == 0
    c.update(2, [0.3 - 1.01 * threshold])   # beyond it: an improvement
    assert c.wait_counts == [0] and c.best_epoch == 2
    best = 0.3 - 1.01 * threshold
    # The threshold follows the new best error.
    c.update(3, [best - 0.99 * se(best, n)])
    assert c.wait_counts == [1] and c.best_epoch == 2
    c.update(4, [best - 1.01 * se(best, n)])
    assert c.wait_counts == [0] and c.best_epoch == 4


def test_auto_min_delta_per_channel_with_its_own_best():
    c = core(mode="channel", channels=2, n=100, auto_min_delta=True, patience=1)
    c.update(0, [0.5, 0.1])
    # Channel 0's threshold is 0.05, channel 1's 0.03: a drop of 0.04 improves only channel 1.
    assert se(0.5, 100) == pytest.approx(0.05) and se(0.1, 100) == pytest.approx(0.03)
    c.update(1, [0.46, 0.06])
    assert c.frozen_epochs == [1, -1] and c.best_scores == [0.5, 0.06]


def test_auto_min_delta_refuses_a_fixed_min_delta_too_and_needs_labels():
    options = _C.EarlyStoppingOptions()
    options.auto_min_delta, options.min_delta = True, 0.01
    with pytest.raises(RuntimeError, match="cannot be combined with a fixed min_delta"):
        _C.NNKEarlyStoppingCore(options)
    options.min_delta = 0.0
    c = _C.NNKEarlyStoppingCore(options)
    c.watch([torch.zeros(2, 2)])
    with pytest.raises(RuntimeError, match="call set_labels"):
        c.update(0, [0.1, 0.2])
    assert c.checks == 0
    with pytest.raises(ValueError, match="min_delta should be a number >= 0 or \"auto\""):
        NNKEarlyStopping(Net(), "relu", data(), k=5, min_delta="sometimes")


def test_smoothing_compares_the_mean_of_the_last_m_checks():
    c = core(smoothing=3, patience=2)
    # Eighths, so that every sum is exact. Means: 0.5, 0.4375, 0.375 (improving), then
    # 1.125/3 = 0.375 (not below 0.375: wait 1), 0.875/3 (improves), 1.125/3 (wait 1),
    # 1.125/3 (wait 2): stop at epoch 6.
    stream = [0.5, 0.375, 0.25, 0.5, 0.125, 0.5, 0.5]
    waits, stop = [], None
    for epoch, s in enumerate(stream):
        if c.update(epoch, [s]):
            stop = epoch
            break
        waits.append(c.wait_counts[0])
    assert waits == [0, 0, 0, 1, 0, 1]
    assert stop == 6 and c.best_epoch == 4
    assert c.best_scores == [0.875 / 3]
    assert c.smoothed_scores == [1.125 / 3] and c.last_scores == [0.5]
    with pytest.raises(RuntimeError, match="smoothing should be >= 1"):
        core(smoothing=0)


def test_smoothing_1_equals_no_smoothing():
    stream = [0.5, 0.4, 0.45, 0.38, 0.39, 0.40, 0.41]
    a, b = core(smoothing=1, patience=2), core(patience=2)
    for epoch, s in enumerate(stream):
        assert a.update(epoch, [s]) == b.update(epoch, [s])
    assert a.state_dict().keys() == b.state_dict().keys()
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key


# ------------------------------------------------------------------ state and resume
def test_resume_with_smoothing_auto_and_last_improvement_equals_an_uninterrupted_run(
        monkeypatch):
    kwargs = dict(min_delta="auto", smoothing=2, patience=2)
    full_model, _, full_es, _ = run_scripted(monkeypatch, STREAM, **kwargs)
    model, opt, es, _ = run_scripted(monkeypatch, STREAM, epochs=4, **kwargs)
    state = {"model": copy.deepcopy(model.state_dict()), "opt": copy.deepcopy(opt.state_dict()),
             "es": {k: v.clone() for k, v in es.state_dict().items()}}
    assert "recent_scores" in state["es"] and "improved_extra.0" in state["es"]
    torch.manual_seed(0)
    model2 = Net()
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    x, y = data()
    es2 = NNKEarlyStopping(model2, "relu", (x, y), k=5, optimizer=opt2, verbose=False, **kwargs)
    model2.load_state_dict(state["model"])
    opt2.load_state_dict(state["opt"])
    es2.load_state_dict(state["es"])
    scripted(monkeypatch, es2, STREAM)
    for epoch in range(4, len(STREAM)):
        train_epoch(model2, opt2, x, y)
        es2._epoch = epoch
        if es2.step(epoch):
            break
    assert es2.stopped_epoch == full_es.stopped_epoch
    assert es2._core.frozen_epochs == full_es._core.frozen_epochs
    assert es2.last_improvement_epoch == full_es.last_improvement_epoch
    for key, value in full_es.state_dict().items():
        assert torch.equal(es2.state_dict()[key], value), key
    for key, value in full_model.state_dict().items():
        assert torch.equal(model2.state_dict()[key], value), key


def corruptions(state, channels):
    bad = []
    s = dict(state); s["recent_scores"] = state["recent_scores"][:-1]
    bad.append((s, "not a whole number of checks"))
    s = dict(state); s["recent_scores"] = torch.cat([state["recent_scores"]] * 2)
    bad.append((s, "at most smoothing"))
    s = dict(state); s["recent_scores"] = state["recent_scores"].clone()
    s["recent_scores"][0] = float("nan")
    bad.append((s, "should be finite"))
    s = dict(state); s["counters"] = state["counters"][:3]
    bad.append((s, "should hold 4 values"))
    s = dict(state); s["counters"] = state["counters"].clone(); s["counters"][3] = -2
    bad.append((s, "last_improvement_epoch >= -1"))
    s = dict(state); del s["improved_params.1"]
    bad.append((s, "\"improved_params\" snapshots"))
    s = dict(state); s["improved_extra.0"] = torch.zeros(channels + 1)
    bad.append((s, "has shape"))
    s = dict(state); s["improved_extra.4"] = state["improved_extra.4"].float()
    bad.append((s, "is Float, the watched tensor Long"))
    s = dict(state); s["improved_extra.99"] = torch.zeros(1)
    bad.append((s, None))   # a stray key past the last snapshot is ignored, as for best_params
    return bad


def test_refused_states_leave_the_callback_unchanged(monkeypatch):
    _, _, es, _ = run_scripted(monkeypatch, STREAM, epochs=4, smoothing=2)
    good = {k: v.clone() for k, v in es.state_dict().items()}
    # extra: fc.weight, fc.bias, bn.running_mean, bn.running_var, bn.num_batches_tracked
    assert good["improved_extra.3"].dtype == torch.float32
    assert good["improved_extra.4"].dtype == torch.int64
    for state, message in corruptions(good, 3):
        if message is None:
            es.load_state_dict(state)
            continue
        with pytest.raises(RuntimeError, match=message):
            es.load_state_dict(state)
        after = es.state_dict()
        assert after.keys() == good.keys()
        for key, value in good.items():
            assert torch.equal(after[key], value), (message, key)


def test_state_of_another_restore_mode_is_refused():
    a = core(mode="channel", channels=2)
    a.update(0, [0.1, 0.2])
    options = _C.EarlyStoppingOptions()
    options.restore_on_stop = "none"
    b = _C.NNKEarlyStoppingCore(options)
    b.watch([torch.zeros(2, 2)])
    with pytest.raises(RuntimeError, match="\"improved_params\" snapshots, 0 expected"):
        b.load_state_dict(a.state_dict())


def test_max_points_none_uses_the_whole_probe():
    x, y = data(3000)
    es = NNKEarlyStopping(Net(), "relu", (x, y), k=5, verbose=False, max_points=None)
    assert torch.equal(es.probe_x, x) and torch.equal(es.probe_y, y)
    capped = NNKEarlyStopping(Net(), "relu", (x, y), k=5, verbose=False)
    assert capped.probe_x.shape[0] == 2000


# ------------------------------------------------------------------ dtypes and devices
def channel_core(**opts):
    options = _C.EarlyStoppingOptions()
    options.k = 5
    for key, value in opts.items():
        setattr(options, key, value)
    return _C.NNKEarlyStoppingCore(options)


def naive_hard_loo(nbr, w, y):
    errors = []
    for i in range(nbr.shape[0]):
        mass = {}
        for j, t in zip(nbr[i].tolist(), w[i].tolist()):
            if j >= 0 and t > 0:
                mass[int(y[j])] = mass.get(int(y[j]), 0.0) + t
        if not mass:
            errors.append(1.0)
            continue
        top = max(mass.values())
        pred = min(c for c, m in mass.items() if m == top)
        errors.append(float(pred != int(y[i])))
    return sum(errors) / len(errors)


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_half_precision_activations_are_scored_in_float32(half):
    g = torch.Generator().manual_seed(1)
    y = torch.arange(60) % 3
    acts = (torch.randn(60, 4, 3, 3, generator=g) + y.view(-1, 1, 1, 1)).to(half)
    c = channel_core()
    c.set_labels(y)
    scores = c.score(acts)
    # The float32 graphs of the rounded activations, per channel, scored by a naive LOO.
    expected = []
    for ch in range(4):
        nbr, w, _ = torch.ops.torch_geometry.nnk_graph(acts[:, ch].float().reshape(60, -1), 5)
        expected.append(naive_hard_loo(nbr, w, y))
    assert scores == expected
    layer = channel_core(mode="layer", reduce="flatten")
    layer.set_labels(y)
    nbr, w, _ = torch.ops.torch_geometry.nnk_graph(acts.float().reshape(60, -1), 5)
    assert layer.score(acts) == [naive_hard_loo(nbr, w, y)]


def test_model_moved_to_double_after_creation_keeps_working_and_frozen(monkeypatch):
    torch.manual_seed(0)
    model = Net()
    x, y = data()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    es = NNKEarlyStopping(model, "relu", (x, y), k=5, patience=1, optimizer=opt,
                          verbose=False, restore_on_stop="none")
    train_epoch(model, opt, x, y)
    es.step(0)                      # real scores, float32
    model.double()
    xd = x.double()
    seen = []
    real = es._score
    monkeypatch.setattr(es, "_score", lambda acts: seen.append(acts.dtype) or real(acts))
    frozen_values = None
    for epoch in range(1, 8):
        train_epoch(model, opt, xd, y)
        es.probe_x = es.probe_x.double()
        es.step(epoch)
        if es.frozen_channels and frozen_values is None:
            frozen_values = {c: model.conv.weight[c].clone() for c in es.frozen_channels}
        if frozen_values:
            for c, w in frozen_values.items():
                assert torch.equal(model.conv.weight[c], w), c
    assert frozen_values, "patience 1 over 7 checks should freeze a channel"
    assert set(seen) == {torch.float64}
    # Snapshots follow the parameters' dtype.
    assert es.state_dict()["best_params.0"].dtype == torch.float64
    assert model.conv.weight.dtype == torch.float64


def test_candidate_metric_is_validated_and_recorded():
    with pytest.raises(RuntimeError, match="candidate_metric should be \"kernel\" or "
                                           "\"euclidean\", got \"cosine\""):
        channel_core(candidate_metric="cosine")
    c = channel_core(candidate_metric="euclidean")
    assert c.options.candidate_metric == "euclidean"
    assert '"candidate_metric": "euclidean"' in c.to_json()


def test_euclidean_candidates_reach_the_graph_op():
    g = torch.Generator().manual_seed(2)
    y = torch.arange(50) % 3
    # Rows of very different norms: L2 and cosine rankings disagree.
    acts = torch.randn(50, 2, 4, 4, generator=g) * torch.rand(50, 1, 1, 1, generator=g) * 10
    c = channel_core(candidate_metric="euclidean")
    c.set_labels(y)
    expected = []
    for ch in range(2):
        x = acts[:, ch].reshape(50, -1)
        d = torch.cdist(x.double(), x.double())
        d.fill_diagonal_(float("inf"))
        candidates = d.topk(5, largest=False).indices
        nbr, w, _ = torch.ops.torch_geometry.nnk_graph(x, 5, candidates=candidates)
        expected.append(naive_hard_loo(nbr, w, y))
    assert c.score(acts) == pytest.approx(expected, abs=1e-12)
