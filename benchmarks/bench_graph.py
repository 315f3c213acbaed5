"""Benchmark: kNN and NNK graphs on Fashion-MNIST, torch_geometry against its peers (issue 3).

For each N (the first N Fashion-MNIST training images, 784 dims, float32, cosine kernel) it
times, in the same run:

=====================  =======================================================================
method                 what is timed
=====================  =======================================================================
tg.knn_graph           ``torch_geometry.knn_graph(x, k)``
tg.nnk_graph           ``torch_geometry.nnk_graph(x, k, symmetrize="none")``: exact candidates
                       + exact solve, end to end
tg.nnk_graph+ivf       FAISS ``IndexIVFFlat`` candidates (train + add + search) +
                       ``nnk_graph(candidates=...)``; recall of the exact kNN reported
tg.nnk_graph+approx    ``torch_geometry.approximate_candidates`` (torch-only k-means, then one
                       ``mm`` + ``topk`` per cluster over its ``--approx-nprobe`` nearest
                       clusters) + ``nnk_graph(candidates=...)``; recall reported
tg.nnk_graph+clusters  candidates from ``peers.cluster_knn`` (FAISS k-means, then one ``mm``
                       + ``topk`` per cluster over its nprobe nearest clusters) + ``nnk_graph``;
                       recall reported
tg.nnk_solve[1t]       ``nnk_graph(candidates=exact kNN)`` on 1 thread: the per-node solve
                       (only where the naive NNK runs, for the per-core comparison)
faiss.FlatIP           FAISS ``IndexFlatIP`` exact search of k+1 (the reference: ratio 1.0)
sklearn.brute          ``NearestNeighbors(algorithm="brute", metric="cosine")``
torch.mm+topk          blocked ``mm`` + ``topk`` in plain torch
naive_nnk              FAISS exact kNN + numpy/scipy per-node exact solve
                       (``peers.naive_nnk``); search and solve times reported apart, the solve
                       runs on 1 thread
=====================  =======================================================================

Every (method, N) runs in a fresh subprocess so its peak RSS is its own: the child loads the
data, resets the kernel's high-water mark (``/proc/self/clear_refs``), runs the method
``--repeats`` times and reports the median time and ``VmHWM`` (peak resident set). The table
shows peak MiB next to the size of the input + output, the quantity issue 3's memory target
compares against. "Δpeak" = peak minus the RSS just before the first call (which already holds
Python, torch and the input): the memory the method itself added.

Usage (``make bench`` runs it with the defaults)::

    python benchmarks/bench_graph.py --sizes 5000 10000 --repeats 3
    python benchmarks/bench_graph.py --methods faiss.FlatIP tg.nnk_graph --sizes 20000

Every method's process gets ``OMP_WAIT_POLICY=PASSIVE`` unless ``--omp-wait-policy`` says
otherwise (see its help). Run it on an otherwise idle machine: every method gets ``--threads`` threads, and anything
else running on the cores distorts the ratios. If ``torch_geometry`` cannot be imported (not built yet), its rows are skipped with a message
and the peers still run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))

OURS = ["tg.knn_graph", "tg.nnk_graph", "tg.nnk_graph+approx", "tg.nnk_graph+ivf", "tg.nnk_graph+clusters",
        "tg.nnk_solve[1t]"]
PEERS = ["faiss.FlatIP", "sklearn.brute", "torch.mm+topk", "naive_nnk"]
ALL_METHODS = OURS + PEERS
REFERENCE = "faiss.FlatIP"
MIB = 1024.0 * 1024.0


# --------------------------------------------------------------------------------------------
# child side: one method, one N


def _load_datasets():
    """``torch_geometry.datasets``, or the same file loaded by path when the package's
    ``__init__`` cannot import (compiled library not built yet)."""
    try:
        from torch_geometry import datasets

        return datasets
    except Exception:
        spec = importlib.util.spec_from_file_location("_tg_datasets", REPO / "torch_geometry" / "datasets.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)
    try:
        import faiss

        faiss.omp_set_num_threads(n)
    except ImportError:
        pass


def _child(args: argparse.Namespace) -> None:
    import torch

    import peers

    _set_threads(args.threads)
    x, _ = _load_datasets().load_fashion_mnist("train", n=args.n)
    k = args.k
    extra: Dict[str, Any] = {}
    post: List[Callable[[], None]] = []  # quality checks, after the peak is read

    if args.method.startswith("tg."):
        import torch_geometry as tg

    if args.method == "tg.knn_graph":
        run = lambda: tg.knn_graph(x, k)
    elif args.method == "tg.nnk_graph":
        run = lambda: tg.nnk_graph(x, k, symmetrize="none")
    elif args.method in ("tg.nnk_graph+ivf", "tg.nnk_graph+clusters", "tg.nnk_graph+approx"):
        if args.method.endswith("ivf"):
            search = lambda: peers.faiss_ivf_knn(x, k, nlist=args.nlist, nprobe=args.nprobe)
        elif args.method.endswith("approx"):
            search = lambda: (tg.approximate_candidates(x, k, nprobe=args.approx_nprobe), None)
        else:
            search = lambda: peers.cluster_knn(x, k, nprobe=args.cluster_nprobe)
        parts: Dict[str, List[float]] = {"search_s": [], "solve_s": []}
        last: Dict[str, Any] = {}

        def run():
            t0 = time.perf_counter()
            cand, _ = search()
            t1 = time.perf_counter()
            g = tg.nnk_graph(x, k, candidates=cand, symmetrize="none")
            t2 = time.perf_counter()
            parts["search_s"].append(t1 - t0)
            parts["solve_s"].append(t2 - t1)
            last["cand"] = cand
            return g

        def quality():
            exact, _ = peers.faiss_knn(x, k)
            extra["recall"] = peers.recall(last["cand"], exact)
            extra["search_s"] = statistics.median(parts["search_s"])
            extra["solve_s"] = statistics.median(parts["solve_s"])

        post.append(quality)
    elif args.method == "tg.nnk_solve[1t]":
        cand, _ = peers.faiss_knn(x, k)  # outside the timing and before the peak reset
        torch.set_num_threads(1)
        run = lambda: tg.nnk_graph(x, k, candidates=cand, symmetrize="none")
    elif args.method == "faiss.FlatIP":
        run = lambda: peers.faiss_knn(x, k)
    elif args.method == "sklearn.brute":
        run = lambda: peers.sklearn_knn(x, k, n_jobs=args.threads)
    elif args.method == "torch.mm+topk":
        run = lambda: peers.torch_knn(x, k, block=args.block)
    elif args.method == "naive_nnk":
        from threadpoolctl import threadpool_limits

        parts = {"search_s": [], "solve_s": []}

        def run():
            t0 = time.perf_counter()
            nbrs, _ = peers.faiss_knn(x, k)
            t1 = time.perf_counter()
            with threadpool_limits(limits=1):  # the solve is measured per core
                out = peers.naive_nnk(x, nbrs)
            t2 = time.perf_counter()
            parts["search_s"].append(t1 - t0)
            parts["solve_s"].append(t2 - t1)
            return out

        def quality():
            extra["search_s"] = statistics.median(parts["search_s"])
            extra["solve_s"] = statistics.median(parts["solve_s"])

        post.append(quality)
    else:
        raise SystemExit(f"unknown method {args.method!r}")

    base_kib = _status_kib("VmRSS")
    peak_reset = _reset_peak()
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - t0)
        del out
    peak_kib = _status_kib("VmHWM")
    for fn in post:
        fn()
    result = {
        "times": times,
        "seconds": statistics.median(times),
        "peak_mib": peak_kib / 1024.0,
        "base_mib": base_kib / 1024.0,
        "peak_reset": peak_reset,
        **extra,
    }
    print("RESULT " + json.dumps(result), flush=True)


# --------------------------------------------------------------------------------------------
# parent side


def _pythonpath() -> str:
    """The caller's PYTHONPATH, then the repository root (so an un-installed checkout works)."""
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return os.pathsep.join(parts + [str(REPO)])


