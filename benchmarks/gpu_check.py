"""GPU check of torch_geometry's CUDA path: correctness against the CPU kernels, then speed.

Part 1 (correctness). Every operator runs on CUDA tensors and is compared with the CPU
kernel on the same data: Fashion-MNIST activations (a fixed, seeded CNN applied to the
first training images: a conv layer for the channel-wise ops, the flattened features for
the others) and synthetic manifolds (a 3-flat in R^64 with noise, a 2-sphere). Each
operator is checked on the device-generic path and, where this build has them, on the
native CUDA kernels (``_set_native_cuda(True)``). Checks: identical neighbours, weights and
errors within 1e-5 (float32), identical integer metrics, float metrics within 1e-4.

Part 2 (speed, float32, cosine, k = 50). ``nnk_graph`` end to end on the first N
Fashion-MNIST training images (784 dims; N = 10,000 and 60,000) and on N = 1,000,000 x 128
synthetic points with approximate candidates (``approximate_candidates`` on the device),
against, in the same run: torch's own ``mm`` + ``topk`` kNN on the device, FAISS's GPU flat
index (``GpuIndexFlatIP``) where FAISS with GPU support is installed, and the CPU kernel on 2
threads. Prints times, ratios and peak GPU memory (``torch.cuda.max_memory_allocated``)
next to input + output size.

Part 3 (training integration on the device). A seeded CNN on Fashion-MNIST images is moved
to the device: the geometry tracker (two epochs, with a training step between them, on
activations that stay on the device) and ``select_models`` (two models) are compared with
the same computations on the CPU copies of the same activations; half-precision activations
must give the metrics of their float32 copy; a tracker made while the model was on the CPU
must follow it to the device; and every device -> host copy made by a tracker epoch is
logged: none may be larger than the per-node metric vectors (N values).

Usage::

    python benchmarks/gpu_check.py                      # on a GPU: a few minutes on an H200
    python benchmarks/gpu_check.py --json out.json      # also write the results
    python benchmarks/gpu_check.py --device cpu --small # smoke run of the script (no GPU)

Without a GPU (and without ``--device cpu``) it says so and exits with status 2. With
``--device cpu`` the "device" path is the generic kernels' private ops
(``torch.ops.torch_geometry._generic_<op>``) on CPU.
"""
import argparse
import json
import math
import os
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import torch_geometry as tg
from torch_geometry.datasets import load_fashion_mnist

ops = torch.ops.torch_geometry
OPS = ["knn_graph", "nnk_graph", "nnk_symmetrize", "manifold_metrics", "nnk_loo_error",
       "label_smoothness", "neighborhood_overlap", "channel_nnk_graph", "channel_overlap"]
WEIGHT_TOL = 1e-5
METRIC_TOL = 1e-4


# ---------------------------------------------------------------- data
def fmnist_activations(n: int):
    """Fashion-MNIST through a fixed seeded CNN: (conv activations [n, 8, 7, 7],
    flattened features [n, 392], labels [n]), float32 on CPU."""
    x, y = load_fashion_mnist("train", n=n, flatten=False)
    gen = torch.Generator().manual_seed(0)
    w1 = torch.randn(8, 1, 3, 3, generator=gen) / 3
    w2 = torch.randn(8, 8, 3, 3, generator=gen) / 8
    with torch.no_grad():
        h = torch.relu(torch.nn.functional.conv2d(x, w1, padding=1))
        h = torch.nn.functional.max_pool2d(h, 2)
        h = torch.relu(torch.nn.functional.conv2d(h, w2, padding=1))
        h = torch.nn.functional.max_pool2d(h, 2)
    return h.contiguous(), h.flatten(1).contiguous(), y


def flat_manifold(n: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(64, 3, generator=gen))[0]
    return (torch.randn(n, 3, generator=gen) @ basis.T + 0.01 * torch.randn(n, 64, generator=gen))


