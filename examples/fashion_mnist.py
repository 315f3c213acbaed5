"""The main job: train a small CNN on Fashion-MNIST and watch the geometry of its layers.

A ``torch_geometry.GeometryTracker`` on three layers runs a fixed probe set (a stratified
subset of the training images) through the model at the end of every epoch and builds
their NNK graphs; the loop adds three lines to an ordinary training loop. Optionally (and
by default, as the demo does) ``torch_geometry.callbacks.NNKEarlyStopping`` stops training
without a validation set, from the NNK leave-one-out error of the same probe set.

Writes ``<out-dir>/<name>/``:

- ``history.json``, ``history.csv``: the tracker's history (epoch x layer x metric);
- ``geometry.png``: one panel per metric, one line per layer (``tracker.plot``);
- ``training.json``: the arguments and, per epoch, loss, train/test accuracy and timings;
- ``report.txt``: test accuracy per epoch and at the end, per-layer ``loo_error`` and drift
  (``epoch_overlap``: mean Jaccard overlap of each node's NNK neighbourhood with the
  previous epoch's) by epoch.

Run: ``make demo``, or e.g. ``python examples/fashion_mnist.py --epochs 10 --train-size 60000``
(the full training set). Importing this module has no side effects: ``FashionCNN`` is used
by ``benchmarks/bench_tracking.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

#: Layers tracked by default: the output of each block (two conv blocks, the hidden fc).
DEFAULT_LAYERS = ("pool1", "pool2", "relu3")


class FashionCNN(nn.Module):
    """A small CNN for 1 x 28 x 28 images.

    conv1 (1 -> c1, 3x3) -> relu1 -> pool1 (2x2)     : c1 x 13 x 13
    conv2 (c1 -> c2, 3x3) -> relu2 -> pool2 (2x2)    : c2 x 5 x 5
    flatten -> fc1 (c2 * 25 -> hidden) -> relu3      : hidden
    fc2 (hidden -> classes)                          : logits

    Every step is its own module (each used once per forward pass), so any of them can be
    tracked by name with forward hooks: ``conv1, relu1, pool1, conv2, relu2, pool2, flatten,
    fc1, relu3, fc2``.
    """

    def __init__(self, c1: int = 16, c2: int = 32, hidden: int = 64, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, c1, 3)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(c1, c2, 3)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(c2 * 5 * 5, hidden)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = self.relu3(self.fc1(self.flatten(x)))
        return self.fc2(x)


def train_one_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
                    y: torch.Tensor, batch_size: int, generator: torch.Generator,
                    progress: bool = True, desc: str = "train") -> Dict[str, float]:
    """One pass over ``(x, y)`` in a random order (from ``generator``) with cross-entropy.
    Returns the mean loss and the training accuracy (of the batches as they were seen)."""
    model.train()
    order = torch.randperm(x.shape[0], generator=generator)
    starts = range(0, x.shape[0], batch_size)
    if progress:
        from tqdm import tqdm
        starts = tqdm(starts, desc=desc, leave=False, unit="batch", file=sys.stderr)
    total_loss, correct = 0.0, 0
    for s in starts:
        idx = order[s:s + batch_size]
        xb, yb = x[idx], y[idx]
        optimizer.zero_grad(set_to_none=True)
        logits = model(xb)
        loss = F.cross_entropy(logits, yb)
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * idx.numel()
        correct += (logits.argmax(dim=1) == yb).sum().item()
    return {"loss": total_loss / x.shape[0], "train_acc": correct / x.shape[0]}


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Accuracy of ``model`` on ``(x, y)`` in eval mode (the previous mode is restored)."""
    was_training = model.training
    model.eval()
    correct = 0
    for s in range(0, x.shape[0], batch_size):
        correct += (model(x[s:s + batch_size]).argmax(dim=1) == y[s:s + batch_size]).sum().item()
    model.train(was_training)
    return correct / x.shape[0]


def metric_by_epoch(history: Sequence[dict], metric: str, layers: Sequence[str]
                    ) -> Dict[int, Dict[str, Optional[float]]]:
    """``{epoch: {layer: mean}}`` of one metric of a tracker history (None where absent)."""
    out: Dict[int, Dict[str, Optional[float]]] = {}
    for row in history:
        if row["metric"] == metric and row["layer"] in layers:
            out.setdefault(int(row["epoch"]), {})[row["layer"]] = row["mean"]
    return out


