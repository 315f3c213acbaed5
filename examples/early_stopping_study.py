"""Early stopping on Fashion-MNIST: the published DeepNNK / CW-DeepNNK rules against the
validation baselines, with a design that can tell them apart.

For each label-noise level (0 % and 20 % symmetric noise on the training labels; the test set
is the clean test split) and each seed (paired: every method of a seed starts from the same
weights, sees the same noisy labels and the same batch order):

- Run A (all training images, no intervention): per epoch, training and test accuracy and
  loss, and on the training images (all of them, or ``--nodes``) with their noisy labels the
  DeepNNK leave-one-out error (``nnk_graph``, cosine kernel, Euclidean candidates as in the
  published code) on the penultimate layer (relu3) for every ``--k`` and on the last conv
  block (relu2, flattened), the per-channel LOO errors of relu2 (``channel_nnk_graph``), and
  the LOO error of a plain k-nearest-neighbour vote on relu3 (same candidates, uniform
  weights).
- Run B (90 % train / 10 % held out, same seed): per epoch, validation error and loss and
  test accuracy.
- Run C: ``NNKEarlyStopping(mode="channel")`` on conv2 with the published semantics (every
  training image a node, Euclidean candidates, a channel frozen at its current weights, the
  model returned as it was at the last check at which any channel improved), with
  ``min_delta=0`` and with ``min_delta="auto"`` (the binomial standard error of the LOO
  estimate). Skipped, and said so in the report, where the callback lacks these options.

Offline, from the logs alone (no extra training): stops at patience 3, 5, 10 and 20 for the
NNK layer rule (relu3, k = the first ``--k``; min_delta 0 and "auto"), validation error,
validation loss, a training-accuracy plateau (a control: a rule that knows nothing about
generalisation), and hold-out-then-retrain (the epoch chosen on the held-out 10 % by
validation error, then the model trained on 100 % for that many epochs: Run A at that epoch,
which is exactly that retrain since nothing in training depends on the budget). Every rule
returns the model of its last improving epoch (also when the budget runs out first). Each
method's test accuracy, its regret against the best epoch of Run A in hindsight, and paired
differences with bootstrap 95 % confidence intervals; and across the checkpoints of Run A,
Kendall's tau of each training-set signal (NNK LOO, kNN LOO, training error) with the test
error.

Everything is logged to a JSON beside the report; ``--from-log run.json`` regenerates the
report from it without training. ``--quick`` is a smoke-test configuration (seconds).
Importing this module has no side effects.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import random
import shlex
import statistics
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

#: Written by hand into the report after reading the numbers.
INTERPRETATION_PLACEHOLDER = "_(interpretation: written by hand after reading the numbers)_"

PATIENCES = (3, 5, 10, 20)


class StudyCNN(nn.Module):
    """A small, fast CNN for 1 x 28 x 28 images (strided convolutions, no pooling).

    conv1 (1 -> c1, 5x5, stride 2) -> relu1       : c1 x 14 x 14
    conv2 (c1 -> c2, 3x3, stride 2) -> relu2      : c2 x 7 x 7
    flatten -> fc1 (c2 * 49 -> hidden) -> relu3   : hidden   (the penultimate layer)
    [dropout] -> fc2 (hidden -> 10)               : logits
    """

    def __init__(self, c1: int = 16, c2: int = 32, hidden: int = 64, dropout: float = 0.0,
                 num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, c1, 5, stride=2, padding=2)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c1, c2, 3, stride=2, padding=1)
        self.relu2 = nn.ReLU()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(c2 * 49, hidden)
        self.relu3 = nn.ReLU()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        x = self.relu3(self.fc1(self.flatten(x)))
        return self.fc2(self.dropout(x))


def train_one_epoch(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor,
                    y: torch.Tensor, batch_size: int, generator: torch.Generator) -> float:
    """One pass in a random order drawn from ``generator``; returns the mean loss."""
    model.train()
    order = torch.randperm(x.shape[0], generator=generator)
    total = 0.0
    for s in range(0, x.shape[0], batch_size):
        idx = order[s:s + batch_size]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        total += loss.item() * idx.numel()
    return total / x.shape[0]


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000):
    """(accuracy, mean cross-entropy) in eval mode; the previous mode is restored."""
    was_training = model.training
    model.eval()
    correct, loss = 0, 0.0
    for s in range(0, x.shape[0], batch_size):
        logits = model(x[s:s + batch_size])
        correct += (logits.argmax(1) == y[s:s + batch_size]).sum().item()
        loss += F.cross_entropy(logits, y[s:s + batch_size], reduction="sum").item()
    model.train(was_training)
    return correct / x.shape[0], loss / x.shape[0]


def add_label_noise(y: torch.Tensor, rate: float, seed: int, num_classes: int = 10) -> torch.Tensor:
    """Symmetric noise: a random ``rate`` share of the labels is replaced by a uniformly drawn
    *different* class."""
    if rate <= 0:
        return y.clone()
    g = torch.Generator().manual_seed(10_000 + seed)
    n = y.shape[0]
    flip = torch.randperm(n, generator=g)[: int(round(rate * n))]
    shift = torch.randint(1, num_classes, (flip.numel(),), generator=g)
    out = y.clone()
    out[flip] = (y[flip] + shift) % num_classes
    return out


def warm_up(x: torch.Tensor, y: torch.Tensor, batch_size: int = 128) -> None:
    """One untimed pass of a throwaway model, so the first timed run does not pay the
    one-off start-up costs (thread pool, oneDNN primitives)."""
    model = StudyCNN()
    opt = torch.optim.Adam(model.parameters())
    train_one_epoch(model, opt, x[:2048], y[:2048], batch_size, torch.Generator().manual_seed(0))
    evaluate(model, x[:2048], y[:2048])


def machine_info() -> Dict[str, object]:
    return {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "load_avg": os.getloadavg()}


def command_line() -> str:
    script = os.path.relpath(os.path.abspath(sys.argv[0]), os.getcwd())
    return " ".join(shlex.quote(a) for a in [".venv/bin/python", script] + sys.argv[1:])


# ------------------------------------------------------------------ statistics
def bootstrap_ci(values: Sequence[float], reps: int = 10000, seed: int = 0,
                 stat=statistics.mean) -> Tuple[float, float]:
    """Percentile 95 % interval of ``stat`` over resamples (with replacement) of ``values``."""
    values = list(values)
    if len(values) < 2:
        return (float("nan"), float("nan"))
    rng = random.Random(seed)
    draws = sorted(stat(rng.choices(values, k=len(values))) for _ in range(reps))
    return draws[int(0.025 * reps)], draws[min(reps - 1, int(0.975 * reps))]


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b (scipy); 0 where one side is constant (no ranking to agree with)."""
    from scipy.stats import kendalltau

    if len(set(a)) < 2 or len(set(b)) < 2:
        return 0.0
    return float(kendalltau(a, b)[0])


