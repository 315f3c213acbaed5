"""Channel-wise NNK graphs, NNK early stopping and model selection."""
import copy
import json

import pytest
import torch
import torch.nn as nn

import torch_geometry as tg
from torch_geometry.callbacks import NNKEarlyStopping, select_models
from torch_geometry.datasets import load_fashion_mnist

from conftest import run_ranks

ops = torch.ops.torch_geometry


# ------------------------------------------------------------------ channel-wise graphs
def test_channel_graphs_equal_per_channel_nnk():
    torch.manual_seed(0)
    a = torch.relu(torch.randn(300, 6, 3, 3))   # D = 9 < k: singular kernels everywhere
    a[:, 2] = 0                                  # a dead channel
    a[:40, 4] = 0                                # some all-zero maps
    nbr, w, err = ops.channel_nnk_graph(a, 12, "cosine", 1e-10)
    assert nbr.shape == (6, 300, 12) and w.shape == (6, 300, 12) and err.shape == (6, 300)
    for c in range(6):
        g = tg.nnk_graph(a[:, c].reshape(300, -1), 12)
        assert torch.equal(nbr[c], g.neighbors) and torch.equal(w[c], g.weights)
    assert bool((nbr[2] == -1).all()) and bool((w[2] == 0).all())  # dead channel: no edges
    assert torch.isfinite(w).all() and torch.isfinite(err).all()


def test_channel_overlap_matches_reference():
    torch.manual_seed(1)
    a = torch.randn(200, 5, 2, 2)
    a[:, 3] = a[:, 1] * 2.0                      # channel 3 = scaled copy of channel 1
    nbr, w, _ = ops.channel_nnk_graph(a, 8, "cosine", 1e-10)
    O = ops.channel_overlap(nbr, w)
    assert O.shape == (5, 5) and torch.equal(O, O.t())
    assert torch.allclose(torch.diagonal(O), torch.ones(5, dtype=torch.float64))
    assert O[1, 3].item() == pytest.approx(1.0)
    for a_, b_ in [(0, 1), (2, 4)]:
        jac = tg.metrics.neighborhood_overlap(
            tg.NNKGraph(nbr[a_], w[a_], torch.zeros(200)), tg.NNKGraph(nbr[b_], w[b_], torch.zeros(200)))
        jac = jac[0] if isinstance(jac, tuple) else jac
        assert O[a_, b_].item() == pytest.approx(jac.double().mean().item())


def test_channel_python_api():
    torch.manual_seed(2)
    a = torch.randn(150, 4, 3, 3)
    y = torch.arange(150) % 3
    graphs = tg.channelwise.channel_graphs(a, k=10)
    assert len(graphs) == 4 and isinstance(graphs[0], tg.NNKGraph)
    err = tg.channelwise.channel_loo_error(graphs, y)
    assert err.shape == (4,) and bool(((err >= 0) & (err <= 1)).all())
    O = tg.channelwise.channel_overlap(graphs)
    assert O.shape == (4, 4)
    deg = tg.channelwise.channel_degree(graphs)
    assert torch.allclose(deg, torch.stack([g.degree.double().mean() for g in graphs]))


def _naive_hard_loo(nbr, w, y):
    """0/1 leave-one-out NNK interpolation error per node (ties to the lowest class)."""
    out = []
    classes = int(y.max()) + 1
    for i in range(nbr.shape[0]):
        votes = [0.0] * classes
        for j, wij in zip(nbr[i].tolist(), w[i].tolist()):
            if j >= 0 and wij > 0:
                votes[int(y[j])] += wij
        best = max(range(classes), key=lambda c: (votes[c], -c))
        out.append(1.0 if sum(votes) == 0 or best != int(y[i]) else 0.0)
    return sum(out) / len(out)


