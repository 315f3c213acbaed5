"""Validation-free early stopping on Fashion-MNIST with and without label noise.

Compares, for a small CNN trained on a Fashion-MNIST training subset (default 10,000 images)
with 0 % and 20 % symmetric label noise (noise on the training labels only; the test set is
the clean 10,000-image test split), over several seeds:

- ``validation``: hold out 10 % of the (noisy) subset, train on the other 90 %, patience on
  the validation loss, restore the best weights when stopping;
- ``nnk-layer``: ``NNKEarlyStopping(mode="layer")`` on the penultimate layer (``relu3``),
  all the data used for training;
- ``nnk-channel``: ``NNKEarlyStopping(mode="channel")`` on the last conv block (``relu2``,
  freezing the channels of ``conv2``), all the data used for training;
- ``fixed``: a fixed budget of ``--max-epochs`` epochs, final weights.

The NNK probe set is a stratified subset of the *noisy* training data (no clean data is
assumed anywhere). ``nnk-layer`` changes nothing in training until it stops (it only reads
the probe activations), so it shares its trajectory with ``fixed``: the same seed gives the
same weights epoch by epoch, the stop is decided at the same epoch, and its wall time is
the training time up to the stop plus the time of its own NNK checks, exactly what a
separate run would take. No method restores weights when it reaches the budget without
stopping (as Lightning's EarlyStopping); the tables count the runs that stopped early.

Writes a markdown report (default ``docs/results/early_stopping.md``) with the exact command
and machine, and a JSON with every run beside it.

Run: ``.venv/bin/python examples/early_stopping_study.py`` (about 6 min on 2 idle threads,
several times longer on a loaded machine),
or ``--quick`` for a smoke test (seconds). Importing this module has no side effects.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shlex
import statistics
import sys
import time
from typing import Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

#: Written by hand into the report after reading the numbers.
INTERPRETATION_PLACEHOLDER = "_(interpretation: written by hand after reading the numbers)_"

METHODS = ("validation", "nnk-layer", "nnk-channel", "fixed")
METHOD_LABELS = {
    "validation": "(a) validation (10 % held out, val loss)",
    "nnk-layer": "(b) NNK, layer mode (relu3)",
    "nnk-channel": "(c) NNK, channel mode (relu2 / conv2)",
    "fixed": "(d) fixed budget",
}


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


# ------------------------------------------------------------------ the methods
def _new_model(seed: int, lr: float):
    torch.manual_seed(seed)
    model = StudyCNN()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    return model, opt, torch.Generator().manual_seed(seed)


def run_fixed_and_nnk_layer(x, y, x_test, y_test, seed, cfg) -> Dict[str, dict]:
    """``fixed`` and ``nnk-layer`` on one trajectory (see the module docstring)."""
    from torch_geometry.callbacks import NNKEarlyStopping

    model, opt, gen = _new_model(seed, cfg.lr)
    es = NNKEarlyStopping(model, "relu3", (x, y), mode="layer", patience=cfg.patience,
                          k=cfg.k, max_points=cfg.probe_size, seed=seed, verbose=False)
    t_train, t_check = 0.0, 0.0
    layer: Optional[dict] = None
    curve, loo_curve = [], []
    for epoch in range(cfg.max_epochs):
        t = time.perf_counter()
        loss = train_one_epoch(model, opt, x, y, cfg.batch_size, gen)
        t_train += time.perf_counter() - t
        if layer is None:
            snapshot = copy.deepcopy(model.state_dict())
            t = time.perf_counter()
            stop = es.step(epoch)
            t_check += time.perf_counter() - t
            loo_curve.append(es.last_scores[0])
            if stop or epoch == cfg.max_epochs - 1:
                layer = {"epochs": epoch + 1, "stopped": bool(stop),
                         "test_acc": evaluate(model, x_test, y_test)[0],
                         "wall_s": t_train + t_check, "check_s": t_check,
                         "best_loo_error": es.best_score, "stop_reason": es.stop_reason,
                         "loo_curve": list(loo_curve)}
                model.load_state_dict(snapshot)        # fixed goes on from the unrestored weights
        curve.append({"epoch": epoch + 1, "train_loss": loss,
                      "test_acc": evaluate(model, x_test, y_test)[0]})
    fixed = {"epochs": cfg.max_epochs, "stopped": False, "test_acc": curve[-1]["test_acc"],
             "wall_s": t_train, "curve": curve}
    return {"fixed": fixed, "nnk-layer": layer}


def run_nnk_channel(x, y, x_test, y_test, seed, cfg) -> dict:
    from torch_geometry.callbacks import NNKEarlyStopping

    model, opt, gen = _new_model(seed, cfg.lr)
    es = NNKEarlyStopping(model, "relu2", (x, y), mode="channel", patience=cfg.patience,
                          k=cfg.k, max_points=cfg.probe_size, seed=seed, optimizer=opt,
                          verbose=False)
    t_total, t_check, frozen, stopped = 0.0, 0.0, [], False
    epoch = 0
    for epoch in range(cfg.max_epochs):
        t = time.perf_counter()
        train_one_epoch(model, opt, x, y, cfg.batch_size, gen)
        t_total += time.perf_counter() - t
        t = time.perf_counter()
        stopped = es.step(epoch)
        dt = time.perf_counter() - t
        t_check += dt
        t_total += dt
        frozen.append(len(es.frozen_channels))
        if stopped:
            break
    scores = es.last_scores
    return {"epochs": epoch + 1, "stopped": bool(stopped),
            "test_acc": evaluate(model, x_test, y_test)[0], "wall_s": t_total,
            "check_s": t_check, "frozen_per_epoch": frozen,
            "num_channels": len(scores), "stop_reason": es.stop_reason,
            "dead_channels_last_check": sum(1 for s in scores if s >= 1.0),
            "channel_loo_last_check": list(scores)}


def run_validation(x, y, x_test, y_test, seed, cfg) -> dict:
    g = torch.Generator().manual_seed(20_000 + seed)
    perm = torch.randperm(x.shape[0], generator=g)
    n_val = int(round(cfg.val_fraction * x.shape[0]))
    val, tr = perm[:n_val], perm[n_val:]
    x_tr, y_tr, x_val, y_val = x[tr], y[tr], x[val], y[val]
    model, opt, gen = _new_model(seed, cfg.lr)
    best, best_state, best_epoch, wait, stopped = float("inf"), None, 0, 0, False
    t_total, epoch, val_curve = 0.0, 0, []
    for epoch in range(cfg.max_epochs):
        t = time.perf_counter()
        train_one_epoch(model, opt, x_tr, y_tr, cfg.batch_size, gen)
        val_acc, val_loss = evaluate(model, x_val, y_val)
        val_curve.append({"val_loss": val_loss, "val_acc": val_acc})
        if val_loss < best:
            best, best_state, best_epoch, wait = val_loss, copy.deepcopy(model.state_dict()), epoch + 1, 0
        else:
            wait += 1
            if wait >= cfg.patience:
                model.load_state_dict(best_state)
                stopped = True
        t_total += time.perf_counter() - t
        if stopped:
            break
    return {"epochs": epoch + 1, "stopped": stopped, "best_epoch": best_epoch,
            "test_acc": evaluate(model, x_test, y_test)[0], "wall_s": t_total,
            "val_curve": val_curve}


# ------------------------------------------------------------------ report
def _ms(values: List[float], fmt: str = ".4f") -> str:
    if len(values) == 1:
        return f"{values[0]:{fmt}}"
    return f"{statistics.mean(values):{fmt}} ± {statistics.stdev(values):{fmt}}"


def summarize(runs: List[dict], noise_levels, methods=METHODS) -> List[dict]:
    rows = []
    for noise in noise_levels:
        for m in methods:
            rs = [r["results"][m] for r in runs if r["noise"] == noise]
            if not rs:
                continue
            rows.append({"noise": noise, "method": m,
                         "test_acc": [r["test_acc"] for r in rs],
                         "epochs": [r["epochs"] for r in rs],
                         "stopped": sum(r["stopped"] for r in rs), "n": len(rs),
                         "wall_s": [r["wall_s"] for r in rs]})
    return rows


def oracle(runs: List[dict], noise: float) -> dict:
    """Best epoch in hindsight on the fixed-budget trajectory (by *test* accuracy)."""
    best = [max(r["results"]["fixed"]["curve"], key=lambda c: c["test_acc"])
            for r in runs if r["noise"] == noise]
    return {"test_acc": [b["test_acc"] for b in best], "epochs": [b["epoch"] for b in best]}


def write_markdown(path: str, cfg, runs: List[dict], info: dict, total_s: float, cmd: str):
    rows = summarize(runs, cfg.noise)
    lines = [
        "# NNK early stopping vs validation-based early stopping (Fashion-MNIST)",
        "",
        f"Produced by `{cmd}` (from the repository root).",
        "",
        f"Machine: torch {info['torch']}, {info['threads']} threads "
        f"(torch.set_num_threads), {info['cpus']} CPUs shared with other jobs "
        f"(load average {info['load_avg'][0]:.1f} at the start, "
        f"{info['load_avg_end'][0]:.1f} at the end), Python {info['python']}, "
        f"{info['platform']}. Whole study: {total_s / 60:.1f} min. Wall times are noisy "
        f"(shared CPUs).",
        "",
        f"Setup: `StudyCNN` (conv 16 5x5/2, conv 32 3x3/2, fc 64, fc 10; Adam lr {cfg.lr}, "
        f"batch {cfg.batch_size}) on the first {cfg.train_size} Fashion-MNIST training images, "
        f"tested on {cfg.test_size} clean test images; seeds {', '.join(map(str, cfg.seeds))}; "
        f"at most {cfg.max_epochs} epochs; patience {cfg.patience} for every early-stopping "
        f"method. Label noise: a random share of the training labels replaced by a random other "
        f"class (the validation split and the NNK probe come from these noisy labels). NNK: "
        f"probe of {cfg.probe_size} training inputs (stratified by their noisy label), k = "
        f"{cfg.k}, cosine kernel.",
        "",
        "| label noise | method | test accuracy (mean ± sd) | epochs trained (mean [min-max]) "
        "| stopped by the method | wall time s (mean ± sd) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        ep = r["epochs"]
        lines.append(
            f"| {int(round(100 * r['noise']))} % | {METHOD_LABELS[r['method']]} | "
            f"{_ms(r['test_acc'])} | {statistics.mean(ep):.1f} [{min(ep)}-{max(ep)}] | "
            f"{r['stopped']}/{r['n']} | {_ms(r['wall_s'], '.1f')} |")
    lines += ["", "Reference, not a method (it looks at the test set): the best epoch in "
              "hindsight of the fixed-budget trajectory.", "",
              "| label noise | oracle test accuracy | oracle epoch (mean [min-max]) |",
              "|---|---|---|"]
    for noise in cfg.noise:
        o = oracle(runs, noise)
        lines.append(f"| {int(round(100 * noise))} % | {_ms(o['test_acc'])} | "
                     f"{statistics.mean(o['epochs']):.1f} [{min(o['epochs'])}-{max(o['epochs'])}] |")
    lines += ["", "Test accuracy of the fixed-budget trajectory by epoch (mean over seeds):", "",
              "| label noise | " + " | ".join(str(e) for e in range(1, cfg.max_epochs + 1)) + " |",
              "|---|" + "---|" * cfg.max_epochs]
    for noise in cfg.noise:
        curves = [r["results"]["fixed"]["curve"] for r in runs if r["noise"] == noise]
        means = [statistics.mean(c[e]["test_acc"] for c in curves) for e in range(cfg.max_epochs)]
        lines.append(f"| {int(round(100 * noise))} % | " + " | ".join(f"{m:.3f}" for m in means) + " |")
    lines += ["", "Channel mode: channels of conv2 frozen after each epoch (per seed):", ""]
    for noise in cfg.noise:
        for r in runs:
            if r["noise"] == noise:
                c = r["results"]["nnk-channel"]
                lines.append(f"- {int(round(100 * noise))} %, seed {r['seed']}: "
                             f"{c['frozen_per_epoch']} of {c['num_channels']} "
                             f"(dead channels, LOO error 1, at the last check: "
                             f"{c['dead_channels_last_check']})")
    lines += ["", "Layer mode: NNK LOO error of the probe on relu3 by epoch (per seed, up to "
              "the stop):", ""]
    for noise in cfg.noise:
        for r in runs:
            if r["noise"] == noise:
                c = r["results"]["nnk-layer"]
                lines.append(f"- {int(round(100 * noise))} %, seed {r['seed']}: "
                             + ", ".join(f"{v:.3f}" for v in c["loo_curve"]))
    lines += ["", "## Interpretation", "", INTERPRETATION_PLACEHOLDER, ""]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines))


# ------------------------------------------------------------------ main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--max-epochs", type=int, default=30)
    p.add_argument("--train-size", type=int, default=10000)
    p.add_argument("--test-size", type=int, default=10000)
    p.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.2])
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--probe-size", type=int, default=1000)
    p.add_argument("--k", type=int, default=25)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="docs/results/early_stopping.md",
                   help="markdown report; the JSON goes beside it (same name, .json)")
    p.add_argument("--quick", action="store_true",
                   help="tiny configuration for a smoke test (overrides the sizes)")
    cfg = p.parse_args(argv)
    if cfg.quick:
        cfg.seeds, cfg.max_epochs, cfg.train_size, cfg.test_size = [0], 2, 600, 1000
        cfg.probe_size, cfg.k, cfg.patience = 200, 10, 1
    if cfg.probe_size <= cfg.k:
        p.error(f"--probe-size ({cfg.probe_size}) should be larger than --k ({cfg.k})")
    if cfg.max_epochs < 1 or cfg.patience < 1:
        p.error("--max-epochs and --patience should be >= 1")
    return cfg


def main(argv=None):
    cfg = parse_args(argv)
    torch.set_num_threads(cfg.threads)
    from torch_geometry.datasets import load_fashion_mnist

    cmd = command_line()
    info = machine_info()
    t0 = time.perf_counter()
    x, y_clean = load_fashion_mnist("train", n=cfg.train_size, flatten=False)
    x_test, y_test = load_fashion_mnist("test", n=cfg.test_size, flatten=False)
    warm_up(x, y_clean, cfg.batch_size)
    runs = []
    for noise in cfg.noise:
        for seed in cfg.seeds:
            y = add_label_noise(y_clean, noise, seed)
            t = time.perf_counter()
            results = run_fixed_and_nnk_layer(x, y, x_test, y_test, seed, cfg)
            results["nnk-channel"] = run_nnk_channel(x, y, x_test, y_test, seed, cfg)
            results["validation"] = run_validation(x, y, x_test, y_test, seed, cfg)
            runs.append({"noise": noise, "seed": seed, "results": results,
                         "actual_noise": float((y != y_clean).float().mean())})
            print(f"noise {noise:.2f} seed {seed} ({time.perf_counter() - t:.0f} s): " + ", ".join(
                f"{m} acc {results[m]['test_acc']:.4f} ep {results[m]['epochs']}" for m in METHODS),
                flush=True)
    total = time.perf_counter() - t0
    info["load_avg_end"] = os.getloadavg()
    write_markdown(cfg.out, cfg, runs, info, total, cmd)
    json_path = os.path.splitext(cfg.out)[0] + ".json"
    with open(json_path, "w") as f:
        json.dump({"command": cmd, "machine": info, "total_s": total,
                   "config": vars(cfg),
                   "summary": summarize(runs, cfg.noise), "runs": runs}, f, indent=1)
    print(f"wrote {cfg.out} and {json_path} ({total / 60:.1f} min)")


if __name__ == "__main__":
    main()
