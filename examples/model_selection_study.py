"""Model selection without held-out data: NNK leave-one-out error vs kNN leave-one-out error.

Trains several small CNNs (``StudyCNN`` from ``early_stopping_study.py``) that differ in
width, regularisation (dropout, weight decay) and number of epochs on a Fashion-MNIST
training subset, then ranks them from *training data only*:

- NNK: ``torch_geometry.select_models`` on the penultimate layer (``relu3``): the NNK
  leave-one-out label error of a probe set of training images;
- kNN: the leave-one-out error of a plain k-nearest-neighbour majority vote on the same
  activations of the same probe set (same k, same cosine similarity, candidates from
  ``torch_geometry.knn_graph``; ties broken by the summed similarity of the tied classes);
- (as a baseline) training accuracy.

Each ranking is compared with the ranking by test accuracy (the 10,000 test images) by
Kendall's tau (``scipy.stats.kendalltau``), signed so that +1 means "ranks the models
exactly as test accuracy does".

Writes a markdown report (default ``docs/results/model_selection.md``, with the exact
command and machine) and a JSON beside it. ``--quick`` is a smoke-test configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Dict, List

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from early_stopping_study import (StudyCNN, add_label_noise, command_line,  # noqa: E402
                                  evaluate, machine_info, train_one_epoch, warm_up)

#: name -> (StudyCNN kwargs, Adam weight decay, epochs). Names ending in "@e" are checkpoints
#: of the run of the same base name after e epochs (one training run, several models).
MODELS = {
    "w4 (4-8-16), 5 ep": (dict(c1=4, c2=8, hidden=16), 0.0, 5),
    "w8 (8-16-32), 5 ep": (dict(c1=8, c2=16, hidden=32), 0.0, 5),
    "base (16-32-64) @1 ep": (dict(), 0.0, 1),
    "base (16-32-64) @5 ep": (dict(), 0.0, 5),
    "base (16-32-64) @15 ep": (dict(), 0.0, 15),
    "base (16-32-64) @30 ep": (dict(), 0.0, 30),
    "w32 (32-64-128), 5 ep": (dict(c1=32, c2=64, hidden=128), 0.0, 5),
    "base + dropout 0.5, 10 ep": (dict(dropout=0.5), 0.0, 10),
    "base + weight decay 1e-3, 10 ep": (dict(), 1e-3, 10),
}


def knn_loo_error(acts: torch.Tensor, labels: torch.Tensor, k: int, num_classes: int = 10) -> float:
    """Leave-one-out error of a k-NN majority vote (cosine similarity, self excluded)."""
    import torch_geometry as tg

    acts = acts.flatten(1)
    nbr, sim = tg.knn_graph(acts, k)
    valid = nbr >= 0
    votes = torch.zeros(acts.shape[0], num_classes, dtype=torch.float64)
    nl = labels[nbr.clamp(min=0)]
    votes.scatter_add_(1, nl, valid.double())
    # Ties: the class with the larger summed similarity (always < 1e-3 of a vote).
    tie = torch.zeros_like(votes).scatter_add_(1, nl, (sim.double() * valid) * 1e-3 / (k + 1))
    pred = (votes + tie).argmax(1)
    return float((pred != labels).double().mean())


def stratified_probe(y: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """``n`` indices, as equal a share per class as possible, drawn at random."""
    g = torch.Generator().manual_seed(seed)
    classes = torch.unique(y)
    per = [torch.nonzero(y == c).flatten() for c in classes]
    per = [p[torch.randperm(p.numel(), generator=g)] for p in per]
    out, i = [], 0
    while len(out) < n:
        for p in per:
            if i < p.numel() and len(out) < n:
                out.append(int(p[i]))
        i += 1
    return torch.tensor(sorted(out))


def train_models(x, y, cfg) -> Dict[str, dict]:
    """Trains every configuration (checkpoints of one run share it)."""
    runs: Dict[tuple, List[str]] = {}
    for name, (kw, wd, ep) in MODELS.items():
        runs.setdefault((tuple(sorted(kw.items())), wd), []).append(name)
    out = {}
    for (kw, wd), names in runs.items():
        torch.manual_seed(cfg.seed)
        model = StudyCNN(**dict(kw))
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=wd)
        gen = torch.Generator().manual_seed(cfg.seed)
        want: Dict[int, List[str]] = {}
        for n in names:
            want.setdefault(min(MODELS[n][2], cfg.max_epochs), []).append(n)
        t = time.perf_counter()
        for epoch in range(1, max(want) + 1):
            train_one_epoch(model, opt, x, y, cfg.batch_size, gen)
            for name in want.get(epoch, []):
                snap = StudyCNN(**dict(kw))
                snap.load_state_dict(model.state_dict())
                snap.eval()
                out[name] = {"model": snap, "epochs": epoch, "train_s": time.perf_counter() - t}
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train-size", type=int, default=10000)
    p.add_argument("--test-size", type=int, default=10000)
    p.add_argument("--probe-size", type=int, default=1000)
    p.add_argument("--k", type=int, default=25)
    p.add_argument("--max-epochs", type=int, default=30,
                   help="caps every model's number of epochs")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--label-noise", type=float, default=0.0,
                   help="share of training labels replaced by a random other class (the probe "
                        "and the training accuracy then use the noisy labels)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="docs/results/model_selection.md")
    p.add_argument("--quick", action="store_true", help="tiny configuration for a smoke test")
    cfg = p.parse_args(argv)
    if cfg.quick:
        cfg.train_size, cfg.test_size, cfg.probe_size, cfg.k, cfg.max_epochs = 600, 1000, 200, 10, 2
    if cfg.probe_size <= cfg.k or cfg.probe_size > cfg.train_size:
        p.error(f"--probe-size should be in (k, train-size], got {cfg.probe_size}")
    return cfg


def main(argv=None):
    cfg = parse_args(argv)
    torch.set_num_threads(cfg.threads)
    from scipy.stats import kendalltau
    from torch_geometry.callbacks import select_models
    from torch_geometry.datasets import load_fashion_mnist
    from torch_geometry.tracking import capture_probe

    cmd, info = command_line(), machine_info()
    t0 = time.perf_counter()
    x, y_clean = load_fashion_mnist("train", n=cfg.train_size, flatten=False)
    y = add_label_noise(y_clean, cfg.label_noise, cfg.seed)
    x_test, y_test = load_fashion_mnist("test", n=cfg.test_size, flatten=False)
    warm_up(x, y, cfg.batch_size)
    trained = train_models(x, y, cfg)
    probe = stratified_probe(y, cfg.probe_size, cfg.seed)
    xp, yp = x[probe], y[probe]

    t = time.perf_counter()
    models = {n: trained[n]["model"] for n in MODELS}
    nnk = dict(select_models(models, (xp, yp), layer="relu3", k=cfg.k,
                             max_points=cfg.probe_size, seed=cfg.seed))
    nnk_s = time.perf_counter() - t
    t = time.perf_counter()
    knn = {n: knn_loo_error(capture_probe(m, ["relu3"], xp)["relu3"], yp, cfg.k)
           for n, m in models.items()}
    knn_s = time.perf_counter() - t
    rows = []
    for n in MODELS:
        rows.append({"model": n, "epochs": trained[n]["epochs"],
                     "train_acc": evaluate(models[n], x, y)[0],
                     "test_acc": evaluate(models[n], x_test, y_test)[0],
                     "nnk_loo": nnk[n], "knn_loo": knn[n], "train_s": trained[n]["train_s"]})
    test = [r["test_acc"] for r in rows]
    taus = {}
    for key, label, sign in [("nnk_loo", "NNK LOO error (lower = better)", -1),
                             ("knn_loo", "kNN LOO error (lower = better)", -1),
                             ("train_acc", "training accuracy (higher = better), baseline", 1)]:
        tau, pval = kendalltau([sign * r[key] for r in rows], test)
        taus[key] = {"label": label, "tau": float(tau), "p": float(pval)}
    best_test = max(rows, key=lambda r: r["test_acc"])["model"]
    picks = {key: (min if key != "train_acc" else max)(rows, key=lambda r: r[key])["model"]
             for key in taus}
    total = time.perf_counter() - t0
    info["load_avg_end"] = os.getloadavg()

    noise_text = ("clean labels" if cfg.label_noise <= 0 else
                  f"{100 * cfg.label_noise:.0f} % of the labels replaced by a random other class; "
                  f"the probe and the train accuracy use these noisy labels")
    lines = [
        "# Model selection from training data: NNK vs kNN leave-one-out error (Fashion-MNIST)",
        "",
        f"Produced by `{cmd}` (from the repository root).",
        "",
        f"Machine: torch {info['torch']}, {info['threads']} threads (torch.set_num_threads), "
        f"{info['cpus']} CPUs shared with other jobs (load average {info['load_avg'][0]:.1f} at "
        f"the start, {info['load_avg_end'][0]:.1f} at the end), Python {info['python']}. "
        f"Whole study: {total / 60:.1f} min (NNK ranking {nnk_s:.1f} s, kNN {knn_s:.1f} s).",
        "",
        f"Setup: `StudyCNN` variants (channels conv1-conv2-fc1 in the names; Adam lr {cfg.lr}, "
        f"batch {cfg.batch_size}, seed {cfg.seed}) trained on the first {cfg.train_size} "
        f"Fashion-MNIST training images ({noise_text}); \"@e ep\" rows are checkpoints of one "
        f"run. Probe: {cfg.probe_size} of those training images (stratified by label). Both "
        f"LOO errors on the penultimate layer (relu3), cosine similarity, k = {cfg.k}. Test "
        f"accuracy on {cfg.test_size} test images.",
        "",
        "| model | epochs | train acc | test acc | NNK LOO error | kNN LOO error |",
        "|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: -r["test_acc"]):
        lines.append(f"| {r['model']} | {r['epochs']} | {r['train_acc']:.4f} | {r['test_acc']:.4f} "
                     f"| {r['nnk_loo']:.4f} | {r['knn_loo']:.4f} |")
    lines += ["", "Agreement with the test-accuracy ranking (Kendall tau, +1 = same order; "
              f"{len(rows)} models, so the p-values are rough):", "",
              "| ranking by | Kendall tau | p-value | picks | its test acc |", "|---|---|---|---|---|"]
    by_name = {r["model"]: r for r in rows}
    for key, v in taus.items():
        lines.append(f"| {v['label']} | {v['tau']:+.3f} | {v['p']:.3f} | {picks[key]} | "
                     f"{by_name[picks[key]]['test_acc']:.4f} |")
    lines += ["", f"Best by test accuracy: {best_test} ({by_name[best_test]['test_acc']:.4f}).",
              "", "## Interpretation", "",
              "_(interpretation: written by hand after reading the numbers)_", ""]
    os.makedirs(os.path.dirname(os.path.abspath(cfg.out)), exist_ok=True)
    with open(cfg.out, "w") as f:
        f.write("\n".join(lines))
    json_path = os.path.splitext(cfg.out)[0] + ".json"
    with open(json_path, "w") as f:
        json.dump({"command": cmd, "machine": info, "total_s": total, "config": vars(cfg),
                   "rows": rows, "kendall_tau": taus, "picks": picks}, f, indent=1)
    print("\n".join(lines[8:]))
    print(f"wrote {cfg.out} and {json_path} ({total / 60:.1f} min)")


if __name__ == "__main__":
    main()