def _ours_importable() -> Optional[str]:
    """None if ``torch_geometry`` with its graph ops imports, else the reason."""
    code = "import torch_geometry as tg; tg.knn_graph; tg.nnk_graph"
    env = dict(os.environ, PYTHONPATH=_pythonpath())
    # cwd=HERE: `python -c` puts the cwd first on sys.path, which must not shadow PYTHONPATH
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=HERE)
    if p.returncode == 0:
        return None
    lines = [l for l in (p.stderr or "").strip().splitlines() if l.strip()]
    return lines[-1] if lines else f"exit code {p.returncode}"


def _run_child(method: str, n: int, args: argparse.Namespace) -> Dict[str, Any]:
    cmd = [
        sys.executable, str(Path(__file__).resolve()), "--child", "--method", method,
        "--n", str(n), "--k", str(args.k), "--repeats", str(args.repeats),
        "--threads", str(args.threads), "--nprobe", str(args.nprobe), "--block", str(args.block),
        "--cluster-nprobe", str(args.cluster_nprobe), "--approx-nprobe", str(args.approx_nprobe),
    ]
    if args.nlist is not None:
        cmd += ["--nlist", str(args.nlist)]
    t = str(args.threads)
    env = dict(os.environ, OMP_NUM_THREADS=t, OPENBLAS_NUM_THREADS=t, MKL_NUM_THREADS=t,
               PYTHONPATH=_pythonpath())
    if args.omp_wait_policy != "inherit":
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy.upper()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = "\n".join((p.stderr or p.stdout).strip().splitlines()[-5:])
    return {"error": f"exit code {p.returncode}: {tail}"}


