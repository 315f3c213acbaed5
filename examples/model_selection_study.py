"""Model selection from training data alone (Fashion-MNIST): does the DeepNNK leave-one-out
error of the training images rank independently trained models as their test accuracy does?

Several configurations of ``StudyCNN`` (``early_stopping_study.py``) that differ in width and
training length, each trained from ``--seeds`` independent seeds (independent models, not
checkpoints of one run), on the same training images (optionally with symmetric label noise;
the test set is the clean test split). For every model, on the penultimate layer (relu3) of
the training images used as nodes, with their (noisy) labels:

- the NNK LOO error (cosine kernel) for every ``--k``, with Euclidean candidates (the
  published DeepNNK setting) and with kernel-ranked candidates;
- the LOO error of a plain k-NN vote (uniform weights) on the same candidates;
- the training accuracy (a baseline that knows nothing about generalisation).

Each signal is compared with the test accuracy by Kendall's tau over all models, with a
bootstrap 95 % confidence interval (resampling models), and by the test accuracy of the model
it would pick. Everything is logged to a JSON beside the report; ``--from-log`` regenerates
the report without training; ``--quick`` is a smoke-test configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from typing import Dict, List

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from early_stopping_study import (DEVIATIONS_HEADING, INTERPRETATION_PLACEHOLDER,  # noqa: E402
                                  StudyCNN, add_label_noise, hand_written, command_line, evaluate, forward_all,
                                  kendall_tau, knn_loo, machine_info, nnk_loo,
                                  stratified_nodes, train_one_epoch, warm_up)

#: name -> (StudyCNN kwargs, epochs).
CONFIGS = {
    "w4 (4-8-16), 2 ep": (dict(c1=4, c2=8, hidden=16), 2),
    "w8 (8-16-32), 4 ep": (dict(c1=8, c2=16, hidden=32), 4),
    "base (16-32-64), 2 ep": (dict(), 2),
    "base (16-32-64), 6 ep": (dict(), 6),
    "base (16-32-64), 15 ep": (dict(), 15),
    # Past the test-accuracy peak under 20 % label noise (the early-stopping study: peak at
    # epochs 13-20, memorisation after): higher training accuracy, lower test accuracy.
    "base (16-32-64), 40 ep": (dict(), 40),
}
METRICS = ("euclidean", "kernel")


def signal_names(ks: List[int]) -> List[tuple]:
    """(key, label, sign): sign -1 for errors (lower = better), +1 for accuracies."""
    out = []
    for m in METRICS:
        for k in ks:
            out.append((f"nnk_{m}_k{k}", f"NNK LOO error, {m} candidates, k = {k}", -1))
    for m in METRICS:
        out.append((f"knn_{m}_k{ks[0]}", f"kNN LOO error, {m} candidates, k = {ks[0]}", -1))
    out.append(("train_acc", "training accuracy (baseline)", 1))
    return out


def bootstrap_tau(x: List[float], y: List[float], reps: int = 2000, seed: int = 0):
    """Percentile 95 % interval of Kendall's tau over resamples of the models."""
    rng = random.Random(seed)
    n = len(x)
    draws = []
    for _ in range(reps):
        idx = [rng.randrange(n) for _ in range(n)]
        draws.append(kendall_tau([x[i] for i in idx], [y[i] for i in idx]))
    draws.sort()
    return draws[int(0.025 * reps)], draws[min(reps - 1, int(0.975 * reps))]


def measure(model, x, y, x_test, y_test, nodes, cfg) -> dict:
    logits, _, h3 = forward_all(model, x)
    row = {"train_acc": float((logits.argmax(1) == y).double().mean()),
           "test_acc": evaluate(model, x_test, y_test)[0]}
    t = time.perf_counter()
    for m in METRICS:
        for k in cfg.k:
            row[f"nnk_{m}_k{k}"] = nnk_loo(h3[nodes], y[nodes], k, m)
        row[f"knn_{m}_k{cfg.k[0]}"] = knn_loo(h3[nodes], y[nodes], cfg.k[0], m)
    row["signals_s"] = time.perf_counter() - t
    return row