def sphere(n: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    p = torch.randn(n, 3, generator=gen)
    return torch.cat([p / p.norm(dim=1, keepdim=True), torch.zeros(n, 5)], 1) + 2.0


# ---------------------------------------------------------------- correctness
class Checker:
    def __init__(self, device: str):
        self.device = device
        self.rows: List[Dict] = []

    def device_op(self, name: str) -> Callable:
        if self.device == "cpu":
            return getattr(ops, "_generic_" + name)
        op = getattr(ops, name)

        def run(*args):
            moved = [a.to(self.device) if isinstance(a, torch.Tensor) else a for a in args]
            out = op(*moved)
            if isinstance(out, tuple):
                return tuple(o.cpu() for o in out)
            return out.cpu() if isinstance(out, torch.Tensor) else out
        return run

    def record(self, path: str, data: str, name: str, ok: bool, detail: str):
        self.rows.append({"path": path, "data": data, "op": name, "ok": bool(ok), "detail": detail})

    def compare(self, path: str, data: str, name: str, args: tuple):
        want = getattr(ops, name)(*args)
        try:
            got = self.device_op(name)(*args)
        except Exception as exc:  # report and go on: the table shows what failed
            self.record(path, data, name, False, f"raised {type(exc).__name__}: {exc}".splitlines()[0])
            return
        if name in ("knn_graph", "nnk_graph", "channel_nnk_graph"):
            self.compare_graph(path, data, name, args, got, want)
            return
        if not isinstance(want, tuple):
            want, got = (want,), (got,)
        ok, worst, notes = True, 0.0, []
        for g, w in zip(got, want):
            if isinstance(w, float):
                diff = abs(g - w)
                worst = max(worst, diff)
                ok &= diff <= METRIC_TOL
            elif w.dtype in (torch.int64, torch.int32, torch.bool):
                same = torch.equal(g, w)
                if not same:
                    notes.append(f"{(g != w).float().mean().item():.2e} of integer entries differ")
                ok &= same
            else:
                diff = (g.double() - w.double()).abs().max().item() if w.numel() else 0.0
                worst = max(worst, diff)
                tol = WEIGHT_TOL if name in ("nnk_graph", "channel_nnk_graph", "knn_graph") else METRIC_TOL
                ok &= diff <= tol
        self.record(path, data, name, ok, f"max |diff| {worst:.1e}" + ("; " + "; ".join(notes) if notes else ""))

    def compare_graph(self, path, data, name, args, got, want):
        """Graphs, by quantities that do not depend on how ties are broken: the sorted
        similarities of each node's k nearest neighbours (kNN) and each node's
        reconstruction error (NNK: 1 + 2 x the optimum of its QP, unique even where K_SS is
        singular and the optimal weights are not), within 1e-5 of the CPU kernel run in
        float64 on the same points. Also reported: the share of nodes whose neighbour set
        differs (ties within rounding, e.g. scaled copies under the cosine kernel, which
        are common among sparse ReLU maps) and the largest weight difference from the CPU
        kernel in the input's dtype."""
        want64 = getattr(ops, name)(*[a.double() if isinstance(a, torch.Tensor) and a.is_floating_point()
                                      else a for a in args])
        if name == "knn_graph":
            diff = (got[1].double() - want64[1]).abs().max().item()
        else:
            diff = (got[2].double() - want64[2]).abs().max().item()
        sets_g = torch.sort(got[0], dim=-1).values
        sets_w = torch.sort(want64[0], dim=-1).values
        differ = (sets_g != sets_w).any(-1).float().mean().item()
        w_diff = (got[1].double() - want[1].double()).abs().max().item()
        what = "similarity" if name == "knn_graph" else "error"
        self.record(path, data, name, diff <= WEIGHT_TOL,
                    f"{what} max |diff| {diff:.1e} vs CPU float64; weights vs CPU {w_diff:.1e}; "
                    f"neighbour sets differ in {differ:.1%} of nodes")

    def run_all(self, path: str, small: bool):
        n = 600 if small else 4000
        conv, feats, labels = fmnist_activations(n)
        sets = {"fmnist-act": feats, "flat3-R64": flat_manifold(n, 1), "sphere": sphere(n, 2)}
        k = 10 if small else 30
        for data, x in sets.items():
            for kernel in ("cosine", "gaussian"):
                self.compare(path, f"{data}/{kernel}", "knn_graph", (x, k, kernel, None, "mean"))
                self.compare(path, f"{data}/{kernel}", "nnk_graph",
                             (x, k, kernel, None, "mean", None, 1e-10))
            nb, w, err = ops.nnk_graph(x, k, "cosine", None, "mean", None, 1e-10)
            for mode in ("none", "max", "mean", "min_error"):
                self.compare(path, f"{data}/{mode}", "nnk_symmetrize", (nb, w, err, mode))
            self.compare(path, data, "manifold_metrics", (x, nb, w, "cosine", 0.05))
            self.compare(path, data, "nnk_loo_error", (nb, w, labels, 10))
            self.compare(path, data, "label_smoothness", (nb, w, labels))
            nb2, w2, _ = ops.nnk_graph(x, k // 2, "gaussian", None, "local", None, 1e-10)
            self.compare(path, data, "neighborhood_overlap", (nb, w, nb2, w2))
        self.compare(path, "fmnist-conv", "channel_nnk_graph", (conv, k, "cosine", 1e-10))
        cnb, cw, _ = ops.channel_nnk_graph(conv, k, "cosine", 1e-10)
        self.compare(path, "fmnist-conv", "channel_overlap", (cnb, cw))
        cand = tg.approximate_candidates(feats, k)
        self.compare(path, "fmnist-act/approx-candidates", "nnk_graph",
                     (feats, k, "cosine", None, "mean", cand, 1e-10))


# ---------------------------------------------------------------- training integration
TRAINING_TOL = 2e-3   # summary means: graphs may differ from the CPU kernel's by ties


class HostCopies(TorchDispatchMode):
    """Logs the shape of every copy from a non-CPU tensor to a CPU one."""

    def __init__(self):
        super().__init__()
        self.shapes: List[tuple] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func is torch.ops.aten._to_copy.default:
            if args[0].device.type != "cpu" and out.device.type == "cpu":
                self.shapes.append(tuple(args[0].shape))
        elif func is torch.ops.aten.copy_.default:
            if args[1].device.type != "cpu" and args[0].device.type == "cpu":
                self.shapes.append(tuple(args[1].shape))
        return out


def training_model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(16 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10))


def compare_rows(got: List[dict], want: List[dict]) -> tuple:
    """(ok, worst |difference| of a summary mean, note) of two lists of history rows."""
    keys_g = [(r["epoch"], r["layer"], r["metric"]) for r in got]
    keys_w = [(r["epoch"], r["layer"], r["metric"]) for r in want]
    if keys_g != keys_w:
        return False, math.inf, "different rows"
    worst = 0.0
    for g, w in zip(got, want):
        if g["count"] != w["count"]:
            return False, math.inf, f"{g['layer']}/{g['metric']}: count {g['count']} vs {w['count']}"
        if w["count"]:
            worst = max(worst, abs(g["mean"] - w["mean"]))
    return worst <= TRAINING_TOL, worst, ""


def check_training(device: str, small: bool) -> List[Dict]:
    """Part 3; one row per check: {"check", "ok", "detail"}."""
    from torch_geometry.callbacks import select_models
    from torch_geometry.tracking import capture_probe

    n = 600 if small else 2000
    k = 10 if small else 25
    x, y = load_fashion_mnist("train", n=n, flatten=False)
    layers = ["1", "4", "8"]
    rows: List[Dict] = []

    def record(check: str, ok: bool, detail: str):
        rows.append({"check": check, "ok": bool(ok), "detail": detail})

    model = training_model(0).to(device)
    tracker = tg.GeometryTracker(model, layers, (x, y), k=k, progress=False)
    opts = tg._C.TrackerOptions()
    opts.k = k
    ref = tg._C.GeometryTrackerCore(layers, opts)
    ref.set_labels(y)
    got, want = [], []
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for epoch in range(2):
        acts = tracker.capture()
        where = {a.device.type for a in acts.values()}
        got += tracker._core.step(epoch, acts)
        want += ref.step(epoch, {name: a.cpu() for name, a in acts.items()})
        del acts
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x[:200].to(device)), y[:200].to(device)).backward()
        opt.step()
    ok, worst, note = compare_rows(got, want)
    record("tracker: 2 epochs on the device vs the CPU kernels", ok and where == {torch.device(device).type},
           f"activations on {sorted(where)}; summary means max |diff| {worst:.1e} {note}".strip())

    copies = HostCopies()
    with copies:
        tracker.on_epoch_end(2)
    largest = max((math.prod(s) for s in copies.shapes), default=0)
    record("tracker epoch: device -> host copies", largest <= n,
           f"{len(copies.shapes)} copies, largest {largest} values (N = {n})")

    acts = capture_probe(model, layers, tracker.probe_x)
    for half in (torch.float16, torch.bfloat16):
        a = tg._C.GeometryTrackerCore(layers, opts)
        b = tg._C.GeometryTrackerCore(layers, opts)
        a.set_labels(y)
        b.set_labels(y)
        ok, worst, note = compare_rows(a.step(0, {m: t.to(half) for m, t in acts.items()}),
                                       b.step(0, {m: t.to(half).float() for m, t in acts.items()}))
        record(f"tracker: {half} activations vs their float32 copy", ok and worst == 0.0,
               f"summary means max |diff| {worst:.1e} {note}".strip())
    del acts

    other = training_model(1).to(device)
    models = {"trained": model, "untrained": other}
    with HostCopies() as sel_copies:
        ranked = select_models(models, (x, y), layer="8", k=k)
    cpu_ranked = select_models({name: _cpu_copy(m) for name, m in models.items()}, (x, y),
                               layer="8", k=k)
    diff = max(abs(a[1] - b[1]) for a, b in zip(sorted(ranked), sorted(cpu_ranked)))
    largest = max((math.prod(s) for s in sel_copies.shapes), default=0)
    record("select_models on the device vs CPU copies of the models",
           diff <= TRAINING_TOL and largest <= 1,
           f"{ranked}; LOO error max |diff| {diff:.1e}; largest device -> host copy {largest}")

    moved = training_model(2)
    late = tg.GeometryTracker(moved, layers, (x, y), k=k, progress=False)
    late.on_epoch_end(0)
    moved.to(device)
    where = {a.device.type for a in late.capture().values()}
    late_rows = late.on_epoch_end(1)
    record("tracker made on the CPU follows the model to the device",
           where == {torch.device(device).type} and any(r["metric"] == "epoch_overlap" for r in late_rows),
           f"activations on {sorted(where)} after model.to({device!r})")
    return rows