def _io_mib(method: str, n: int, d: int, k: int) -> float:
    """Input + output bytes of a method, in MiB: x float32 [N, D]; kNN: int64 + float32 [N, k];
    NNK: neighbours int64 + weights float32 [N, k] + error float32 [N]."""
    out = n * k * (8 + 4)
    if "nnk" in method:
        out += n * 4
    return (n * d * 4 + out) / MIB


def _fmt(v: Optional[float], spec: str) -> str:
    return "—" if v is None else format(v, spec)


def _table(rows: List[Dict[str, Any]]) -> str:
    head = "| N | method | seconds | peak MiB | Δpeak MiB | in+out MiB | ratio to FAISS | notes |"
    lines = [head, "|---:|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(
            f"| {r['n']:,} | {r['method']} | {_fmt(r.get('seconds'), '.3f')} | "
            f"{_fmt(r.get('peak_mib'), '.0f')} | {_fmt(r.get('delta_mib'), '.0f')} | "
            f"{_fmt(r.get('io_mib'), '.0f')} | "
            f"{_fmt(r.get('ratio'), '.2f')} | {r.get('notes', '')} |"
        )
    return "\n".join(lines)


def _notes(r: Dict[str, Any]) -> str:
    parts = []
    if "error" in r:
        return "FAILED: " + r["error"].splitlines()[-1][:120]
    if "skipped" in r:
        return "skipped: " + r["skipped"]
    if "recall" in r:
        parts.append(f"recall {r['recall']:.3f}; candidates {r['search_s']:.2f} s + NNK {r['solve_s']:.2f} s")
    elif "search_s" in r:
        parts.append(f"search {r['search_s']:.2f} s + solve {r['solve_s']:.2f} s (1 thread)")
    if r.get("method") == "tg.nnk_solve[1t]":
        parts.append("given exact candidates, 1 thread")
    return "; ".join(parts)