def _fmt(v: Optional[float], spec: str = ".4f") -> str:
    return "-" if v is None else format(v, spec)


def _table(header: List[str], rows: List[List[str]]) -> str:
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) if rows else len(header[i])
              for i in range(len(header))]
    line = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths)).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def write_report(path: str, args: argparse.Namespace, epochs: List[dict], history: Sequence[dict],
                 layers: Sequence[str], final_test_acc: float, stop_note: Optional[str]) -> str:
    """Writes the text report: settings, test accuracy by epoch and at the end, per-layer
    loo_error and drift (epoch_overlap mean) by epoch. Returns the text."""
    loo = metric_by_epoch(history, "loo_error", layers)
    drift = metric_by_epoch(history, "epoch_overlap", layers)
    lines = [
        f"Fashion-MNIST CNN with geometry tracking: run '{args.name}'",
        f"train images: {args.train_size}, test images: {args.test_size}, probe: {args.probe_size} "
        f"training images (stratified), k = {args.k}, reduce = {args.reduce}",
        f"layers: {', '.join(layers)}; epochs run: {len(epochs)} of {args.epochs}; seed {args.seed}; "
        f"batch {args.batch_size}, Adam lr {args.lr}; {args.threads} threads",
        ("early stopping: none" if args.early_stopping == "none" else
         f"early stopping: NNK, {args.early_stopping} mode on {args.es_layer}, "
         f"{min(args.es_probe_size, args.train_size)} training images as nodes, patience "
         f"{args.patience}, min_delta {args.min_delta}, {args.candidate_metric} candidates "
         "(training images only, no validation data)"),
        "",
        f"final test accuracy: {final_test_acc:.4f}",
    ]
    if stop_note:
        lines.append(stop_note)
    lines += ["", "Per epoch: loss, accuracy and times (s)", ""]
    lines.append(_table(
        ["epoch", "loss", "train acc", "test acc", "train s", "track s", "early stop s"],
        [[str(e["epoch"]), f"{e['loss']:.4f}", f"{e['train_acc']:.4f}", f"{e['test_acc']:.4f}",
          f"{e['train_seconds']:.1f}", f"{e['track_seconds']:.1f}", f"{e['stop_seconds']:.1f}"]
         for e in epochs]))
    lines += ["", "loo_error: NNK leave-one-out label error of the probe set (mean over nodes; "
              "lower = classes better separated)", ""]
    lines.append(_table(["epoch"] + list(layers),
                        [[str(ep)] + [_fmt(loo[ep].get(l)) for l in layers] for ep in sorted(loo)]))
    lines += ["", "drift: epoch_overlap, mean Jaccard overlap of each node's NNK neighbourhood "
              "with the previous tracked epoch's (1 = unchanged; '-' at the first epoch)", ""]
    tracked = sorted(loo) or sorted(drift)
    lines.append(_table(["epoch"] + list(layers),
                        [[str(ep)] + [_fmt(drift.get(ep, {}).get(l)) for l in layers]
                         for ep in tracked]))
    text = "\n".join(lines) + "\n"
    with open(path, "w") as f:
        f.write(text)
    return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--epochs", type=int, default=15, help="(maximum) number of epochs")
    p.add_argument("--train-size", type=int, default=20000,
                   help="first N training images (60000 = the full training set)")
    p.add_argument("--test-size", type=int, default=10000, help="first N test images")
    p.add_argument("--probe-size", type=int, default=1000,
                   help="probe inputs: a stratified subset of the training images")
    p.add_argument("--k", type=int, default=25, help="NNK candidates per node")
    p.add_argument("--layers", nargs="+", default=list(DEFAULT_LAYERS),
                   help="tracked layers (names from model.named_modules())")
    p.add_argument("--reduce", choices=["avgpool", "flatten"], default="avgpool",
                   help="how conv maps [N, C, H, W] become vectors for the tracker")
    p.add_argument("--name", default="fashion_mnist", help="run name: output folder <out-dir>/<name>")
    p.add_argument("--out-dir", default="runs", help="folder of the runs")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights, batches and probe set")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--batch-size", type=int, default=64, help="training batch size")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--early-stopping", choices=["none", "layer", "channel"], default="channel",
                   help="NNK early stopping (torch_geometry.callbacks.NNKEarlyStopping) on the "
                        "probe set, no validation data: 'channel' freezes each channel of the "
                        "conv producing --es-layer once it stops improving, and stops when all "
                        "are frozen; 'layer' stops when the layer's loo_error stops improving")
    p.add_argument("--es-probe-size", type=int, default=10000,
                   help="early stopping: graph nodes, a stratified subset of the training "
                        "images (the published methods use every labelled training image; "
                        "docs/results/early_stopping.md used 10,000)")
    p.add_argument("--es-layer", default="pool2",
                   help="layer watched by early stopping (an [N, C, H, W] output for 'channel')")
    p.add_argument("--patience", type=int, default=5,
                   help="early stopping: checks without improvement before freezing/stopping "
                        "(docs/results/early_stopping.md: 3 is too short for every rule that stops)")
    p.add_argument("--candidate-metric", choices=["euclidean", "kernel"], default="euclidean",
                   help="early stopping: how NNK candidates are ranked ('euclidean': L2 on the "
                        "raw activations, as the published DeepNNK method)")
    p.add_argument("--min-delta", type=float, default=0.0,
                   help="early stopping: an improvement must lower loo_error by more than this")
    p.add_argument("--es-reduce", choices=["avgpool", "flatten"], default=None,
                   help="early stopping, 'layer' mode on conv maps: how they become vectors "
                        "(default: the package's, avgpool)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bars (also off when stderr is not a terminal)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error("--epochs should be at least 1")
    if not 1 <= args.train_size <= 60000:
        parser.error("--train-size should be in 1..60000")
    if not 1 <= args.test_size <= 10000:
        parser.error("--test-size should be in 1..10000")
    if args.probe_size <= args.k:
        parser.error(f"--probe-size should be larger than --k ({args.k})")
    if args.es_probe_size <= args.k:
        parser.error(f"--es-probe-size should be larger than --k ({args.k})")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    import torch_geometry
    from torch_geometry.datasets import load_fashion_mnist

    x_train, y_train = load_fashion_mnist("train", n=args.train_size, flatten=False)
    x_test, y_test = load_fashion_mnist("test", n=args.test_size, flatten=False)
    model = FashionCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    generator = torch.Generator().manual_seed(args.seed)
    run_dir = os.path.join(args.out_dir, args.name)
    os.makedirs(run_dir, exist_ok=True)
    progress = not args.no_progress and sys.stderr.isatty()  # no bars in logs

    tracker = torch_geometry.GeometryTracker(
        model, args.layers, (x_train, y_train), k=args.k, reduce=args.reduce,
        max_points=args.probe_size, progress=progress, seed=args.seed)
    layers = tracker.layers
    print(f"Fashion-MNIST: {x_train.shape[0]} training / {x_test.shape[0]} test images; probe "
          f"{tracker.probe_x.shape[0]} inputs, k = {args.k}, layers {', '.join(layers)}; "
          f"{torch.get_num_threads()} threads", flush=True)

    # An early-stopping callback: anything with step(epoch) -> bool, called once per epoch.
    stopper = None
    if args.early_stopping != "none":
        from torch_geometry.callbacks import NNKEarlyStopping

        # Its own probe: a stratified subset of up to --es-probe-size training images (the
        # tracker's smaller probe would make the per-channel errors noisier).
        stopper = NNKEarlyStopping(
            model, args.es_layer, (x_train, y_train), mode=args.early_stopping,
            patience=args.patience, min_delta=args.min_delta, k=args.k, optimizer=optimizer,
            max_points=args.es_probe_size, seed=args.seed,
            candidate_metric=args.candidate_metric,
            reduce=args.es_reduce if args.early_stopping == "layer" else None, verbose=True)
        print(f"NNK early stopping: mode {args.early_stopping} on {args.es_layer}"
              + (f" (channels of {stopper.conv_name})" if stopper.conv_name else "")
              + f", {stopper.probe_x.shape[0]} nodes, patience {args.patience}, min_delta "
              f"{args.min_delta}, {args.candidate_metric} candidates", flush=True)

    epochs: List[dict] = []
    stop_note = None
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        stats = train_one_epoch(model, optimizer, x_train, y_train, args.batch_size, generator,
                                progress=progress, desc=f"epoch {epoch}")
        t1 = time.perf_counter()
        rows = tracker.on_epoch_end(epoch) or []  # the geometry of the trained epoch
        t2 = time.perf_counter()

        # ---- early stopping: the callback looks at the model after this epoch's training
        # and says whether to stop (step(epoch) -> bool). In channel mode it may also give
        # channels their best weights back and freeze them.
        stop = stopper.step(epoch) if stopper is not None else False
        t3 = time.perf_counter()

        test_acc = evaluate(model, x_test, y_test)  # the model as training continues / ends
        t4 = time.perf_counter()

        loo = {r["layer"]: r["mean"] for r in rows if r["metric"] == "loo_error"}
        record = dict(epoch=epoch, **stats, test_acc=test_acc, train_seconds=t1 - t0,
                      track_seconds=t2 - t1, stop_seconds=t3 - t2, eval_seconds=t4 - t3,
                      loo_error=loo)
        es_text = ""
        if stopper is not None:
            record["frozen_channels"] = stopper.frozen_channels
            es_text = f", early stopping {t3 - t2:.1f} s"
            if stopper.conv_name:
                es_text += f"; frozen {len(stopper.frozen_channels)}/{len(stopper.last_scores)}"
        epochs.append(record)
        loo_text = " ".join(f"{l} {_fmt(loo.get(l))}" for l in layers)
        print(f"epoch {epoch:2d}/{args.epochs}  loss {stats['loss']:.4f}  train acc "
              f"{stats['train_acc']:.4f}  test acc {test_acc:.4f}  loo_error [{loo_text}]  "
              f"time: train {t1 - t0:.1f} s, track {t2 - t1:.1f} s" + es_text, flush=True)
        if stop:
            stop_note = (f"stopped at epoch {epoch} by NNK early stopping ({args.early_stopping} "
                         f"mode on {args.es_layer}): {stopper.stop_reason}")
            print(stop_note, flush=True)
            break

    restored_at_end = False
    if stopper is not None and epochs and not stop:
        # The budget ran out first: the model returns to the last check at which a channel
        # (or the layer) improved, as at a stop (the published rule).
        restored_at_end = stopper.finish(epochs[-1]["epoch"])
        if restored_at_end:
            stop_note = (f"the epoch budget ended at epoch {epochs[-1]['epoch']}; model "
                         f"restored to epoch {stopper.last_improvement_epoch}, the last check "
                         f"at which NNK early stopping saw an improvement")
            print(stop_note, flush=True)
    if stopper is not None:
        if stopper.conv_name:
            frozen = stopper.frozen_channels
            total = len(stopper.last_scores) or "?"
            note = f"NNK early stopping: {len(frozen)}/{total} channels of {stopper.conv_name} frozen"
            if frozen:
                note += f" ({', '.join(map(str, sorted(frozen)))})"
        else:
            note = f"NNK early stopping: best loo_error of {args.es_layer} {stopper.best_score:.4f}"
        stop_note = note if stop_note is None else stop_note + "\n" + note
        stopper.remove()

    final_test_acc = (epochs[-1]["test_acc"] if epochs and not restored_at_end
                      else evaluate(model, x_test, y_test))
    tracker.to_json(os.path.join(run_dir, "history.json"))
    tracker.to_csv(os.path.join(run_dir, "history.csv"))
    tracker.plot(os.path.join(run_dir, "geometry.png"))
    with open(os.path.join(run_dir, "training.json"), "w") as f:
        json.dump({"args": vars(args), "layers": layers, "epochs": epochs,
                   "final_test_acc": final_test_acc, "stopped": stop_note}, f, indent=2)
    report = write_report(os.path.join(run_dir, "report.txt"), args, epochs, tracker.history,
                          layers, final_test_acc, stop_note)
    print()
    print(report, end="")
    print(f"\nwrote {run_dir}/: history.json, history.csv, geometry.png, training.json, report.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
