"""Benchmark: the exact kNN search's two selections across dimensions.

``knn_graph`` (cosine, k = 25) on N random non-negative points of D dimensions, timed in
child processes whose ``ATEN_CPU_CAPABILITY`` caps the selection (see
``csrc/cpu/knn_search.h``, ``SearchEngine``):

===========  ===============================================================================
column       what runs
===========  ===============================================================================
default      what the library picks uncapped: the fused selection with this CPU's widest
             vectors up to ``fused_max_dim()`` (256 with AVX-512, 128 with AVX2), the tiled
             search above
avx2-cap     ``ATEN_CPU_CAPABILITY=avx2``: the fused AVX2 kernel up to D = 128, the tiled
             search above (on a CPU without AVX-512 this is the ``default`` column)
tiled        ``ATEN_CPU_CAPABILITY=default``: the tiled GEMM search over this torch's BLAS
===========  ===============================================================================

Every cell is the median of ``--repeats`` calls in its child; the ratios (tiled / default,
tiled / avx2-cap) are measured in the same run.

Usage::

    python benchmarks/bench_knn_dims.py --n 10000 --dims 49 128 256 512
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def child(n: int, d: int, k: int, repeats: int, threads: int) -> float:
    import torch
    import torch_geometry  # noqa: F401  (loads the operators)

    torch.set_num_threads(threads)
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(0)).relu()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.ops.torch_geometry.knn_graph(x, k)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_child(cap: str, n: int, d: int, args) -> float:
    env = dict(os.environ)
    env.pop("ATEN_CPU_CAPABILITY", None)
    if cap:
        env["ATEN_CPU_CAPABILITY"] = cap
    cmd = [sys.executable, __file__, "--child", "--n", str(n), "--dims", str(d), "--k",
           str(args.k), "--repeats", str(args.repeats), "--threads", str(args.threads)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--dims", type=int, nargs="+", default=[49, 128, 256, 512])
    p.add_argument("--k", type=int, default=25)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--json", default="", help="also write the rows as JSON here")
    args = p.parse_args()
    if args.child:
        print(child(args.n, args.dims[0], args.k, args.repeats, args.threads))
        return 0
    import torch

    flags = set(open("/proc/cpuinfo").read().split()) if os.path.exists("/proc/cpuinfo") else set()
    wide = "avx512f" in flags
    print(f"torch {torch.__version__}, N = {args.n}, k = {args.k}, {args.threads} threads, "
          f"{'AVX-512' if wide else 'AVX2'} CPU; seconds (median of {args.repeats})")
    print("   D   default   avx2-cap   tiled   tiled/default   tiled/avx2-cap")
    rows = []
    for d in args.dims:
        native = run_child("", args.n, d, args)
        avx2 = run_child("avx2", args.n, d, args) if wide else native
        tiled = run_child("default", args.n, d, args)
        rows.append({"d": d, "default": native, "avx2": avx2, "tiled": tiled})
        print(f"{d:4d}  {native:8.3f}  {avx2:9.3f}  {tiled:6.3f}  {tiled / native:14.2f}x  "
              f"{tiled / avx2:14.2f}x", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "n": args.n, "k": args.k,
                       "threads": args.threads, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
