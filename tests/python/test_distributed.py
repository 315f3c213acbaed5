"""torch_geometry.distributed on 2 and 4 gloo processes: bit-for-bit equality with the
single-process graph on the concatenated data, uneven and empty shards, ties and zero rows,
the gather, and failures (a bad argument on one rank, a rank that never calls) that make
every rank raise instead of hanging."""
import json

import pytest
import torch

import torch_geometry as tg
import torch_geometry.distributed as tgd
from torch_geometry.datasets import load_fashion_mnist

from conftest import run_ranks


def _data(dtype=torch.float32) -> torch.Tensor:
    """Fashion-MNIST rows plus the awkward cases of the exact search: exact duplicates
    (kappa = 1), a scaled copy (same direction, tied cosines), and all-zero rows."""
    x, _ = load_fashion_mnist("train", n=300, dtype=dtype)
    x = torch.cat([x, x[:5].clone(), 3 * x[10:12], torch.zeros(2, x.shape[1], dtype=dtype)])
    g = torch.Generator().manual_seed(0)
    return x[torch.randperm(x.shape[0], generator=g)].contiguous()


_WORKER = r"""
import json, os, sys, torch, torch.distributed as dist
sys.path.insert(0, os.environ["TEST_DIR"])
from test_distributed import _data
import torch_geometry.distributed as tgd
rank, world, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
cfg = json.loads(os.environ["DIST_CFG"])
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
x = _data(getattr(torch, cfg["dtype"]))
cuts = cfg["cuts"]
xl = x[cuts[rank]:cuts[rank + 1]]
g = tgd.nnk_graph(xl, cfg["k"], gather_to=cfg["gather_to"], margin=cfg["margin"])
knn = tgd.ring_knn(xl, cfg["k"])
res = {"nbr": g.neighbors, "w": g.weights, "err": g.error, "offset": g.offset, "n": g.num_nodes,
       "knn": knn, "bytes": g.bytes_sent}
if g.graph is not None:
    res.update(all_nbr=g.graph.neighbors, all_w=g.graph.weights, all_err=g.graph.error,
               ei=g.graph.edge_index, ew=g.graph.edge_weight)
else:
    res["none"] = True
torch.save(res, f"{out}.{rank}")
dist.destroy_process_group()
os._exit(0)
"""


def _run(tmp_path, monkeypatch, world, cuts, k=10, dtype="float32", gather_to=0, margin=16):
    monkeypatch.setenv("DIST_CFG", json.dumps(
        {"cuts": cuts, "k": k, "dtype": dtype, "gather_to": gather_to, "margin": margin}))
    out = run_ranks(tmp_path, _WORKER, world=world, timeout=240)
    return [torch.load(f"{out}.{r}") for r in range(world)]


@pytest.mark.parametrize("world,cuts,dtype,k", [
    (2, [0, 160, 309], "float32", 10),
    (4, [0, 77, 77, 200, 309], "float32", 10),   # rank 1 holds no rows
    (4, [0, 3, 150, 151, 309], "float64", 25),   # shards smaller than k
])
def test_identical_to_single_process(tmp_path, monkeypatch, world, cuts, dtype, k):
    x = _data(getattr(torch, dtype))
    ref = tg.nnk_graph(x, k)
    ref_knn, _ = tg.knn_graph(x, k)
    res = _run(tmp_path, monkeypatch, world, cuts, k=k, dtype=dtype)
    for r, part in enumerate(res):
        a, b = cuts[r], cuts[r + 1]
        assert part["offset"] == a and part["n"] == x.shape[0]
        assert torch.equal(part["knn"], ref_knn[a:b]), f"rank {r}: kNN differs"
        assert torch.equal(part["nbr"], ref.neighbors[a:b]), f"rank {r}: neighbours differ"
        assert part["w"].dtype == ref.weights.dtype
        # bit for bit: torch.equal, not allclose
        assert torch.equal(part["w"], ref.weights[a:b]), f"rank {r}: weights differ"
        assert torch.equal(part["err"], ref.error[a:b]), f"rank {r}: errors differ"
    top = res[0]
    assert torch.equal(top["all_nbr"], ref.neighbors)
    assert torch.equal(top["all_w"], ref.weights)
    assert torch.equal(top["ei"], ref.edge_index) and torch.equal(top["ew"], ref.edge_weight)
    assert all(p.get("none") for p in res[1:]), "only rank gather_to receives the graph"
    # every rank with rows ships its shard around the ring at least
    for r, part in enumerate(res):
        row_bytes = x.shape[1] * x.element_size()
        assert part["bytes"] >= (cuts[r + 1] - cuts[r]) * row_bytes