def last_improvement(scores: Sequence[float], patience: int, min_delta=0.0,
                     num_points: int = 0, lower_is_better: bool = True) -> Tuple[int, int, bool]:
    """Replays a patience rule on a score per epoch (epochs 1..E).

    A score improves when it beats the best so far by more than ``min_delta`` (``"auto"``:
    the binomial standard error sqrt(e (1 - e) / num_points) of the best error e). Returns
    (stop epoch, epoch of the last improvement, stopped before the budget ran out)."""
    best, best_epoch, wait = None, 1, 0
    for e, s in enumerate(scores, start=1):
        v = s if lower_is_better else -s
        if best is None:
            best, best_epoch = v, e
            continue
        if min_delta == "auto":
            err = best if lower_is_better else -best
            delta = math.sqrt(max(err * (1 - err), 0.0) / num_points)
        else:
            delta = float(min_delta)
        if v < best - delta:
            best, best_epoch, wait = v, e, 0
        else:
            wait += 1
            if wait >= patience:
                return e, best_epoch, True
    return len(scores), best_epoch, False


# ------------------------------------------------------------------ signals of one model
@torch.no_grad()
def forward_all(model: "StudyCNN", x: torch.Tensor, batch_size: int = 1000):
    """(logits, relu2 [N, C, 7, 7], relu3 [N, hidden]) in eval mode."""
    was = model.training
    model.eval()
    logits, h2s, h3s = [], [], []
    for s in range(0, x.shape[0], batch_size):
        h2 = model.relu2(model.conv2(model.relu1(model.conv1(x[s:s + batch_size]))))
        h3 = model.relu3(model.fc1(model.flatten(h2)))
        logits.append(model.fc2(model.dropout(h3)))
        h2s.append(h2)
        h3s.append(h3)
    model.train(was)
    return torch.cat(logits), torch.cat(h2s), torch.cat(h3s)


def nnk_loo(feats: torch.Tensor, y: torch.Tensor, k: int, metric: str) -> float:
    import torch_geometry as tg
    from torch_geometry.metrics import loo_error

    g = tg.nnk_graph(feats.flatten(1), k, candidate_metric=metric)
    return float(loo_error(g, y, num_classes=10)[0].mean())


def knn_loo(feats: torch.Tensor, y: torch.Tensor, k: int, metric: str) -> float:
    """Leave-one-out error of a plain k-NN vote (uniform weights over the same candidates;
    ties to the lowest class): the NNK LOO operator on the kNN graph with weights 1."""
    import torch_geometry as tg

    nbr, _ = tg.knn_graph(feats.flatten(1), k, candidate_metric=metric)
    w = (nbr >= 0).to(feats.dtype)
    return float(torch.ops.torch_geometry.nnk_loo_error(nbr, w, y, 10)[0].mean())


def channel_loo(h2: torch.Tensor, y: torch.Tensor, k: int, metric: str) -> List[float]:
    from torch_geometry.channelwise import channel_graphs, channel_loo_error

    return [float(v) for v in channel_loo_error(channel_graphs(h2, k, candidate_metric=metric), y)]