def test_channel_loo_error_is_the_hard_error_of_each_channel():
    torch.manual_seed(3)
    y = torch.arange(120) % 3
    a = torch.randn(120, 3, 2, 2)
    a[:, 0] += y.view(-1, 1, 1).float()           # channel 0 carries the labels
    graphs = tg.channelwise.channel_graphs(a, k=8)
    err = tg.channelwise.channel_loo_error(graphs, y)
    assert err.dtype == torch.float64 and err.shape == (3,)
    soft = torch.stack([tg.metrics.loo_error(g, y)[1].double().mean() for g in graphs])
    for c, g in enumerate(graphs):
        assert err[c].item() == pytest.approx(_naive_hard_loo(g.neighbors, g.weights, y), abs=1e-12)
    assert not torch.allclose(err, soft)         # the hard error, not the soft one
    assert err[0] < err[1] and err[0] < err[2]
    with pytest.raises(RuntimeError, match=r"class indices.*got Float"):
        tg.channelwise.channel_loo_error(graphs, y.float())   # not truncated on the way


def test_channel_bad_input():
    with pytest.raises(RuntimeError, match=r"\[N, C, \.\.\.\]"):
        ops.channel_nnk_graph(torch.randn(10, 4), 3, "cosine", 1e-10)
    with pytest.raises(RuntimeError, match="smaller than the number of points"):
        ops.channel_nnk_graph(torch.randn(5, 2, 2, 2), 5, "cosine", 1e-10)
    with pytest.raises(RuntimeError, match="shape of neighbors"):
        ops.channel_overlap(torch.zeros(2, 3, 4, dtype=torch.long), torch.zeros(2, 3, 5))


# ------------------------------------------------------------------ early stopping
class Net(nn.Module):
    def __init__(self, width=6):
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 5, stride=2)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(width, width, 3, stride=2)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(width * 5 * 5, 10)

    def forward(self, x):
        return self.fc(self.relu2(self.conv2(self.relu1(self.conv1(x)))).flatten(1))


@pytest.fixture(scope="module")
def fmnist():
    x, y = load_fashion_mnist("train", n=1200, flatten=False)
    return x, y


def train_epoch(model, opt, x, y, bs=100):
    model.train()
    for s in range(0, x.shape[0], bs):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[s:s + bs]), y[s:s + bs]).backward()
        opt.step()


def run(fmnist, epochs, es_kwargs, state=None, start=0, seed=0):
    """Trains Net with NNK early stopping from `start`; returns (model, opt, es, stop_epoch)."""
    x, y = fmnist
    torch.manual_seed(seed)
    model = Net()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-2)
    es = NNKEarlyStopping(model, "relu2", (x[:400], y[:400]), optimizer=opt, verbose=False,
                          **es_kwargs)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        es.load_state_dict(state["es"])
    stop = None
    for epoch in range(start, epochs):
        train_epoch(model, opt, x, y)
        if es.step(epoch):
            stop = epoch
            break
    return model, opt, es, stop


def test_frozen_channels_never_change_with_adam_and_weight_decay(fmnist):
    x, y = fmnist
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-2)
    es = NNKEarlyStopping(model, "relu2", (x[:400], y[:400]), patience=1, k=10,
                          optimizer=opt, verbose=False)
    assert es.conv_name == "conv2"
    frozen_at = {}
    for epoch in range(12):
        train_epoch(model, opt, x, y)
        es.step(epoch)
        for c in es.frozen_channels:
            frozen_at.setdefault(c, (model.conv2.weight[c].clone(), model.conv2.bias[c].clone()))
        # Every channel frozen earlier still holds exactly its frozen values.
        for c, (w, b) in frozen_at.items():
            assert torch.equal(model.conv2.weight[c], w) and torch.equal(model.conv2.bias[c], b)
        if es.stopped_epoch >= 0:
            break
    assert frozen_at, "patience 1 over 12 epochs should freeze at least one channel"
    # Unfrozen channels did train (the optimiser was not blocked wholesale).
    assert len(frozen_at) < 6 or es.stopped_epoch >= 0