def test_gather_to_another_rank_and_no_margin(tmp_path, monkeypatch):
    # margin=0: the float shortlist is the answer's size; on this data it still holds the
    # exact neighbours, and gather_to=1 puts the graph on rank 1 only.
    x = _data()
    ref = tg.nnk_graph(x, 8, symmetrize="min_error")
    res = _run(tmp_path, monkeypatch, 2, [0, 100, 309], k=8, gather_to=1, margin=0)
    assert res[0].get("none") and not res[1].get("none")
    assert torch.equal(res[1]["all_w"], ref.weights)


_FAIL_WORKER = r"""
import datetime, json, os, sys, time, torch, torch.distributed as dist
import torch_geometry.distributed as tgd
rank, world, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
mode = os.environ["DIST_MODE"]
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                        world_size=world, timeout=datetime.timedelta(seconds=6))
torch.manual_seed(rank)
x = torch.randn(40, 6)
if mode == "bad_dim" and rank == 1:
    x = torch.randn(40, 7)
if mode == "bad_value" and rank == 2:
    x[3, 1] = float("nan")
t0 = time.time()
res = {"rank": rank}
try:
    if mode == "absent" and rank == world - 1:
        # this rank never calls (it is stuck elsewhere) until the others have given up
        time.sleep(20)
        res["error"] = "absent"
    else:
        tgd.nnk_graph(x, 5)
        res["error"] = None
except Exception as exc:
    res["error"] = type(exc).__name__
    res["msg"] = str(exc)
res["seconds"] = time.time() - t0
with open(f"{out}.{rank}", "w") as f:
    json.dump(res, f)
os._exit(0)
"""


@pytest.mark.parametrize("mode,world", [("bad_dim", 2), ("bad_value", 4), ("absent", 2),
                                        ("absent", 4)])
def test_a_failing_rank_makes_every_rank_raise(tmp_path, monkeypatch, mode, world):
    monkeypatch.setenv("DIST_MODE", mode)
    out = run_ranks(tmp_path, _FAIL_WORKER, world=world, timeout=120)
    res = [json.load(open(f"{out}.{r}")) for r in range(world)]
    if mode == "absent":
        for r in res[:-1]:
            assert r["error"] == "RuntimeError", r
            assert "did not call" in r["msg"]
            assert r["seconds"] < 18, "the timeout of the group bounds the wait"
    else:
        # every rank sees every rank's arguments: the same ValueError everywhere
        assert all(r["error"] == "ValueError" for r in res), res
        assert len({r["msg"] for r in res}) == 1
        assert ("same dtype and number of columns" if mode == "bad_dim" else "rank 2 has NaN") \
            in res[0]["msg"]


def test_arguments_refused_before_any_collective():
    x = torch.randn(10, 3)
    with pytest.raises(ValueError, match="kernel should be 'cosine'"):
        tgd.nnk_graph(x, 3, kernel="gaussian")
    with pytest.raises(ValueError, match="symmetrize"):
        tgd.nnk_graph(x, 3, symmetrize="sum")
    with pytest.raises(ValueError, match="x_local should be a tensor"):
        tgd.nnk_graph(x[0], 3)
    with pytest.raises(RuntimeError, match="not initialised"):
        tgd.nnk_graph(x, 3)


def test_knn_merge_against_brute_force():
    # The rescoring op alone: shortlist rows in scrambled order with repeats, self and a
    # zero point; the answer is the exact top k by cosine, ties by the smaller id.
    g = torch.Generator().manual_seed(1)
    q = torch.randn(30, 5, generator=g, dtype=torch.float64)
    p = torch.randn(60, 5, generator=g, dtype=torch.float64)
    p[7] = 0
    p[8] = 2 * p[9]            # a tie: the smaller id must win
    pid = torch.randperm(1000, generator=g)[:60]
    qid = torch.arange(30) + 5000
    qid[0] = pid[3]            # query 0 is point 3 itself: skipped
    rows = torch.stack([torch.randperm(60, generator=g)[:40] for _ in range(30)])
    rows[:, 0] = 9
    rows[:, 1] = 8
    rows[:, 2] = 7
    rows[:, 3] = rows[:, 4]    # a repeat
    rows[5, 10:] = -1
    k = 6
    idx, score = torch.ops.torch_geometry._knn_merge(q, qid, p, pid, rows, k)
    cos = torch.nn.functional.normalize(q, dim=1) @ torch.nn.functional.normalize(p, dim=1).T
    for i in range(30):
        cand = [int(r) for r in dict.fromkeys(rows[i].tolist()) if r >= 0 and r != 7
                and int(pid[r]) != int(qid[i])]
        cand.sort(key=lambda r: (-round(float(cos[i, r]), 12), int(pid[r])))
        want = [int(pid[r]) for r in cand[:k]]
        assert idx[i].tolist() == want + [-1] * (k - len(want)), i
        assert torch.allclose(score[i, :len(want)], cos[i, cand[:k]], atol=1e-12)
    with pytest.raises(RuntimeError, match="rows should index points"):
        torch.ops.torch_geometry._knn_merge(q, qid, p, pid, rows + 100, k)
    with pytest.raises(RuntimeError, match="point_ids should be int64"):
        torch.ops.torch_geometry._knn_merge(q, qid, p, pid[:5], rows, k)
    with pytest.raises(RuntimeError, match="dtype of queries"):
        torch.ops.torch_geometry._knn_merge(q, qid, p.float(), pid, rows, k)


