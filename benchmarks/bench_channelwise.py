"""Benchmark: the cost of one channel-wise NNK early-stopping check (CW-DeepNNK) against one
training epoch.

The check is what ``NNKEarlyStopping(mode="channel")`` does at every checked epoch: one NNK
graph per channel on N probe nodes (features = that channel's H x W map), then each channel's
leave-one-out error. Its size follows the published setting: every labelled training image a
node (N = 10,000), 32 channels of 7 x 7 maps, k = 25, cosine kernel.

==================  ==========================================================================
row                 what is timed
==================  ==========================================================================
train_epoch         one training epoch of the example CNN (``examples/fashion_mnist.py``,
                    ``FashionCNN``, Adam, batch 64) on N Fashion-MNIST training images
train_epoch[study]  one epoch of the early-stopping study's much smaller ``StudyCNN``
                    (``examples/early_stopping_study.py``, Adam, batch 128), for scale
check[<metric>]     ``NNKEarlyStopping``'s channel-mode scoring (C++ core) of the activations
                    [N, 32, 7, 7], one row per candidate metric this build has; the kNN
                    search runs its fused selection with the widest vectors of this CPU
                    (AVX-512 or AVX2, named in the row)
check[<m>, <sel>]   the same in a child process whose ``ATEN_CPU_CAPABILITY`` caps the
                    search: ``avx2`` (the fused AVX2 kernel, what a CPU without AVX-512
                    runs) and ``default`` (the tiled GEMM search of earlier versions)
naive_knn           a naive reference for the candidate search alone: per channel, rows
                    normalised, ``torch.mm`` in row blocks + ``topk(k + 1)`` (self dropped);
                    no NNK solve and no LOO error
==================  ==========================================================================

Activations: the example CNN after one training epoch, its ``relu2`` output [N, 32, 11, 11]
max-pooled to 7 x 7 (``adaptive_max_pool2d``): the example's maps are 11 x 11 there and 5 x 5
after its pooling; 7 x 7 is the size of the published network's last conv block. Every row
reports the median of ``--repeats`` runs, wall clock, and the ratio to ``train_epoch``
measured in the same run (absolute times move with the machine's load; ratios measured
together hold better).

Usage::

    python benchmarks/bench_channelwise.py --threads 2 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for path in (str(REPO), str(REPO / "examples")):
    if path not in sys.path:
        sys.path.append(path)

import torch_geometry  # noqa: E402,F401  (loads the library)
from torch_geometry import _C  # noqa: E402
from torch_geometry.datasets import load_fashion_mnist  # noqa: E402
from torch_geometry.tracking import capture_probe  # noqa: E402
from fashion_mnist import FashionCNN, train_one_epoch  # noqa: E402
import early_stopping_study as study  # noqa: E402


def candidate_metrics() -> list:
    """The candidate metrics this build's channel_nnk_graph takes."""
    schema = torch.ops.torch_geometry.channel_nnk_graph.default._schema
    if any(a.name == "candidate_metric" for a in schema.arguments):
        return ["kernel", "euclidean"]
    return ["kernel"]