def epoch_signals(model, x, y, x_test, y_test, nodes: torch.Tensor, cfg, epoch: int) -> dict:
    """Everything Run A logs after one epoch."""
    logits, h2, h3 = forward_all(model, x)
    row = {"train_acc": float((logits.argmax(1) == y).double().mean()),
           "train_loss": float(F.cross_entropy(logits, y))}
    row["test_acc"], row["test_loss"] = evaluate(model, x_test, y_test)
    yn, h2n, h3n = y[nodes], h2[nodes], h3[nodes]
    t = time.perf_counter()
    for k in cfg.k:
        row[f"nnk_relu3_k{k}"] = nnk_loo(h3n, yn, k, cfg.candidate_metric)
    row["nnk_relu2_k%d" % cfg.k[0]] = nnk_loo(h2n, yn, cfg.k[0], cfg.candidate_metric)
    row["knn_relu3_k%d" % cfg.k[0]] = knn_loo(h3n, yn, cfg.k[0], cfg.candidate_metric)
    row["nnk_s"] = time.perf_counter() - t
    if cfg.channel_every > 0 and (epoch % cfg.channel_every == 0 or epoch == 1):
        t = time.perf_counter()
        row["channel_loo"] = channel_loo(h2n, yn, cfg.k[0], cfg.candidate_metric)
        row["channel_s"] = time.perf_counter() - t
    return row


# ------------------------------------------------------------------ runs
def _new_model(seed: int, cfg):
    torch.manual_seed(seed)
    model = StudyCNN(c1=cfg.c1, c2=cfg.c2, hidden=cfg.hidden)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    return model, opt, torch.Generator().manual_seed(seed)


def run_a(x, y, x_test, y_test, seed, nodes, cfg) -> dict:
    model, opt, gen = _new_model(seed, cfg)
    curve, t_train = [], 0.0
    for epoch in range(1, cfg.max_epochs + 1):
        t = time.perf_counter()
        loss = train_one_epoch(model, opt, x, y, cfg.batch_size, gen)
        t_train += time.perf_counter() - t
        row = {"epoch": epoch, "batch_loss": loss}
        row.update(epoch_signals(model, x, y, x_test, y_test, nodes, cfg, epoch))
        curve.append(row)
        if cfg.checkpoint_dir:
            os.makedirs(cfg.checkpoint_dir, exist_ok=True)
            torch.save(model.state_dict(), os.path.join(
                cfg.checkpoint_dir, f"A_noise{cfg._noise}_seed{seed}_epoch{epoch}.pt"))
    return {"curve": curve, "train_s": t_train}


def split_90_10(n: int, seed: int, fraction: float) -> Tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(20_000 + seed)
    perm = torch.randperm(n, generator=g)
    n_val = int(round(fraction * n))
    return perm[n_val:], perm[:n_val]


def run_b(x, y, x_test, y_test, seed, cfg) -> dict:
    tr, val = split_90_10(x.shape[0], seed, cfg.val_fraction)
    model, opt, gen = _new_model(seed, cfg)
    curve = []
    for epoch in range(1, cfg.max_epochs + 1):
        train_one_epoch(model, opt, x[tr], y[tr], cfg.batch_size, gen)
        val_acc, val_loss = evaluate(model, x[val], y[val])
        test_acc, _ = evaluate(model, x_test, y_test)
        curve.append({"epoch": epoch, "val_err": 1 - val_acc, "val_loss": val_loss,
                      "test_acc": test_acc})
    return {"curve": curve, "n_val": int(val.numel())}


def run_c(x, y, x_test, y_test, seed, nodes, cfg, min_delta) -> dict:
    """CW-DeepNNK with the published semantics through the library's callback."""
    from torch_geometry.callbacks import NNKEarlyStopping

    model, opt, gen = _new_model(seed, cfg)
    try:
        es = NNKEarlyStopping(model, "relu2", (x[nodes], y[nodes]), mode="channel",
                              conv="conv2", optimizer=opt, patience=cfg.channel_patience,
                              k=cfg.k[0], min_delta=min_delta, max_points=None,
                              restore_best_weights=False, restore_on_stop="last_improvement",
                              candidate_metric=cfg.candidate_metric, verbose=False,
                              check_every=getattr(cfg, "channel_check_every", 1))
    except (TypeError, ValueError) as e:
        return {"unavailable": f"{type(e).__name__}: {e}"}
    frozen, stopped, t_check, epoch = [], False, 0.0, 0
    for epoch in range(1, cfg.max_epochs + 1):
        train_one_epoch(model, opt, x, y, cfg.batch_size, gen)
        t = time.perf_counter()
        stopped = es.step(epoch - 1)
        t_check += time.perf_counter() - t
        frozen.append(len(es.frozen_channels))
        if stopped:
            break
    # The budget ran out first: the published method still returns the model of the last
    # check at which any channel improved.
    es.finish(epoch - 1)                  # the callback counts epochs from 0
    returned = es.last_improvement_epoch + 1
    return {"epochs": epoch, "returned_epoch": returned if returned >= 1 else epoch,
            "stopped": bool(stopped), "check_s": t_check,
            "test_acc": evaluate(model, x_test, y_test)[0], "frozen_per_epoch": frozen,
            "stop_reason": getattr(es, "stop_reason", None)}


