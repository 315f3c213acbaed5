"""Benchmark: all per-node manifold graph metrics against the NNK graph they come from (issue 4).

On the first N Fashion-MNIST training images (784 dims, float32, pixels / 255, cosine kernel,
k candidates) it times, in the same run and on the same threads:

==================  ==========================================================================
step                what is timed
==================  ==========================================================================
nnk_graph           ``torch_geometry.nnk_graph(x, k, symmetrize="none")``: exact candidates +
                    exact solve (the directed graph the metrics read)
manifold_metrics    ``metrics.manifold_metrics(x, graph)``: degree, diameter, local_dim,
                    log_volume, curvature (per-node SVDs, then the curvature pass)
loo_error           ``metrics.loo_error(graph, labels)``
label_smoothness    ``metrics.label_smoothness(graph, labels)``
overlap             ``metrics.neighborhood_overlap`` + ``weighted_overlap`` of the graph with
                    itself (one operator call each)
metrics (total)     the sum of the four metric rows
==================  ==========================================================================

Each step runs ``--repeats`` times; the median is reported. Issue 4's target: metrics (total)
<= 0.5 x nnk_graph. The metric summaries per class are printed as a sanity check.

Usage (``make bench`` runs it with the defaults)::

    python benchmarks/bench_metrics.py --n 20000 --k 50 --threads 2 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))

import torch_geometry  # noqa: E402
from torch_geometry import metrics  # noqa: E402
from torch_geometry.datasets import load_fashion_mnist  # noqa: E402


def _median_time(fn: Callable[[], object], repeats: int) -> Dict[str, object]:
    times: List[float] = []
    result = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return {"seconds": statistics.median(times), "runs": times, "result": result}


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--n", type=int, default=20000, help="first N Fashion-MNIST train images")
    p.add_argument("--k", type=int, default=50)
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(HERE / "results" / "bench_metrics.json"))
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    x, y = load_fashion_mnist("train", n=args.n)
    print(f"Fashion-MNIST train: x {tuple(x.shape)} {x.dtype}, k={args.k}, cosine, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}", flush=True)

    rows: Dict[str, Dict[str, object]] = {}
    rows["nnk_graph"] = _median_time(
        lambda: torch_geometry.nnk_graph(x, args.k, kernel="cosine", symmetrize="none"),
        args.repeats)
    graph = rows["nnk_graph"]["result"]
    rows["manifold_metrics"] = _median_time(
        lambda: metrics.manifold_metrics(x, graph, alpha=args.alpha, kernel="cosine"),
        args.repeats)
    rows["loo_error"] = _median_time(lambda: metrics.loo_error(graph, y), args.repeats)
    rows["label_smoothness"] = _median_time(lambda: metrics.label_smoothness(graph, y),
                                            args.repeats)
    rows["overlap"] = _median_time(
        lambda: (metrics.neighborhood_overlap(graph, graph), metrics.weighted_overlap(graph, graph)),
        args.repeats)

    nnk_s = rows["nnk_graph"]["seconds"]
    metric_names = ["manifold_metrics", "loo_error", "label_smoothness", "overlap"]
    total = sum(rows[name]["seconds"] for name in metric_names)
    ratio = total / nnk_s
    print(f"\n{'step':<20}{'median s':>10}{'x nnk':>8}")
    for name, row in rows.items():
        print(f"{name:<20}{row['seconds']:>10.3f}{row['seconds'] / nnk_s:>8.3f}")
    print(f"{'metrics (total)':<20}{total:>10.3f}{ratio:>8.3f}")
    verdict = "ok" if ratio <= 0.5 else "MISSED"
    print(f"\nTarget (issue 4): metrics / nnk_graph <= 0.5: {ratio:.3f} ({verdict})")

    m = rows["manifold_metrics"]["result"]
    hard, soft = rows["loo_error"]["result"]
    summary = metrics.summarize(m)
    print(f"\nisolated nodes: {summary['isolated']['count']}; LOO error {float(hard.mean()):.4f} "
          f"(soft {float(soft.mean()):.4f}); label smoothness "
          f"{rows['label_smoothness']['result']:.4f}")
    names = ["degree", "diameter", "local_dim", "log_volume", "curvature", "error"]
    print(f"\nmedian per class\n{'class':<6}" + "".join(f"{n:>12}" for n in names))
    per_class = {}
    for c in range(int(y.max()) + 1):
        sel = y == c
        med = {n: float(m[n][sel].double().median()) for n in names}
        per_class[c] = med
        print(f"{c:<6}" + "".join(f"{med[n]:>12.4f}" for n in names))

    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), "")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "cpu": cpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "rows": {name: {"seconds": row["seconds"], "runs": row["runs"]}
                 for name, row in rows.items()},
        "metrics_total_seconds": total,
        "ratio_metrics_over_nnk": ratio,
        "target_met": ratio <= 0.5,
        "summary": {name: {k: v for k, v in st.items() if k not in ("hist", "bin_edges")}
                    for name, st in summary.items()},
        "loo_error": float(hard.mean()),
        "per_class_median": per_class,
    }, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