# ------------------------------------------------------------------ tracker and early stopping
_TRACK_WORKER = r"""
import json, os, sys, torch, torch.distributed as dist
sys.path.insert(0, os.environ["TEST_DIR"])
from test_distributed import _track_run
import torch_geometry.distributed as tgd
rank, world, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
calls = []
real = tgd.nnk_graph
def counted(*a, **kw):
    calls.append(a[0].shape[0])
    return real(*a, **kw)
tgd.nnk_graph = counted
sharded = _track_run(100)
n_sharded = len(calls)
gathered = _track_run(None)
torch.save({"sharded": sharded, "gathered": gathered, "calls": calls[:n_sharded],
            "calls_after": calls[n_sharded:]}, f"{out}.{rank}")
dist.destroy_process_group()
os._exit(0)
"""


def _track_run(distributed_min_points):
    """A small CNN, a probe of 230 Fashion-MNIST images (not divisible by 4 ranks), a tracker
    on two layers and layer-mode early stopping, over two 'epochs' (the weights scaled).
    Returns (history, scores per check)."""
    import torch.nn as nn
    from torch_geometry.callbacks import NNKEarlyStopping

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 5, stride=3)
            self.fc1 = nn.Linear(4 * 8 * 8, 16)
            self.fc2 = nn.Linear(16, 10)

        def forward(self, x):
            h = torch.relu(self.conv(x))
            return self.fc2(torch.relu(self.fc1(h.flatten(1))))

    torch.manual_seed(0)
    x, y = load_fashion_mnist("train", n=230, flatten=False)
    model = Net()
    opts = dict(k=8, progress=False, distributed_min_points=distributed_min_points)
    tracker = tg.GeometryTracker(model, ["conv", "fc1"], (x, y), max_points=10 ** 6, **opts)
    es = NNKEarlyStopping(model, "fc1", (x, y), mode="layer", max_points=None, verbose=False,
                          **opts)
    cw = NNKEarlyStopping(model, "conv", (x, y), mode="channel", max_points=None,
                          verbose=False, **opts)
    other = Net()                      # a second model for select_models
    scores = []
    for epoch in range(2):
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1.0 + 0.05 * (epoch + 1))
        tracker.on_epoch_end(epoch)
        es.step(epoch)
        cw.step(epoch)
        scores.append(es.last_scores + cw.last_scores)
    ranked = tg.select_models({"a": model, "b": other}, (x, y), layer="fc1", k=8,
                              max_points=None, distributed_min_points=distributed_min_points)
    return tracker.history, scores + [ranked]


@pytest.mark.parametrize("world", [2, 4])
def test_tracker_and_layer_early_stopping_build_the_graph_across_ranks(tmp_path, world):
    # From distributed_min_points on, the graphs come from distributed.nnk_graph on each
    # rank's block of the probe (once per layer per epoch for the tracker, once per check for
    # early stopping, each on that rank's rows only); the history and the scores equal, bit
    # for bit, those of the gathering path (every activation gathered to every rank), which
    # runs the same forward passes. Against one process they agree to float32 rounding
    # only: a forward pass over a smaller batch may round differently.
    ref_history, ref_scores = _track_run(None)
    out = run_ranks(tmp_path, _TRACK_WORKER, world=world, timeout=300)
    blocks = [b.numel() for b in torch.arange(230).tensor_split(world)]
    for r in range(world):
        res = torch.load(f"{out}.{r}")
        # 2 epochs x (2 tracked layers + 1 layer-mode check + 4 channels), then 2 models
        assert res["calls"] == [blocks[r]] * (2 * (2 + 1 + 4) + 2), res["calls"]
        assert res["calls_after"] == []                         # the gathering path: none
        (hist, scores), (g_hist, g_scores) = res["sharded"], res["gathered"]
        assert hist == g_hist and scores == g_scores
        assert len(hist) == len(ref_history)
        for a, b in zip(hist, ref_history):
            assert (a["epoch"], a["layer"], a["metric"]) == (b["epoch"], b["layer"], b["metric"])
            assert a["mean"] == pytest.approx(b["mean"], rel=1e-3, abs=1e-3), (a, b)
        for a, b in zip(scores[:-1], ref_scores[:-1]):
            assert a == pytest.approx(b, abs=0.02)
        assert [n for n, _ in scores[-1]] == [n for n, _ in ref_scores[-1]]