# ------------------------------------------------------------------ offline analysis
def method_table(run: dict, cfg: dict) -> Dict[str, dict]:
    """Every method's (epoch returned, stop epoch, stopped, test accuracy) for one run."""
    a, b = run["A"]["curve"], run["B"]["curve"]
    acc_a = [r["test_acc"] for r in a]
    acc_b = [r["test_acc"] for r in b]
    n_nodes = run["num_nodes"]
    k0 = cfg["k"][0]
    out = {}

    def add(name, scores, curve_acc, patience, min_delta=0.0, lower=True):
        stop, ret, stopped = last_improvement(scores, patience, min_delta, n_nodes, lower)
        out[name] = {"epoch": ret, "stop": stop, "stopped": stopped,
                     "test_acc": curve_acc[ret - 1]}

    for p in PATIENCES:
        add(f"nnk-layer p{p}", [r[f"nnk_relu3_k{k0}"] for r in a], acc_a, p)
        add(f"nnk-layer auto p{p}", [r[f"nnk_relu3_k{k0}"] for r in a], acc_a, p, "auto")
        if f"nnk_relu2_k{k0}" in a[0]:      # the same rule on the last conv block
            add(f"nnk-conv p{p}", [r[f"nnk_relu2_k{k0}"] for r in a], acc_a, p)
            add(f"nnk-conv auto p{p}", [r[f"nnk_relu2_k{k0}"] for r in a], acc_a, p, "auto")
        if f"knn_relu3_k{k0}" in a[0]:      # a plain kNN vote instead of NNK
            add(f"knn-layer p{p}", [r[f"knn_relu3_k{k0}"] for r in a], acc_a, p)
        add(f"val-error p{p}", [r["val_err"] for r in b], acc_b, p)
        add(f"val-loss p{p}", [r["val_loss"] for r in b], acc_b, p)
        add(f"train-acc plateau p{p}", [r["train_acc"] for r in a], acc_a, p, lower=False)
        ve = out[f"val-error p{p}"]
        out[f"holdout-retrain p{p}"] = {"epoch": ve["epoch"], "stop": ve["stop"],
                                        "stopped": ve["stopped"],
                                        "test_acc": acc_a[ve["epoch"] - 1]}
    last = len(acc_a)
    out["fixed budget"] = {"epoch": last, "stop": last, "stopped": False,
                           "test_acc": acc_a[-1]}
    for key, c in run.get("C", {}).items():
        if "unavailable" not in c:
            out[f"cw-deepnnk {key}"] = {"epoch": c.get("returned_epoch", c["epochs"]),
                                        "stop": c["epochs"],
                                        "stopped": c["stopped"], "test_acc": c["test_acc"]}
    return out


def oracle(run: dict) -> Tuple[int, float]:
    a = run["A"]["curve"]
    best = max(a, key=lambda r: r["test_acc"])
    return best["epoch"], best["test_acc"]


def analyse(log: dict) -> dict:
    cfg = log["config"]
    res = {"methods": {}, "paired": {}, "tau": {}}
    by_noise: Dict[float, List[dict]] = {}
    for run in log["runs"]:
        by_noise.setdefault(run["noise"], []).append(run)
    groups = {f"{int(round(100 * n))} %": rs for n, rs in sorted(by_noise.items())}
    if len(by_noise) > 1:
        groups["both"] = log["runs"]
    k0 = cfg["k"][0]
    signals = [(f"nnk_relu3_k{k}", f"NNK LOO error, relu3, k = {k}") for k in cfg["k"]]
    signals += [(f"nnk_relu2_k{k0}", f"NNK LOO error, relu2 (conv block), k = {k0}"),
                (f"knn_relu3_k{k0}", f"kNN LOO error, relu3, k = {k0}"),
                ("train_err", "training error (noisy labels)"),
                ("train_loss", "training loss (noisy labels)")]
    for g, runs in groups.items():
        tables = [method_table(r, cfg) for r in runs]
        oracles = [oracle(r) for r in runs]
        names = [m for m in tables[0] if all(m in t for t in tables)]
        rows = {}
        for m in names:
            acc = [t[m]["test_acc"] for t in tables]
            regret = [o[1] - t[m]["test_acc"] for o, t in zip(oracles, tables)]
            rows[m] = {"test_acc": acc, "regret": regret,
                       "epoch": [t[m]["epoch"] for t in tables],
                       "stopped": sum(t[m]["stopped"] for t in tables), "n": len(tables)}
        rows["oracle (hindsight, Run A)"] = {
            "test_acc": [o[1] for o in oracles], "regret": [0.0] * len(oracles),
            "epoch": [o[0] for o in oracles], "stopped": 0, "n": len(oracles)}
        res["methods"][g] = rows
        # Against the published baseline (validation error) at the same patience, and the
        # NNK rule against the fair competitor (hold-out-then-retrain).
        pairs = []
        for p in PATIENCES:
            ref = f"val-error p{p}"
            for m in (f"nnk-layer p{p}", f"nnk-layer auto p{p}", f"nnk-conv p{p}",
                      f"nnk-conv auto p{p}", f"knn-layer p{p}", f"val-loss p{p}",
                      f"train-acc plateau p{p}", f"holdout-retrain p{p}"):
                pairs.append((m, ref))
            for m in (f"nnk-layer p{p}", f"nnk-layer auto p{p}", f"nnk-conv p{p}",
                      f"nnk-conv auto p{p}"):
                pairs.append((m, f"holdout-retrain p{p}"))
        for m in names:
            if m.startswith("cw-deepnnk") or m == "fixed budget":
                pairs += [(m, "val-error p10"), (m, "holdout-retrain p10")]
            if m.startswith("cw-deepnnk"):      # the two NNK rules on the conv block
                pairs.append((m, "nnk-conv p5"))
        paired = {}
        for m, ref in pairs:
            if m not in names or ref not in names:
                continue
            d = [t[m]["test_acc"] - t[ref]["test_acc"] for t in tables]
            lo, hi = bootstrap_ci(d)
            paired[f"{m} - {ref}"] = {"mean": statistics.mean(d), "lo": lo, "hi": hi,
                                      "diffs": d}
        res["paired"][g] = paired
        taus = {}
        for key, label in signals:
            per_run = []
            for r in runs:
                a = r["A"]["curve"]
                sig = [(1 - c["train_acc"]) if key == "train_err" else c[key] for c in a]
                per_run.append(kendall_tau(sig, [1 - c["test_acc"] for c in a]))
            lo, hi = bootstrap_ci(per_run)
            taus[label] = {"mean": statistics.mean(per_run), "lo": lo, "hi": hi,
                           "per_run": per_run}
        res["tau"][g] = taus
    return res