def analyse(log: dict) -> Dict[str, dict]:
    rows = log["models"]
    test = [r["test_acc"] for r in rows]
    out = {}
    for key, label, sign in signal_names(log["config"]["k"]):
        score = [sign * r[key] for r in rows]
        lo, hi = bootstrap_tau(score, test)
        pick = max(range(len(rows)), key=lambda i: (score[i], -i))
        out[key] = {"label": label, "tau": kendall_tau(score, test), "lo": lo, "hi": hi,
                    "pick": f"{rows[pick]['config']} / seed {rows[pick]['seed']}",
                    "pick_test_acc": rows[pick]["test_acc"]}
    return out


def write_markdown(path: str, log: dict, interpretation: str = INTERPRETATION_PLACEHOLDER,
                   deviations: str = "_(deviations: stated by hand)_"):
    cfg, info, rows = log["config"], log["machine"], log["models"]
    res = analyse(log)
    noise = ("clean labels" if cfg["label_noise"] <= 0 else
             f"{100 * cfg['label_noise']:.0f} % of the labels replaced by a random other class; "
             f"the graphs and the training accuracy use these noisy labels")
    best = max(rows, key=lambda r: r["test_acc"])
    lines = [
        "# Model selection from training data: DeepNNK LOO error vs kNN LOO error and "
        "training accuracy (Fashion-MNIST)", "",
        f"Produced by `{log['command']}` (from the repository root); the tables regenerate "
        f"from the JSON beside this file with `--from-log`.", "",
        f"Machine: torch {info['torch']}, {info['threads']} threads, {info['cpus']} CPUs shared "
        f"with other jobs (load average {info['load_avg'][0]:.1f} at the start, "
        f"{info['load_avg_end'][0]:.1f} at the end), Python {info['python']}. Whole study: "
        f"{log['total_s'] / 60:.1f} min.", "",
        f"Setup: {len(rows)} independently trained `StudyCNN` models ({len(CONFIGS)} "
        f"configurations x seeds {', '.join(map(str, cfg['seeds']))}; channels conv1-conv2-fc1 "
        f"in the names; Adam lr {cfg['lr']}, batch {cfg['batch_size']}) on the first "
        f"{cfg['train_size']} Fashion-MNIST training images ({noise}); test accuracy on "
        f"{cfg['test_size']} clean test images. Graph nodes: {log['num_nodes']} of the "
        f"training images (stratified); signals on the penultimate layer (relu3), cosine "
        f"kernel.", "",
        DEVIATIONS_HEADING, "", deviations, "",
        "## Agreement with test accuracy", "",
        f"Kendall tau over the {len(rows)} models (+1 = the signal orders the models exactly "
        "as test accuracy does), bootstrap 95 % CI resampling the models, and the model each "
        "signal would pick:", "",
        "| ranking by | Kendall tau [95 % CI] | picks | its test acc |", "|---|---|---|---|"]
    for v in res.values():
        lines.append(f"| {v['label']} | {v['tau']:+.3f} [{v['lo']:+.3f}, {v['hi']:+.3f}] | "
                     f"{v['pick']} | {v['pick_test_acc']:.4f} |")
    lines += ["", f"Best by test accuracy: {best['config']} / seed {best['seed']} "
              f"({best['test_acc']:.4f}).", "", "## Models", "",
              "| model | seed | train acc | test acc | " + " | ".join(
                  k for k, _, _ in signal_names(cfg["k"]) if k != "train_acc") + " |",
              "|---|---|---|---|" + "---|" * (len(signal_names(cfg["k"])) - 1)]
    for r in sorted(rows, key=lambda r: -r["test_acc"]):
        lines.append(f"| {r['config']} | {r['seed']} | {r['train_acc']:.4f} | {r['test_acc']:.4f} | "
                     + " | ".join(f"{r[k]:.4f}" for k, _, _ in signal_names(cfg["k"])
                                  if k != "train_acc") + " |")
    lines += ["", "## Interpretation", "", interpretation, ""]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--train-size", type=int, default=10000)
    p.add_argument("--test-size", type=int, default=10000)
    p.add_argument("--nodes", type=int, default=10000)
    p.add_argument("--k", type=int, nargs="+", default=[25, 50])
    p.add_argument("--label-noise", type=float, default=0.2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="docs/results/model_selection.md")
    p.add_argument("--from-log", default="")
    p.add_argument("--deviations", default="")
    p.add_argument("--interpretation", default="")
    p.add_argument("--quick", action="store_true", help="tiny configuration for a smoke test")
    cfg = p.parse_args(argv)
    if cfg.quick:
        cfg.seeds, cfg.train_size, cfg.test_size, cfg.nodes, cfg.k = [0, 1], 400, 500, 300, [10, 15]
    if min(cfg.nodes, cfg.train_size) <= max(cfg.k) or min(cfg.k) < 1:
        p.error(f"--k should be >= 1 and below the number of nodes, got {cfg.k}")
    return cfg


