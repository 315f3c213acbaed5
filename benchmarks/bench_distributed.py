"""Benchmark: torch_geometry.distributed.nnk_graph on 1 to 4 gloo processes (issue 16).

The first ``--n`` Fashion-MNIST training images (784 dims, float32, cosine kernel) are split in
P equal row blocks, one per process; every process runs ``distributed.nnk_graph`` on its block
(``--repeats`` times, the fastest kept) and reports the wall time of each step and the bytes it
sent. All processes run on this machine: with 2 cores, P = 4 processes share 2 cores (each
process runs 1 thread), so the measured strong scaling is bound by the cores, not by the
algorithm. A model of P separate machines is therefore printed next to it, from the measured
volumes:

    T(P) = C_ring / P + C_merge_solve / P + bytes_per_rank(P) / bandwidth + (P - 1) * latency

where C_ring and C_merge_solve are the compute seconds of the single-process run (P = 1: no
communication, one core), and bytes_per_rank(P) is the largest volume a rank sent in the
P-process run (ring shards + candidate rows; the volumes depend only on P and the data, not
on the machine). Bandwidths of 10 and 100 Gbit/s and a latency of 50 us per ring step.

Usage::

    python benchmarks/bench_distributed.py --n 20000 --k 30 --procs 1 2 4
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile

_WORKER = r"""
import json, os, sys, time, torch, torch.distributed as dist
torch.set_num_threads(1)
import torch_geometry.distributed as tgd
from torch_geometry.datasets import load_fashion_mnist
rank, world, port, out, n, k, repeats = sys.argv[1:8]
rank, world, n, k, repeats = int(rank), int(world), int(n), int(k), int(repeats)
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
x, _ = load_fashion_mnist("train", n=n)
cuts = [n * r // world for r in range(world + 1)]
xl = x[cuts[rank]:cuts[rank + 1]].contiguous()
best = None
for _ in range(repeats):
    dist.barrier()
    t = time.perf_counter()
    g = tgd.nnk_graph(xl, k)
    dist.barrier()
    total = time.perf_counter() - t
    if best is None or total < best["total"]:
        best = {"total": total, "seconds": g.seconds, "bytes": g.bytes_sent, "rows": xl.shape[0]}
with open(f"{out}.{rank}", "w") as f:
    json.dump(best, f)
dist.destroy_process_group()
os._exit(0)
"""


def run(world: int, n: int, k: int, repeats: int, tmp: str):
    script = os.path.join(tmp, "worker.py")
    with open(script, "w") as f:
        f.write(_WORKER)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = os.path.join(tmp, f"out{world}")
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    procs = [subprocess.Popen([sys.executable, script, str(r), str(world), str(port), out, str(n),
                               str(k), str(repeats)], env=env, stderr=subprocess.PIPE, text=True)
             for r in range(world)]
    for p in procs:
        _, err = p.communicate(timeout=3600)
        if p.returncode != 0:
            raise RuntimeError(err)
    return [json.load(open(f"{out}.{r}")) for r in range(world)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--k", type=int, default=30)
    ap.add_argument("--procs", type=int, nargs="*", default=[1, 2, 3, 4])
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        for p in args.procs:
            res[p] = run(p, args.n, args.k, args.repeats, tmp)
            print(f"P={p}: " + json.dumps(res[p][0]), flush=True)
    print(f"\nFashion-MNIST N={args.n}, D=784, k={args.k}, float32; {os.cpu_count()} cores "
          "on this machine, 1 thread per process\n")
    print("| P | wall s (max over ranks) | speed-up | ring s | of it comm s | fetch s | merge s | "
          "solve s | MiB sent per rank (max) |")
    print("|---|---|---|---|---|---|---|---|---|")
    t1 = max(r["total"] for r in res[min(res)])
    for p, ranks in res.items():
        wall = max(r["total"] for r in ranks)
        sec = {key: max(r["seconds"].get(key, 0.0) for r in ranks)
               for key in ("ring", "ring_comm", "fetch", "merge", "solve")}
        mib = max(r["bytes"] for r in ranks) / 2**20
        print(f"| {p} | {wall:.2f} | {t1 / wall:.2f}x | {sec['ring']:.2f} | {sec['ring_comm']:.2f} | "
              f"{sec['fetch']:.2f} | {sec['merge']:.2f} | {sec['solve']:.2f} | {mib:.1f} |")
    if 1 in res:
        one = res[1][0]["seconds"]
        c_ring = one["ring"]
        c_rest = one.get("merge", 0.0) + one.get("solve", 0.0) + one.get("fetch", 0.0)
        print("\nModel of P machines (1 core each, compute from P=1, volumes measured):\n")
        print("| P | MiB sent per rank | T at 10 Gbit/s | speed-up | T at 100 Gbit/s | speed-up |")
        print("|---|---|---|---|---|---|")
        for p, ranks in res.items():
            b = max(r["bytes"] for r in ranks)
            row = [f"| {p} | {b / 2**20:.1f}"]
            for bw in (10e9 / 8, 100e9 / 8):
                t = (c_ring + c_rest) / p + b / bw + (p - 1) * 50e-6
                row.append(f"{t:.2f} | {(c_ring + c_rest) / t:.2f}x")
            print(" | ".join(row) + " |")


if __name__ == "__main__":
    main()