# ------------------------------------------------------------------ report
def _ms(values: List[float], fmt: str = ".4f") -> str:
    if len(values) == 1:
        return f"{values[0]:{fmt}}"
    return f"{statistics.mean(values):{fmt}} ± {statistics.stdev(values):{fmt}}"


def _ci(v: dict, fmt: str = "+.4f") -> str:
    if math.isnan(v["lo"]):
        return f"{v['mean']:{fmt}}"
    return f"{v['mean']:{fmt}} [{v['lo']:{fmt}}, {v['hi']:{fmt}}]"


def _whole_study_min(log: dict) -> float:
    """Minutes of every invocation that wrote the log (the first, --add-run-c, --add-seeds)."""
    return sum(log.get(k, 0.0) for k in ("total_s", "total_s_run_c", "total_s_add_seeds")) / 60


def write_markdown(path: str, log: dict, interpretation: str = INTERPRETATION_PLACEHOLDER):
    cfg, info, res = log["config"], log["machine"], analyse(log)
    whole_min = _whole_study_min(log)
    k0 = cfg["k"][0]
    n_nodes = sorted({r["num_nodes"] for r in log["runs"]})
    lines = [
        "# Early stopping without validation data: DeepNNK / CW-DeepNNK vs validation "
        "(Fashion-MNIST)", "",
        f"Produced by `{log['command']}`"
        + (f", Run C added by `{log['command_run_c']}` "
           f"({log.get('total_s_run_c', 0) / 60:.1f} min)" if "command_run_c" in log else "")
        + (f", seeds added by `{log['command_add_seeds']}` "
           f"({log.get('total_s_add_seeds', 0) / 60:.1f} min)"
           if "command_add_seeds" in log else "")
        + " (from the repository root); the tables regenerate from the JSON beside this file "
        "with `--from-log`.", "",
        f"Machine: torch {info['torch']}, {info['threads']} threads, {info['cpus']} CPUs "
        f"shared with other jobs (load average {info['load_avg'][0]:.1f} at the start, "
        f"{info['load_avg_end'][0]:.1f} at the end), Python {info['python']}. Whole study: "
        f"{whole_min:.1f} min"
        + (f" ({log['total_s'] / 60:.1f} in the first invocation)"
           if whole_min > log['total_s'] / 60 + 0.05 else "") + ".", "",
        f"Setup: `StudyCNN` (conv {cfg['c1']} 5x5/2, conv {cfg['c2']} 3x3/2, fc "
        f"{cfg['hidden']}, fc 10; Adam lr {cfg['lr']}, batch {cfg['batch_size']}) on the first "
        f"{cfg['train_size']} Fashion-MNIST training images, tested on {cfg['test_size']} clean "
        f"test images; seeds {', '.join(map(str, cfg['seeds']))} (paired); {cfg['max_epochs']} "
        f"epochs. Label noise: a random share of the training labels replaced by a random other "
        f"class (Run B's held-out 10 % and every NNK graph use these noisy labels). NNK: cosine "
        f"kernel, {cfg['candidate_metric']} candidates, nodes = {n_nodes} training images "
        f"(the first of each class, stratified), k = {', '.join(map(str, cfg['k']))}. Methods "
        f"return the model of their last improving epoch (also when the budget runs out).", "",
        "Methods: `nnk-layer` = the DeepNNK rule on the NNK LOO error of the penultimate layer "
        "(relu3), `nnk-conv` = the same on the last conv block (relu2, flattened), `knn-layer` "
        "= the same rule on a plain kNN vote (relu3), `auto` = `min_delta=\"auto\"` (else 0), "
        "`pN` = patience N epochs; `val-error` / `val-loss` watch Run B's held-out 10 %, "
        "`holdout-retrain` takes val-error's epoch from Run A (trained on 100 %), "
        "`train-acc plateau` is a control that knows nothing about generalisation, "
        "`cw-deepnnk` is Run C, `fixed budget` the last epoch of Run A.", "",
        DEVIATIONS_HEADING, "", DEVIATIONS_PLACEHOLDER, "",
    ]
    for g, rows in res["methods"].items():
        lines += [f"## Methods, label noise {g}", "",
                  "| method | test accuracy (mean ± sd) | regret vs best epoch in hindsight "
                  "(mean [95 % CI]) | epoch returned (mean [min-max]) | stopped before the "
                  "budget |", "|---|---|---|---|---|"]
        for m, r in rows.items():
            reg = {"mean": statistics.mean(r["regret"])}
            reg["lo"], reg["hi"] = bootstrap_ci(r["regret"])
            ep = r["epoch"]
            lines.append(f"| {m} | {_ms(r['test_acc'])} | {_ci(reg, '.4f')} | "
                         f"{statistics.mean(ep):.1f} [{min(ep)}-{max(ep)}] | "
                         f"{r['stopped']}/{r['n']} |")
        lines += ["", f"Paired differences of test accuracy, label noise {g} (mean [bootstrap "
                  "95 % CI over the paired runs]; an interval that excludes 0 is "
                  "distinguishable from 0 at this number of runs):", "",
                  "| difference | mean [95 % CI] | distinguishable from 0 |", "|---|---|---|"]
        for name, v in res["paired"][g].items():
            sep = (not math.isnan(v["lo"])) and (v["lo"] > 0 or v["hi"] < 0)
            lines.append(f"| {name} | {_ci(v)} | {'yes' if sep else 'no'} |")
        lines.append("")
    lines += ["## Does the training-set LOO error track the test error across checkpoints?", "",
              "Kendall tau between each signal and the test error over the epochs of Run A, "
              "per run, then the mean over runs [bootstrap 95 % CI over runs] (+1 = the signal "
              "orders the checkpoints exactly as the test error does):", "",
              "| signal | " + " | ".join(res["tau"]) + " |", "|---|" + "---|" * len(res["tau"])]
    labels = list(next(iter(res["tau"].values())))
    for label in labels:
        lines.append(f"| {label} | " + " | ".join(
            _ci(res["tau"][g][label], "+.3f") for g in res["tau"]) + " |")
    lines += ["", "## Trajectories (Run A, mean over seeds)", "",
              "| noise | signal | " + " | ".join(str(e) for e in range(1, cfg["max_epochs"] + 1))
              + " |", "|---|---|" + "---|" * cfg["max_epochs"]]
    for noise in sorted({r["noise"] for r in log["runs"]}):
        runs = [r for r in log["runs"] if r["noise"] == noise]
        for key in ("test_acc", "train_acc", f"nnk_relu3_k{k0}", f"nnk_relu2_k{k0}",
                    f"knn_relu3_k{k0}"):
            means = [statistics.mean(r["A"]["curve"][e][key] for r in runs)
                     for e in range(cfg["max_epochs"])]
            lines.append(f"| {int(round(100 * noise))} % | {key} | "
                         + " | ".join(f"{m:.3f}" for m in means) + " |")
        means = [statistics.mean(r["B"]["curve"][e]["val_err"] for r in runs)
                 for e in range(cfg["max_epochs"])]
        lines.append(f"| {int(round(100 * noise))} % | val_err (Run B) | "
                     + " | ".join(f"{m:.3f}" for m in means) + " |")
        ch = [[statistics.mean(r["A"]["curve"][e]["channel_loo"]) for r in runs]
              if "channel_loo" in runs[0]["A"]["curve"][e] else None
              for e in range(cfg["max_epochs"])]
        if any(ch):
            lines.append(f"| {int(round(100 * noise))} % | mean channel LOO (relu2) | "
                         + " | ".join(f"{statistics.mean(c):.3f}" if c else "" for c in ch)
                         + " |")
    lines += ["", "## Run C: CW-DeepNNK through `NNKEarlyStopping` (channel mode)", ""]
    for r in log["runs"]:
        for key, c in r.get("C", {}).items():
            head = f"- {int(round(100 * r['noise']))} %, seed {r['seed']}, {key}: "
            if "unavailable" in c:
                lines.append(head + f"not run ({c['unavailable']})")
            else:
                lines.append(head + f"{c['epochs']} epochs, stopped {c['stopped']}, model of "
                             f"epoch {c.get('returned_epoch', c['epochs'])}, test acc "
                             f"{c['test_acc']:.4f}, channels frozen per epoch "
                             f"{c['frozen_per_epoch']}, checks {c['check_s']:.0f} s")
    if not any(r.get("C") for r in log["runs"]):
        lines.append("- not run (`--no-run-c`)")
    lines += ["", "## Interpretation", "", interpretation, ""]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines))


