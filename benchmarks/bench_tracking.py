"""Benchmark: the overhead of geometry tracking in a training loop (issue 5).

On the example CNN of ``examples/fashion_mnist.py`` (``FashionCNN``, Adam, the example's
batch size) and the full Fashion-MNIST training set (60,000 images), it measures:

==================  ==========================================================================
row                 what is timed
==================  ==========================================================================
train_epoch         one full training epoch: 60,000 images in a random order, forward,
                    cross-entropy, backward, Adam step (``train_one_epoch`` of the example)
tracker_epoch       ``GeometryTracker.on_epoch_end``: the probe pass (eval, no_grad, forward
                    hooks) and, per layer, the NNK graph, the metrics and the drift against
                    the previous call; probe 2000 training images (stratified), 3 layers
                    (``pool1, pool2, relu3``), k = 25, cosine kernel, ``reduce="avgpool"``
early_stopping      (for information) ``NNKEarlyStopping.step`` in channel mode on ``pool2``
                    (32 channel-wise NNK graphs of the same probe set); not in the ratio
==================  ==========================================================================

The epoch is cut into ``--repeats`` equal chunks of batches and a tracker call (and an
early-stopping step) follows each chunk, so both are timed under the same machine load and
the tracker sees a model that changes between calls, as in training. ``train_epoch`` is the
sum of the chunks (one real full epoch, timed once; with ``--max-batches`` only that many
batches are timed and the time is scaled to the full epoch, which the output says). The
tracker's time is the median of its calls. Target: tracker_epoch / train_epoch <= 5 %
(wall clock). The same ratio in process CPU time is printed beside it: on a shared machine
other processes can slow the wall clock of either side.

Usage (``make bench`` can run it)::

    python benchmarks/bench_tracking.py --threads 2 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for path in (str(REPO), str(REPO / "examples")):
    if path not in sys.path:
        sys.path.append(path)

import torch_geometry  # noqa: E402
from torch_geometry.callbacks import NNKEarlyStopping  # noqa: E402
from torch_geometry.datasets import load_fashion_mnist  # noqa: E402
from fashion_mnist import DEFAULT_LAYERS, FashionCNN, train_one_epoch  # noqa: E402


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cpu_seconds() -> float:
    """User + system CPU time of this process, all threads."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train-size", type=int, default=60000, help="images in the epoch")
    p.add_argument("--probe-size", type=int, default=2000)
    p.add_argument("--k", type=int, default=25)
    p.add_argument("--layers", nargs="+", default=list(DEFAULT_LAYERS))
    p.add_argument("--reduce", default="avgpool", choices=["avgpool", "flatten"])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--repeats", type=int, default=5, help="tracker calls (epoch chunks)")
    p.add_argument("--max-batches", type=int, default=0,
                   help="time only this many training batches and scale to the full epoch "
                        "(0 = time the whole epoch)")
    p.add_argument("--no-early-stopping", action="store_true",
                   help="skip the (informational) early-stopping row")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(HERE / "results" / "bench_tracking.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    x, y = load_fashion_mnist("train", n=args.train_size, flatten=False)
    model = FashionCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    generator = torch.Generator().manual_seed(args.seed)
    tracker = torch_geometry.GeometryTracker(model, args.layers, (x, y), k=args.k,
                                             reduce=args.reduce, max_points=args.probe_size,
                                             progress=False, seed=args.seed)
    stopper = None
    if not args.no_early_stopping:
        stopper = NNKEarlyStopping(model, "pool2", (tracker.probe_x, tracker.probe_y),
                                   mode="channel", patience=10 ** 6, k=args.k, verbose=False,
                                   optimizer=optimizer, max_points=args.probe_size, seed=args.seed)

    n_batches = math.ceil(x.shape[0] / args.batch_size)
    timed_batches = n_batches if args.max_batches <= 0 else min(args.max_batches, n_batches)
    order = torch.randperm(x.shape[0], generator=generator)
    bounds = [round(i * timed_batches / args.repeats) for i in range(args.repeats + 1)]
    print(f"Fashion-MNIST: {x.shape[0]} training images, batch {args.batch_size} "
          f"({n_batches} batches/epoch); probe {tracker.probe_x.shape[0]} images, layers "
          f"{', '.join(tracker.layers)}, k = {args.k}, reduce = {args.reduce}; "
          f"{torch.get_num_threads()} threads; {args.repeats} tracker calls", flush=True)

    # Warm-up: one batch of training and one probe forward (allocator, kernels).
    train_one_epoch(model, optimizer, x[:args.batch_size], y[:args.batch_size], args.batch_size,
                    generator, progress=False)
    tracker.capture()

    train_chunks, tracker_times, stop_times = [], [], []
    train_cpu, tracker_cpu = [], []
    for r in range(args.repeats):
        idx = order[bounds[r] * args.batch_size:bounds[r + 1] * args.batch_size]
        c0, t0 = _cpu_seconds(), time.perf_counter()
        train_one_epoch(model, optimizer, x[idx], y[idx], args.batch_size, generator,
                        progress=False)
        c1, t1 = _cpu_seconds(), time.perf_counter()
        tracker.on_epoch_end(r)
        c2, t2 = _cpu_seconds(), time.perf_counter()
        train_cpu.append(c1 - c0)
        tracker_cpu.append(c2 - c1)
        if stopper is not None:
            stopper.step(r)
        t3 = time.perf_counter()
        train_chunks.append(t1 - t0)
        tracker_times.append(t2 - t1)
        stop_times.append(t3 - t2)
        print(f"  chunk {r + 1}/{args.repeats}: {bounds[r + 1] - bounds[r]} batches in "
              f"{t1 - t0:.2f} s; tracker {t2 - t1:.3f} s"
              + (f"; early stopping {t3 - t2:.3f} s" if stopper is not None else ""), flush=True)

    timed = sum(train_chunks)
    scaled = timed_batches < n_batches
    train_epoch = timed * n_batches / timed_batches
    tracker_epoch = statistics.median(tracker_times)
    ratio = tracker_epoch / train_epoch
    if scaled:
        print(f"train_epoch: {timed_batches} of {n_batches} batches timed ({timed:.2f} s), "
              f"scaled to the full epoch: {train_epoch:.2f} s")
    else:
        print(f"train_epoch: one full epoch of {x.shape[0]} images: {train_epoch:.2f} s")
    print(f"tracker_epoch: median of {args.repeats} calls: {tracker_epoch:.3f} s "
          f"(min {min(tracker_times):.3f}, max {max(tracker_times):.3f})")
    if stopper is not None:
        print(f"early_stopping (channel mode, pool2; not in the ratio): median "
              f"{statistics.median(stop_times):.3f} s")
    cpu_ratio = statistics.median(tracker_cpu) / (sum(train_cpu) * n_batches / timed_batches)
    print(f"CPU time (all threads; less sensitive to other processes on the machine): "
          f"train_epoch {sum(train_cpu) * n_batches / timed_batches:.2f} s, tracker_epoch "
          f"{statistics.median(tracker_cpu):.3f} s, ratio {100 * cpu_ratio:.2f} %")
    verdict = "OK" if ratio <= 0.05 else "ABOVE TARGET"
    print(f"overhead: tracker_epoch / train_epoch = {100 * ratio:.2f} % (target <= 5 %: {verdict})")

    result = {
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "cpu": _cpu_name(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batches_per_epoch": n_batches,
        "batches_timed": timed_batches,
        "train_epoch_scaled": scaled,
        "rows": {
            "train_epoch": {"seconds": train_epoch, "chunks": train_chunks},
            "tracker_epoch": {"seconds": tracker_epoch, "runs": tracker_times},
            **({"early_stopping": {"seconds": statistics.median(stop_times), "runs": stop_times}}
               if stopper is not None else {}),
        },
        "cpu_seconds": {"train_epoch": sum(train_cpu) * n_batches / timed_batches,
                        "train_chunks": train_cpu, "tracker_runs": tracker_cpu},
        "overhead_ratio": ratio,
        "overhead_ratio_cpu": cpu_ratio,
        "target": 0.05,
        "meets_target": ratio <= 0.05,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