def test_resume_from_checkpoint_matches_uninterrupted_run(fmnist):
    kwargs = dict(mode="channel", patience=2, k=10)
    full_model, _, full_es, full_stop = run(fmnist, 10, kwargs)
    # Interrupted: 4 epochs, checkpoint (model, optimiser, callback, RNG), resume.
    model, opt, es, stop = run(fmnist, 4, kwargs)
    assert stop is None or stop == full_stop
    state = {"model": copy.deepcopy(model.state_dict()), "opt": copy.deepcopy(opt.state_dict()),
             "es": {k: v.clone() for k, v in es.state_dict().items()}}
    model2, _, es2, stop2 = run(fmnist, 10, kwargs, state=state, start=4)
    assert stop2 == full_stop and es2.stopped_epoch == full_es.stopped_epoch
    assert es2.frozen_channels == full_es.frozen_channels
    for (k1, v1), (k2, v2) in zip(full_model.state_dict().items(), model2.state_dict().items()):
        assert torch.equal(v1, v2), k1


def test_layer_mode_stops_and_restores_best(fmnist):
    x, y = fmnist
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    es = NNKEarlyStopping(model, "fc", (x[:400], y[:400]), mode="layer", patience=2, k=10,
                          verbose=False)
    best_params = None
    best = float("inf")
    for epoch in range(30):
        train_epoch(model, opt, x, y)
        stop = es.step(epoch)
        score = es.last_scores[0]
        if score < best:
            best, best_params = score, copy.deepcopy(model.state_dict())
        if stop:
            break
    assert es.stopped_epoch >= 0 and es.best_score == pytest.approx(best)
    for k, v in model.state_dict().items():
        assert torch.equal(v, best_params[k]), k


def test_non_finite_activations_stop_without_freezing(fmnist, capsys):
    x, y = fmnist
    model = Net()
    es = NNKEarlyStopping(model, "relu2", (x[:200], y[:200]), k=10, patience=1)
    with torch.no_grad():
        model.conv2.weight[0, 0, 0, 0] = float("nan")
    assert es.step(0) is True
    assert "non-finite" in es.stop_reason and es.frozen_channels == []
    assert "non-finite" in capsys.readouterr().out


def test_early_stopping_bad_input(fmnist):
    x, y = fmnist
    model = Net()
    with pytest.raises(RuntimeError, match="mode should be"):
        NNKEarlyStopping(model, "relu2", (x[:200], y[:200]), mode="epoch")
    with pytest.raises(RuntimeError, match="patience should be >= 1"):
        NNKEarlyStopping(model, "relu2", (x[:200], y[:200]), patience=0)
    with pytest.raises(ValueError, match="needs labels"):
        NNKEarlyStopping(model, "relu2", x[:200])
    with pytest.raises(ValueError, match="check_every"):
        NNKEarlyStopping(model, "relu2", (x[:200], y[:200]), check_every=0)
    # Channel mode needs [N, C, ...] outputs: refused when the callback is built.
    with pytest.raises(RuntimeError, match=r"layer '0' outputs shape \(2, 10\)"):
        NNKEarlyStopping(nn.Sequential(nn.Linear(784, 10)), "0", (x[:200].flatten(1), y[:200]))
    with pytest.raises(RuntimeError, match=r"channel mode needs conv activations"):
        NNKEarlyStopping(model, "fc", (x[:200], y[:200]), k=10)
    with pytest.raises(ValueError, match="no convolution with 1 output channels"):
        NNKEarlyStopping(nn.Sequential(nn.MaxPool2d(1), nn.Conv2d(1, 6, 3)), "0",
                         (x[:200], y[:200]), k=10)
    es = NNKEarlyStopping(model, "relu2", (x[:200], y[:200]), k=10)
    with pytest.raises(RuntimeError, match="missing key"):
        es.load_state_dict({})


# ------------------------------------------------------------------ distributed
_WORKER = r"""
import json, os, sys, torch, torch.distributed as dist
sys.path.insert(0, os.environ["TEST_DIR"])
from test_early_stopping import Net, train_epoch
from torch_geometry.callbacks import NNKEarlyStopping
from torch_geometry.datasets import load_fashion_mnist
rank, world, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
x, y = load_fashion_mnist("train", n=1200, flatten=False)
torch.manual_seed(0)
model = Net()
opt = torch.optim.SGD(model.parameters(), lr=0.05)
es = NNKEarlyStopping(model, "relu2", (x[:301], y[:301]), patience=1, k=10, verbose=False)
log = []
for epoch in range(8):
    train_epoch(model, opt, x, y)   # same data on both ranks: identical models
    stop = es.step(epoch)
    log.append([epoch, bool(stop), es.frozen_channels])
    if stop:
        break
with open(f"{out}.{rank}", "w") as f:
    json.dump(log, f)
dist.destroy_process_group()
# Leave without running exit-time destructors: with torch 2.15 a worker sometimes aborted at
# exit ("terminate called without an active exception") after its results were written.
os._exit(0)
"""