#: Replaced by the text of --deviations (a file), or kept from the existing report.
DEVIATIONS_PLACEHOLDER = "_(deviations: stated by hand)_"
DEVIATIONS_HEADING = "## Deviations (from the issue and from the published setup)"


# ------------------------------------------------------------------ main
def stratified_nodes(y: torch.Tensor, n: int) -> torch.Tensor:
    """The first ``n`` indices taking the classes in turn (all of them when n >= N)."""
    if n >= y.shape[0]:
        return torch.arange(y.shape[0])
    per = [torch.nonzero(y == c).flatten().tolist() for c in torch.unique(y).tolist()]
    out, i = [], 0
    while len(out) < n:
        for p in per:
            if i < len(p) and len(out) < n:
                out.append(p[i])
        i += 1
    return torch.tensor(sorted(out))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--max-epochs", type=int, default=30)
    p.add_argument("--train-size", type=int, default=10000)
    p.add_argument("--test-size", type=int, default=10000)
    p.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.2])
    p.add_argument("--nodes", type=int, default=10000,
                   help="training images used as graph nodes (all when >= --train-size)")
    p.add_argument("--k", type=int, nargs="+", default=[25, 50])
    p.add_argument("--candidate-metric", default="euclidean", choices=["euclidean", "kernel"])
    p.add_argument("--channel-every", type=int, default=1,
                   help="log the per-channel LOO errors of relu2 at epoch 1 and every that many "
                        "epochs (0: never)")
    p.add_argument("--run-c", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--add-run-c", action="store_true",
                   help="run only C, for every run of the existing JSON log beside --out")
    p.add_argument("--add-seeds", action="store_true",
                   help="add Runs A and B (and C at the noise levels whose runs have it) for "
                        "the --seeds the JSON log beside --out lacks, with the log's "
                        "configuration")
    p.add_argument("--channel-patience", type=int, default=20,
                   help="Run C: checks without improvement before a channel freezes")
    p.add_argument("--channel-check-every", type=int, default=1,
                   help="Run C: check every this many epochs (published: 1, or 10 with "
                        "patience 2)")
    p.add_argument("--c1", type=int, default=16)
    p.add_argument("--c2", type=int, default=32)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--checkpoint-dir", default="",
                   help="save Run A's state_dict after every epoch there (not by default)")
    p.add_argument("--out", default="docs/results/early_stopping.md",
                   help="markdown report; the JSON log goes beside it (same name, .json)")
    p.add_argument("--from-log", default="",
                   help="regenerate the report from this JSON log (no training)")
    p.add_argument("--deviations", default="", help="markdown file with the deviations text")
    p.add_argument("--interpretation", default="",
                   help="markdown file with the interpretation text")
    p.add_argument("--quick", action="store_true",
                   help="tiny configuration for a smoke test (overrides the sizes)")
    cfg = p.parse_args(argv)
    if cfg.quick:
        cfg.seeds, cfg.max_epochs, cfg.train_size, cfg.test_size = [0, 1], 3, 400, 500
        cfg.nodes, cfg.k, cfg.c1, cfg.c2, cfg.hidden = 300, [10, 15], 4, 8, 16
        cfg.channel_patience = 1
    if min(cfg.k) < 1 or min(cfg.nodes, cfg.train_size) <= max(cfg.k):
        p.error(f"--k should be >= 1 and below the number of nodes, got {cfg.k}")
    if cfg.max_epochs < 1:
        p.error("--max-epochs should be >= 1")
    return cfg