def _summary(rows: List[Dict[str, Any]], args: argparse.Namespace) -> List[str]:
    """Issue 3's targets, read off the rows (only those that were measured)."""
    by = {(r["n"], r["method"]): r for r in rows if r.get("seconds") is not None}
    d_in = 784
    out = []
    for n in args.sizes:
        ref = by.get((n, REFERENCE))
        if ref is None:
            continue
        for m, target in (("tg.nnk_graph", 1.0), ("tg.knn_graph", 0.7)):
            r = by.get((n, m))
            if r:
                ok = r["ratio"] <= target
                out.append(f"N={n:,}: {m} / FAISS = {r['ratio']:.2f} (target <= {target}) {'OK' if ok else 'MISSED'}")
        naive, ours1 = by.get((n, "naive_nnk")), by.get((n, "tg.nnk_solve[1t]"))
        if naive and ours1:
            sp = naive["solve_s"] / ours1["seconds"]
            out.append(
                f"N={n:,}: per-node solve, 1 thread: naive {naive['solve_s']:.2f} s vs ours "
                f"{ours1['seconds']:.2f} s (both include forming K_SS) = {sp:.1f}x "
                f"(target >= 10) {'OK' if sp >= 10 else 'MISSED'}"
            )
        exact = by.get((n, "tg.nnk_graph"))
        for m in ("tg.nnk_graph+approx", "tg.nnk_graph+ivf", "tg.nnk_graph+clusters"):
            approx = by.get((n, m))
            if exact and approx:
                sp = exact["seconds"] / approx["seconds"]
                out.append(f"N={n:,}: time of tg.nnk_graph / {m} = {sp:.2f} "
                           f"(target >= 5 at 60,000), recall {approx['recall']:.3f}")
        if exact:
            # The process already holds the interpreter, torch and the input before the call
            # (RSS before); the op's own footprint is input + (peak - RSS before).
            lim = exact["io_mib"] + 256
            used = n * d_in * 4 / MIB + exact["delta_mib"]
            out.append(f"N={n:,}: tg.nnk_graph input + (peak - RSS before the call) = {used:.0f} MiB vs "
                       f"input+output+256 = {lim:.0f} MiB {'OK' if used <= lim else 'OVER'} "
                       f"(absolute peak RSS {exact['peak_mib']:.0f} MiB, of which "
                       f"{exact['base_mib']:.0f} MiB held before the call: Python, torch, the input)")
    return out