def native_isa() -> str:
    """The widest vectors the fused kNN selection uses on this CPU."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "unknown"
    if "avx512f" in flags:
        return "avx512"
    return "avx2" if {"avx2", "fma"} <= flags else "tiled"


def check_in_child(acts_path: str, labels_path: str, metric: str, k: int, repeats: int,
                   threads: int, capability: str) -> dict:
    """Times the check in a child process under ATEN_CPU_CAPABILITY=capability."""
    env = dict(os.environ, ATEN_CPU_CAPABILITY=capability)
    cmd = [sys.executable, __file__, "--child", acts_path, labels_path, "--metric", metric,
           "--k", str(k), "--repeats", str(repeats), "--threads", str(threads)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def time_check(acts: torch.Tensor, y: torch.Tensor, metric: str, k: int, repeats: int) -> dict:
    options = _C.EarlyStoppingOptions()
    options.k, options.candidate_metric = k, metric
    core = _C.NNKEarlyStoppingCore(options)
    core.set_labels(y)
    sec, runs, scores = timed(lambda: core.score(acts), repeats)
    return {"seconds": sec, "runs": runs, "mean_channel_loo_error": sum(scores) / len(scores)}


def timed(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, out


def naive_knn(acts: torch.Tensor, k: int, block: int = 2048) -> torch.Tensor:
    """Cosine kNN per channel by mm + topk over row blocks: [C, N, k] neighbour indices."""
    n, c = acts.shape[0], acts.shape[1]
    out = torch.empty(c, n, k, dtype=torch.long)
    for ch in range(c):
        x = F.normalize(acts[:, ch].reshape(n, -1), dim=1)
        for s in range(0, n, block):
            sims = x[s:s + block] @ x.T
            rows = torch.arange(s, min(s + block, n))
            sims[rows - s, rows] = -float("inf")
            out[ch, s:s + block] = sims.topk(k, dim=1).indices
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=10000, help="probe nodes = training images")
    p.add_argument("--side", type=int, default=7, help="pooled map side (H = W)")
    p.add_argument("--k", type=int, default=25)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(HERE / "results" / "channelwise.json"))
    p.add_argument("--md", default=str(HERE / "results" / "channelwise.md"),
                   help="the table as Markdown ('' = none)")
    p.add_argument("--child", nargs=2, metavar=("ACTS", "LABELS"), help=argparse.SUPPRESS)
    p.add_argument("--metric", default="euclidean", help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.child:
        acts, y = torch.load(args.child[0]), torch.load(args.child[1])
        print(json.dumps(time_check(acts, y, args.metric, args.k, args.repeats)))
        return 0

    x, y = load_fashion_mnist("train", n=args.n, flatten=False)
    model = FashionCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(args.seed)
    epoch_times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        train_one_epoch(model, optimizer, x, y, 64, gen, progress=False)
        epoch_times.append(time.perf_counter() - t0)
    train_epoch = statistics.median(epoch_times)
    small, small_opt = study.StudyCNN(), None
    small_opt = torch.optim.Adam(small.parameters(), lr=1e-3)
    small_times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        study.train_one_epoch(small, small_opt, x, y, 128, gen)
        small_times.append(time.perf_counter() - t0)

    relu2 = capture_probe(model, ["relu2"], x, 500, progress=False)["relu2"]
    acts = F.adaptive_max_pool2d(relu2, args.side).contiguous()
    rows = [{"row": "train_epoch", "seconds": train_epoch, "runs": epoch_times},
            {"row": "train_epoch[study]", "seconds": statistics.median(small_times),
             "runs": small_times}]
    print(f"activations {tuple(acts.shape)}; train_epoch {train_epoch:.2f} s", flush=True)

    isa = native_isa()
    for metric in candidate_metrics():
        r = time_check(acts, y, metric, args.k, args.repeats)
        rows.append({"row": f"check[{metric}, {isa}]", **r})
        print(f"check[{metric}, {isa}] {r['seconds']:.2f} s = {r['seconds'] / train_epoch:.2f} "
              f"epochs (mean channel LOO error {r['mean_channel_loo_error']:.4f})", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        acts_path, labels_path = f"{tmp}/acts.pt", f"{tmp}/labels.pt"
        torch.save(acts, acts_path)
        torch.save(y, labels_path)
        # The AVX2 kernel is a row of its own only where the native run used AVX-512.
        caps = ["avx2", "default"] if isa == "avx512" else ["default"]
        metric = candidate_metrics()[-1]
        for cap in caps:
            r = check_in_child(acts_path, labels_path, metric, args.k, args.repeats,
                               args.threads, cap)
            name = "avx2" if cap == "avx2" else "tiled GEMM"
            rows.append({"row": f"check[{metric}, {name}]", **r})
            print(f"check[{metric}, {name}] {r['seconds']:.2f} s = "
                  f"{r['seconds'] / train_epoch:.2f} epochs", flush=True)

    sec, runs, _ = timed(lambda: naive_knn(acts, args.k), args.repeats)
    rows.append({"row": "naive_knn", "seconds": sec, "runs": runs})
    print(f"naive_knn {sec:.2f} s = {sec / train_epoch:.2f} epochs", flush=True)

    small_epoch = rows[1]["seconds"]
    for r in rows:
        r["epochs"] = r["seconds"] / train_epoch
        r["study_epochs"] = r["seconds"] / small_epoch
    result = {"n": args.n, "channels": int(acts.shape[1]), "side": args.side, "k": args.k,
              "threads": args.threads, "repeats": args.repeats, "torch": torch.__version__,
              "machine": platform.machine(), "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    if args.md:
        Path(args.md).write_text(markdown(result, " ".join(sys.argv[1:])))
    return 0


def markdown(result: dict, argv: str) -> str:
    lines = [
        "# Channel-wise NNK check vs one training epoch",
        "",
        f"Generated by `python benchmarks/bench_channelwise.py {argv}`".rstrip() + " (torch "
        f"{result['torch']}, {result['threads']} threads, median of {result['repeats']} runs). "
        f"N = {result['n']} Fashion-MNIST training images as nodes, {result['channels']} "
        f"channels of {result['side']} x {result['side']} maps, k = {result['k']}, cosine "
        "kernel. Wall-clock seconds on a shared machine: read the ratios (measured in the same "
        "run), not the absolute times.",
        "",
        "| row | seconds | epochs of the example CNN | epochs of the study CNN |",
        "|---|---:|---:|---:|",
    ]
    for r in result["rows"]:
        small = f"{r['study_epochs']:.2f}" if "study_epochs" in r else "-"
        lines.append(f"| {r['row']} | {r['seconds']:.2f} | {r['epochs']:.2f} | {small} |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