def run_c_both(x, y, x_test, y_test, seed, nodes, cfg) -> dict:
    return {"min_delta 0": run_c(x, y, x_test, y_test, seed, nodes, cfg, 0.0),
            "min_delta auto": run_c(x, y, x_test, y_test, seed, nodes, cfg, "auto")}


def add_run_c(cfg, json_path, x, y_clean, x_test, y_test) -> None:
    """Runs C for the (noise, seed) runs of an existing log chosen by --noise and --seeds,
    with the log's configuration, and adds it to the log (Runs A and B are not repeated)."""
    with open(json_path) as f:
        log = json.load(f)
    run_cfg = argparse.Namespace(**log["config"])
    run_cfg.channel_patience = cfg.channel_patience
    run_cfg.channel_check_every = cfg.channel_check_every
    log["config"]["channel_patience"] = cfg.channel_patience
    log["config"]["channel_check_every"] = cfg.channel_check_every
    # A second --add-run-c (other noise levels or seeds) is listed after the first.
    log["command_run_c"] = "; then ".join(
        c for c in (log.get("command_run_c"), command_line()) if c)
    t0 = time.perf_counter() - log.get("total_s_run_c", 0.0)
    for run in log["runs"]:
        if run["noise"] not in cfg.noise or run["seed"] not in cfg.seeds:
            continue        # --noise and --seeds choose the runs that get a Run C
        y = add_label_noise(y_clean, run["noise"], run["seed"])
        nodes = stratified_nodes(y, run_cfg.nodes)
        run["C"] = run_c_both(x, y, x_test, y_test, run["seed"], nodes, run_cfg)
        print(f"run C noise {run['noise']:.2f} seed {run['seed']}: " + ", ".join(
            f"{k} {v.get('test_acc', v.get('unavailable'))}" for k, v in run["C"].items()),
            flush=True)
        log["total_s_run_c"] = time.perf_counter() - t0
        with open(json_path, "w") as f:
            json.dump(log, f, indent=1)
    report(cfg.out, log, _read(cfg.deviations), _read(cfg.interpretation))