def _plot(rows: List[Dict[str, Any]], path: Path, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for m in ALL_METHODS:
        pts = sorted((r["n"], r["seconds"]) for r in rows if r["method"] == m and r.get("seconds") is not None)
        if pts:
            style = "-o" if m.startswith("tg.") else "--s"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=m)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("N (Fashion-MNIST train images, 784 dims)")
    ax.set_ylabel("seconds (median)")
    ax.set_title(f"kNN / NNK graph, cosine, k={args.k}, {args.threads} threads")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _parent(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    methods = args.methods or ALL_METHODS
    unknown = sorted(set(methods) - set(ALL_METHODS))
    if unknown:
        raise SystemExit(f"bench_graph: unknown methods {unknown}; choose from {ALL_METHODS}")
    why_not = _ours_importable() if any(m in OURS for m in methods) else None
    if why_not:
        print(f"bench_graph: torch_geometry is not importable ({why_not}); skipping its rows. "
              f"Build it first: `make build` (or `make setup`).", file=sys.stderr)

    d = 784
    jobs, rows = [], []
    for n in args.sizes:
        for m in methods:
            r: Dict[str, Any] = {"n": n, "method": m, "io_mib": _io_mib(m, n, d, args.k)}
            if m in OURS and why_not:
                r["skipped"] = "torch_geometry not importable"
            elif m == "sklearn.brute" and args.skip_slow and n > 20000:
                r["skipped"] = "N > 20,000 with --skip-slow"
            elif m in ("naive_nnk", "tg.nnk_solve[1t]") and not args.all and n > 10000:
                r["skipped"] = "N > 10,000 (pass --all)"
            else:
                jobs.append(r)
            rows.append(r)
    load_before = os.getloadavg()[0]
    for r in tqdm(jobs, desc="bench_graph", unit="run", file=sys.stderr):
        r.update(_run_child(r["method"], r["n"], args))
    load_after = os.getloadavg()[0]
    for r in rows:
        ref = next((q for q in rows if q["n"] == r["n"] and q["method"] == REFERENCE and q.get("seconds")), None)
        if r.get("peak_mib") is not None:
            r["delta_mib"] = r["peak_mib"] - r["base_mib"]
        if r.get("seconds") is not None and ref is not None:
            r["ratio"] = r["seconds"] / ref["seconds"]
        r["notes"] = _notes(r)

    try:
        import torch
        import faiss

        versions = {"torch": torch.__version__, "faiss": faiss.__version__}
    except ImportError:
        versions = {}
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "")
    config = {k: v for k, v in vars(args).items() if k not in ("child", "method", "n", "out", "plot")}
    lines = [f"Fashion-MNIST train, float32, {d} dims, cosine, k={args.k}, {args.threads} threads, "
             f"median of {args.repeats}; CPU: {cpu}; Python {platform.python_version()}; {versions}", "",
             _table(rows)]
    summary = _summary(rows, args)
    if summary:
        lines += ["", "Targets (issue 3):"] + ["- " + line for line in summary]
    busy = max(load_before, load_after) > args.threads + 0.5
    if busy:
        lines += ["", f"WARNING: the machine was busy (1-minute load average {load_before:.1f} before, "
                  f"{load_after:.1f} after, with {os.cpu_count()} CPUs and {args.threads} threads per "
                  f"method): the times include waiting for other processes; rerun on an idle machine."]
    else:
        lines += ["", f"1-minute load average {load_before:.1f} before, {load_after:.1f} after "
                  f"({os.cpu_count()} CPUs)."]
    if any(r.get("peak_reset") is False for r in rows):
        lines += ["", "note: /proc/self/clear_refs unavailable: peak MiB includes loading the data."]
    report = "\n".join(lines)
    print("\n" + report)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"config": config, "cpu": cpu, "versions": versions,
                               "load_average": [load_before, load_after], "rows": rows,
                               "summary": summary}, indent=1))
    md = out.with_suffix(".md")
    md.write_text(f"# bench_graph\n\nProduced by `make bench` (`benchmarks/bench_graph.py`).\n\n{report}\n")
    print(f"\nwrote {out} and {md.name}")
    if args.plot:
        _plot(rows, Path(args.plot), args)
        print(f"wrote {args.plot}")


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[5000, 10000, 20000, 40000, 60000])
    p.add_argument("--k", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--methods", nargs="+", default=None, help=f"subset of {ALL_METHODS}")
    p.add_argument("--out", default=str(HERE / "results" / "bench_graph.json"))
    p.add_argument("--plot", default=str(HERE / "results" / "bench_graph.png"), help="'' for no plot")
    p.add_argument("--skip-slow", action=argparse.BooleanOptionalAction, default=True,
                   help="skip scikit-learn above N=20,000")
    p.add_argument("--all", action="store_true", help="run the naive NNK (slow) above N=10,000 too")
    p.add_argument("--nlist", type=int, default=None, help="IVF lists (default: ~4 sqrt(N))")
    p.add_argument("--nprobe", type=int, default=16, help="IVF lists probed per query")
    p.add_argument("--cluster-nprobe", type=int, default=8,
                   help="clusters searched per cluster by tg.nnk_graph+clusters")
    p.add_argument("--approx-nprobe", type=int, default=4,
                   help="clusters searched per cluster by tg.nnk_graph+approx")
    p.add_argument("--block", type=int, default=2048, help="row block of torch.mm+topk")
    p.add_argument("--omp-wait-policy", choices=["passive", "active", "inherit"], default="passive",
                   help="OMP_WAIT_POLICY of every method's process. OpenBLAS (pthreads) and "
                        "OpenMP keep separate thread pools; with 'active' the idle OpenMP threads "
                        "spin and take the cores from OpenBLAS in code that alternates the two "
                        "(torch mm then topk, FAISS k-means then torch): up to 10x slower")
    # internal: one measurement in a fresh process
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--method", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        _child(args)
    else:
        _parent(args)


if __name__ == "__main__":
    main()