def _cpu_copy(model: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(model).cpu()


def print_training(rows: List[Dict]):
    print("\n## Training integration on the device\n")
    print("| check | ok | detail |\n|---|---|---|")
    for r in rows:
        print(f"| {r['check']} | {'yes' if r['ok'] else 'NO'} | {r['detail']} |")


# ---------------------------------------------------------------- speed
def sync(device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable, device: str, repeats: int):
    """Median seconds over `repeats` calls after one warm-up, and the peak GPU memory of
    the calls (bytes above what was allocated before them; 0 on CPU)."""
    fn()
    sync(device)
    base = 0
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() - base if device.startswith("cuda") else 0
    return statistics.median(times), peak


def torch_knn(x: torch.Tensor, k: int, block: int = 4096):
    """kNN by blocked mm + topk in plain torch (cosine; self excluded)."""
    u = torch.nn.functional.normalize(x, dim=1)
    out = torch.empty(x.shape[0], k, dtype=torch.long, device=x.device)
    for r0 in range(0, x.shape[0], block):
        s = u[r0:r0 + block] @ u.T
        s[torch.arange(s.shape[0], device=x.device), torch.arange(r0, r0 + s.shape[0], device=x.device)] = -2
        out[r0:r0 + block] = s.topk(k, dim=1).indices
    return out


def faiss_gpu_knn():
    """A function running FAISS's GPU flat index (inner product on unit rows), or the reason
    it cannot run here."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return None, "faiss not installed"
    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() < 1:
        return None, "faiss has no GPU support here"
    res = faiss.StandardGpuResources()

    def run(x: torch.Tensor, k: int):
        u = torch.nn.functional.normalize(x, dim=1).cpu().numpy()
        index = faiss.GpuIndexFlatIP(res, u.shape[1])
        index.add(u)
        return index.search(u, k + 1)
    return run, ""


def speed(device: str, small: bool, repeats: int, cpu_baseline: bool) -> List[Dict]:
    k = 10 if small else 50
    nnk = ops.nnk_graph if device != "cpu" else ops._generic_nnk_graph
    faiss_run, faiss_why = faiss_gpu_knn() if device != "cpu" else (None, "cpu smoke run")
    rows = []
    sizes = [800, 1500] if small else [10000, 60000]
    for n in sizes:
        x_cpu, _ = load_fashion_mnist("train", n=n)
        x = x_cpu.to(device)
        row = {"data": f"fmnist {n} x 784", "k": k}
        row["nnk_graph_s"], row["nnk_peak_bytes"] = timed(
            lambda: nnk(x, k, "cosine", None, "mean", None, 1e-10), device, repeats)
        row["in_out_bytes"] = x.numel() * 4 + n * k * (8 + 4) + n * 4
        row["torch_knn_s"], _ = timed(lambda: torch_knn(x, k), device, repeats)
        if faiss_run is not None:
            row["faiss_gpu_flat_s"], _ = timed(lambda: faiss_run(x, k), device, repeats)
        else:
            row["faiss_gpu_flat_s"], row["faiss_note"] = None, faiss_why
        if cpu_baseline:
            threads = torch.get_num_threads()
            torch.set_num_threads(2)
            t0 = time.perf_counter()
            ops.nnk_graph(x_cpu, k, "cosine", None, "mean", None, 1e-10)
            row["cpu_2threads_s"] = time.perf_counter() - t0
            torch.set_num_threads(threads)
        rows.append(row)
    # Large: synthetic clustered points, approximate candidates on the device.
    n, d = (5000, 16) if small else (1_000_000, 128)
    gen = torch.Generator().manual_seed(3)
    centres = torch.randn(1000 if not small else 20, d, generator=gen)
    x = (centres[torch.randint(0, centres.shape[0], (n,), generator=gen)]
         + 0.3 * torch.randn(n, d, generator=gen)).to(device)
    row = {"data": f"synthetic {n} x {d}, approximate candidates", "k": k}
    t0 = time.perf_counter()
    cand = tg.approximate_candidates(x, k)
    sync(device)
    row["candidates_s"] = time.perf_counter() - t0
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated() if device.startswith("cuda") else 0
    t0 = time.perf_counter()
    nnk(x, k, "cosine", None, "mean", cand, 1e-10)
    sync(device)
    row["nnk_graph_s"] = time.perf_counter() - t0
    row["nnk_peak_bytes"] = (torch.cuda.max_memory_allocated() - base) if device.startswith("cuda") else 0
    row["in_out_bytes"] = x.numel() * 4 + n * k * (8 + 8 + 4) + n * 4
    rows.append(row)
    return rows


# ---------------------------------------------------------------- report
def print_correctness(rows: List[Dict]):
    print("\n## Correctness: CUDA path vs CPU kernel\n")
    print("| path | data | op | ok | detail |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['path']} | {r['data']} | {r['op']} | {'yes' if r['ok'] else 'NO'} | {r['detail']} |")
    bad = [r for r in rows if not r["ok"]]
    print(f"\n{len(rows) - len(bad)} of {len(rows)} checks passed.")


def ratio(a: Optional[float], b: Optional[float]) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def print_speed(rows: List[Dict], path: str):
    mib = 1 << 20
    print(f"\n## Speed ({path} path): nnk_graph end to end, float32, cosine\n")
    print("| data | k | nnk_graph | torch mm+topk kNN | nnk / torch kNN | FAISS GPU flat | nnk / FAISS "
          "| CPU kernel, 2 threads | CPU / nnk | candidates | peak GPU MiB (in+out MiB) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")

    def sec(v: Optional[float]) -> str:
        return f"{v:.3f} s" if v else "-"

    for r in rows:
        nnk, knn = r["nnk_graph_s"], r.get("torch_knn_s")
        faiss_t, cpu_t = r.get("faiss_gpu_flat_s"), r.get("cpu_2threads_s")
        cells = [r["data"], str(r["k"]), sec(nnk), sec(knn), ratio(nnk, knn),
                 sec(faiss_t) if faiss_t else r.get("faiss_note", "-"), ratio(nnk, faiss_t),
                 sec(cpu_t), ratio(cpu_t, nnk), sec(r.get("candidates_s")),
                 f"{r['nnk_peak_bytes'] / mib:.0f} ({r['in_out_bytes'] / mib:.0f})"]
        print("| " + " | ".join(cells) + " |")


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu for a smoke run")
    p.add_argument("--small", action="store_true", help="small sizes (smoke run)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-speed", action="store_true", help="correctness only")
    p.add_argument("--no-cpu-baseline", action="store_true", help="skip the 2-thread CPU timing")
    p.add_argument("--json", help="write all results to this file")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU is visible to torch (torch.cuda.is_available() is False, "
              f"torch {torch.__version__}, CUDA build: {torch.version.cuda}). Nothing was checked. "
              "Run it on a machine with a GPU, or with `--device cpu --small` for a smoke run "
              "of the script itself.", file=sys.stderr)
        return 2
    if args.device.startswith("cuda"):
        # Larger blocks for the generic kernels than the CPU-minded 256 MiB default.
        os.environ.setdefault("TORCH_GEOMETRY_GENERIC_BUDGET", str(2 << 30))
        print(f"device: {torch.cuda.get_device_name(args.device)}, torch {torch.__version__}")
    paths = ["generic"]
    try:
        ops._set_native_cuda(True)
        ops._set_native_cuda(False)
        if args.device.startswith("cuda"):
            paths.append("native")
    except RuntimeError as exc:
        print(f"native CUDA kernels: not in this build ({str(exc).splitlines()[0]})")
    results: Dict[str, object] = {"device": args.device, "small": args.small}
    for path in paths:
        ops._set_native_cuda(path == "native")
        checker = Checker(args.device)
        checker.run_all(path, args.small)
        print_correctness(checker.rows)
        results[f"correctness_{path}"] = checker.rows
        if not args.no_speed:
            rows = speed(args.device, args.small, 1 if args.small else args.repeats,
                         cpu_baseline=not args.no_cpu_baseline and path == "generic")
            print_speed(rows, path)
            results[f"speed_{path}"] = rows
    ops._set_native_cuda(False)
    results["training"] = check_training(args.device, args.small)
    print_training(results["training"])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=lambda v: None if isinstance(v, float) and math.isnan(v) else v)
    failed = sum(not r["ok"] for key, rows in results.items()
                 if key.startswith("correctness") or key == "training" for r in rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