def one_run(x, y_clean, x_test, y_test, noise, seed, cfg, with_c: bool) -> dict:
    """Runs A and B (and C when with_c) of one (noise, seed) pair."""
    cfg._noise = noise
    y = add_label_noise(y_clean, noise, seed)
    nodes = stratified_nodes(y, cfg.nodes)
    t = time.perf_counter()
    run = {"noise": noise, "seed": seed, "num_nodes": int(nodes.numel()),
           "actual_noise": float((y != y_clean).float().mean()),
           "A": run_a(x, y, x_test, y_test, seed, nodes, cfg),
           "B": run_b(x, y, x_test, y_test, seed, cfg)}
    if with_c:
        run["C"] = run_c_both(x, y, x_test, y_test, seed, nodes, cfg)
    run["wall_s"] = time.perf_counter() - t
    a = run["A"]["curve"]
    print(f"noise {noise:.2f} seed {seed} ({run['wall_s']:.0f} s): test acc A "
          f"{a[-1]['test_acc']:.4f} (best {max(r['test_acc'] for r in a):.4f}), "
          f"nnk {a[-1]['nnk_s']:.1f} s/epoch", flush=True)
    return run


def add_seeds(cfg, json_path, x, y_clean, x_test, y_test) -> None:
    """Adds the (noise, seed) runs of --seeds that an existing log lacks, at the log's noise
    levels and with its configuration (Run C where the log's runs at that noise have it)."""
    with open(json_path) as f:
        log = json.load(f)
    run_cfg = argparse.Namespace(**log["config"])
    have = {(r["noise"], r["seed"]) for r in log["runs"]}
    with_c = {r["noise"] for r in log["runs"] if "C" in r}
    log["command_add_seeds"] = command_line()
    t0 = time.perf_counter()
    for noise in run_cfg.noise:
        for seed in cfg.seeds:
            if (noise, seed) in have:
                continue
            log["runs"].append(one_run(x, y_clean, x_test, y_test, noise, seed, run_cfg,
                                       noise in with_c))
            log["config"]["seeds"] = sorted({r["seed"] for r in log["runs"]})
            log["total_s_add_seeds"] = time.perf_counter() - t0
            with open(json_path, "w") as f:         # after every run: a partial log survives
                json.dump(log, f, indent=1)
    report(cfg.out, log, _read(cfg.deviations), _read(cfg.interpretation))


def _read(path: str) -> str:
    if not path:
        return ""
    with open(path) as f:
        return f.read().strip()


def hand_written(path: str, heading: str) -> str:
    """The text under ``heading`` in an existing report (up to the next "## " heading), so
    that regenerating the tables keeps what was written by hand; "" when there is none."""
    if not os.path.isfile(path):
        return ""
    with open(path) as f:
        text = f.read()
    start = text.find("\n" + heading + "\n")
    if start < 0:
        return ""
    body = text[start + len(heading) + 2:]
    end = body.find("\n## ")
    body = (body if end < 0 else body[:end]).strip()
    return "" if body.startswith("_(") else body


def report(out: str, log: dict, deviations: str, interpretation: str) -> None:
    deviations = deviations or hand_written(out, DEVIATIONS_HEADING)
    interpretation = interpretation or hand_written(out, "## Interpretation")
    write_markdown(out, log, interpretation or INTERPRETATION_PLACEHOLDER)
    if deviations:
        with open(out) as f:
            text = f.read()
        with open(out, "w") as f:
            f.write(text.replace(DEVIATIONS_PLACEHOLDER, deviations))


def main(argv=None):
    cfg = parse_args(argv)
    if cfg.from_log:
        with open(cfg.from_log) as f:
            log = json.load(f)
        report(cfg.out, log, _read(cfg.deviations), _read(cfg.interpretation))
        print(f"wrote {cfg.out} from {cfg.from_log}")
        return
    torch.set_num_threads(cfg.threads)
    from torch_geometry.datasets import load_fashion_mnist

    cmd, info = command_line(), machine_info()
    t0 = time.perf_counter()
    json_path = os.path.splitext(cfg.out)[0] + ".json"
    if cfg.add_run_c or cfg.add_seeds:          # the data of the logged runs
        with open(json_path) as f:
            logged = json.load(f)["config"]
        cfg.train_size, cfg.test_size = logged["train_size"], logged["test_size"]
    x, y_clean = load_fashion_mnist("train", n=cfg.train_size, flatten=False)
    x_test, y_test = load_fashion_mnist("test", n=cfg.test_size, flatten=False)
    warm_up(x, y_clean, cfg.batch_size)
    os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
    if cfg.add_run_c:
        add_run_c(cfg, json_path, x, y_clean, x_test, y_test)
        return
    if cfg.add_seeds:
        add_seeds(cfg, json_path, x, y_clean, x_test, y_test)
        return
    log = {"command": cmd, "machine": info, "config": vars(cfg), "runs": []}
    for noise in cfg.noise:
        for seed in cfg.seeds:
            log["runs"].append(one_run(x, y_clean, x_test, y_test, noise, seed, cfg, cfg.run_c))
            log["total_s"] = time.perf_counter() - t0
            info["load_avg_end"] = os.getloadavg()
            with open(json_path, "w") as f:         # after every run: a partial log survives
                json.dump(log, f, indent=1)
    report(cfg.out, log, _read(cfg.deviations), _read(cfg.interpretation))
    print(f"wrote {cfg.out} and {json_path} ({log['total_s'] / 60:.1f} min)")


if __name__ == "__main__":
    main()