def _read(path: str) -> str:
    if not path:
        return ""
    with open(path) as f:
        return f.read().strip()


def report(cfg, log):
    """Writes the report; hand-written sections come from the files given, else from the
    existing report."""
    kw = {}
    interpretation = _read(cfg.interpretation) or hand_written(cfg.out, "## Interpretation")
    deviations = _read(cfg.deviations) or hand_written(cfg.out, DEVIATIONS_HEADING)
    if interpretation:
        kw["interpretation"] = interpretation
    if deviations:
        kw["deviations"] = deviations
    write_markdown(cfg.out, log, **kw)


def main(argv=None):
    cfg = parse_args(argv)
    if cfg.from_log:
        with open(cfg.from_log) as f:
            log = json.load(f)
        report(cfg, log)
        print(f"wrote {cfg.out} from {cfg.from_log}")
        return
    torch.set_num_threads(cfg.threads)
    from torch_geometry.datasets import load_fashion_mnist

    cmd, info = command_line(), machine_info()
    t0 = time.perf_counter()
    x, y_clean = load_fashion_mnist("train", n=cfg.train_size, flatten=False)
    x_test, y_test = load_fashion_mnist("test", n=cfg.test_size, flatten=False)
    y = add_label_noise(y_clean, cfg.label_noise, 0)
    nodes = stratified_nodes(y, cfg.nodes)
    warm_up(x, y, cfg.batch_size)
    json_path = os.path.splitext(cfg.out)[0] + ".json"
    log = {"command": cmd, "machine": info, "config": vars(cfg),
           "num_nodes": int(nodes.numel()), "models": []}
    epochs_cap = 2 if cfg.quick else None
    for name, (kw, epochs) in CONFIGS.items():
        for seed in cfg.seeds:
            torch.manual_seed(seed)
            model = StudyCNN(**kw)
            opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
            gen = torch.Generator().manual_seed(seed)
            t = time.perf_counter()
            for _ in range(min(epochs, epochs_cap or epochs)):
                train_one_epoch(model, opt, x, y, cfg.batch_size, gen)
            row = {"config": name, "seed": seed, "train_s": time.perf_counter() - t}
            row.update(measure(model, x, y, x_test, y_test, nodes, cfg))
            log["models"].append(row)
            print(f"{name} seed {seed}: test {row['test_acc']:.4f} train {row['train_acc']:.4f} "
                  f"nnk {row[f'nnk_euclidean_k{cfg.k[0]}']:.4f} ({row['train_s']:.0f} s + "
                  f"{row['signals_s']:.0f} s)", flush=True)
            log["total_s"] = time.perf_counter() - t0
            info["load_avg_end"] = os.getloadavg()
            with open(json_path, "w") as f:
                json.dump(log, f, indent=1)
    report(cfg, log)
    print(f"wrote {cfg.out} and {json_path} ({log['total_s'] / 60:.1f} min)")


if __name__ == "__main__":
    main()