def test_distributed_ranks_take_the_same_decisions(tmp_path):
    out = run_ranks(tmp_path, _WORKER)
    logs = [open(f"{out}.{r}").read() for r in range(2)]
    assert logs[0] == logs[1]


# Rank 1 scores differently, as a CPU with other dot-product kernels would: the decision
# must still be the same on both ranks (rank 0's), never a rank stopping alone.
_MIXED_WORKER = r"""
import json, os, sys, torch, torch.distributed as dist
sys.path.insert(0, os.environ["TEST_DIR"])
from test_early_stopping import Net, train_epoch
from torch_geometry.callbacks import NNKEarlyStopping
from torch_geometry.datasets import load_fashion_mnist
rank, world, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
x, y = load_fashion_mnist("train", n=600, flatten=False)
torch.manual_seed(0)
model = Net()
opt = torch.optim.SGD(model.parameters(), lr=0.05)
es = NNKEarlyStopping(model, "relu2", (x[:200], y[:200]), patience=2, k=10, verbose=False,
                      optimizer=opt)


class OtherRounding:
    def __init__(self, core):
        self.core, self.calls = core, 0

    def score(self, acts):
        self.calls += 1
        s = self.core.score(acts)
        # Channels alternate between improving and not, differently from rank 0.
        return [v - 0.1 * self.calls if (c + self.calls) % 2 else v + 0.5
                for c, v in enumerate(s)]

    def __getattr__(self, name):
        return getattr(self.core, name)


if rank == 1:
    es._core = OtherRounding(es._core)
log = []
for epoch in range(10):
    train_epoch(model, opt, x, y)
    stop = es.step(epoch)
    log.append([epoch, bool(stop), es.frozen_channels, es.last_scores])
    if stop:
        break
with open(f"{out}.{rank}", "w") as f:
    json.dump({"log": log, "weights": model.conv2.weight.flatten().tolist()}, f)
dist.destroy_process_group()
# Leave without running exit-time destructors: with torch 2.15 a worker sometimes aborted at
# exit ("terminate called without an active exception") after its results were written.
os._exit(0)
"""


def test_distributed_decision_is_rank_zeros_even_when_ranks_score_differently(tmp_path):
    out = run_ranks(tmp_path, _MIXED_WORKER)
    results = [json.load(open(f"{out}.{r}")) for r in range(2)]
    assert results[0]["log"] == results[1]["log"]
    assert any(entry[2] for entry in results[0]["log"]), "some channel should have frozen"
    assert results[0]["weights"] == results[1]["weights"]


# ------------------------------------------------------------------ model selection
def test_select_models_ranks_by_probe_loo_error(fmnist):
    x, y = fmnist
    torch.manual_seed(0)
    trained, untrained = Net(), Net()
    opt = torch.optim.Adam(trained.parameters(), lr=3e-3)
    for _ in range(3):
        train_epoch(trained, opt, x, y)
    ranking = select_models({"untrained": untrained, "trained": trained}, (x[:500], y[:500]),
                            layer="fc", k=10)
    assert [n for n, _ in ranking] == ["trained", "untrained"]
    assert ranking[0][1] < ranking[1][1]
    # Same number as a direct computation.
    acts = tg.tracking.run_probe(trained, ["fc"], x[:500])["fc"]
    hard, _ = tg.metrics.loo_error(tg.nnk_graph(acts, 10), y[:500])
    assert ranking[0][1] == pytest.approx(hard.double().mean().item())
    with pytest.raises(ValueError, match="not a module"):
        select_models({"a": trained}, (x[:100], y[:100]), layer="nope")
