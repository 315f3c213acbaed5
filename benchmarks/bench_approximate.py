"""Benchmark: approximate kNN candidates for large N (issue 16), and what they do to the NNK graph.

Two modes, each printing Markdown rows for benchmarks/results/approximate.md:

``fmnist``: the first ``--n`` Fashion-MNIST training images (784 dims, cosine kernel).
    Times in the same run the exact search (``torch_geometry.knn_graph``, the reference),
    ``approximate_candidates`` (engine ``"ivf"``, for each ``--nprobe``), FAISS
    ``IndexIVFFlat`` (``engine="faiss"``, each ``--faiss-nprobe``) and FAISS HNSW
    (``engine="faiss-hnsw"``, each ``--hnsw-ef``): seconds, speed-up over the exact search,
    recall of the exact k-NN. With ``--nnk``, the NNK graph on each candidate set against the
    NNK graph on the exact candidates: share of the exact graph's edges (theta > 0) kept, and
    the LOO label error of both.
``large``: ``--n`` synthetic clustered points (``--d`` dims, ``--clusters`` Gaussian blobs of
    random scales): ``approximate_candidates`` (with a progress bar), then the NNK solve
    (``nnk_graph(candidates=...)``), the symmetrisation (``edge_index``), the manifold graph
    metrics and the LOO error; the time of each step and the process's peak RSS. Run it in its
    own process so that the peak is its own. ``--data features``: real features instead, the
    ``--d``-dim penultimate layer of a small CNN (the early-stopping study's ``StudyCNN``,
    trained 3 epochs on 10,000 Fashion-MNIST images) on ``--n`` images made from the 70,000
    Fashion-MNIST images by random shifts of up to 3 pixels and horizontal flips (labels =
    the image's class); ``--skip-metrics`` leaves out the manifold metrics.

Ratios measured in one run hold on a loaded machine, absolute times do not.

Usage::

    python benchmarks/bench_approximate.py fmnist --n 60000 --k 50 --nnk
    python benchmarks/bench_approximate.py large --n 1000000 --d 128 --k 50
"""
import argparse
import os
import resource
import time

# The search alternates BLAS and OpenMP calls: idle OpenMP threads must not spin (see
# torch_geometry/approximate.py). Set before torch starts.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

import torch_geometry as tg  # noqa: E402
from torch_geometry.datasets import load_fashion_mnist  # noqa: E402


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def edges_kept(exact: tg.NNKGraph, approx: tg.NNKGraph, chunk: int = 4096) -> float:
    """Share of the exact directed NNK edges (theta > 0) that the approximate graph also has."""
    kept = total = 0
    for s in range(0, exact.num_nodes, chunk):
        ne, we = exact.neighbors[s:s + chunk], exact.weights[s:s + chunk]
        na, wa = approx.neighbors[s:s + chunk], approx.weights[s:s + chunk]
        on_e = we > 0
        on_a = (na.unsqueeze(1) == ne.unsqueeze(2)) & (wa > 0).unsqueeze(1)
        kept += int((on_a.any(2) & on_e).sum())
        total += int(on_e.sum())
    return kept / max(1, total)


def fmnist(args) -> None:
    x, y = load_fashion_mnist("train", n=args.n)
    k = args.k
    print(f"Fashion-MNIST N={x.shape[0]} D={x.shape[1]} k={k}, {torch.get_num_threads()} threads")
    (exact, _), t_exact = _timed(lambda: tg.knn_graph(x, k))
    g_exact = loo_exact = None
    if args.nnk:
        g_exact, t_solve = _timed(lambda: tg.nnk_graph(x, k, candidates=exact))
        loo_exact = tg.metrics.loo_error(g_exact, y)[0].mean().item()
        print(f"NNK solve on the exact candidates: {t_solve:.1f} s, LOO error {loo_exact:.4f}")
    print("\n| engine | setting | seconds | speed-up vs exact | recall@%d | NNK edges kept | "
          "LOO error (exact graph: %s) |" % (k, f"{loo_exact:.4f}" if g_exact else "-"))
    print("|---|---|---|---|---|---|---|")
    print(f"| exact knn_graph | | {t_exact:.2f} | 1.0x | 1.0000 | - | - |", flush=True)

    def row(name, setting, fn):
        # one row as soon as it is measured: a long run shows its progress
        c, t = _timed(fn)
        kept = loo = "-"
        if g_exact is not None:
            g = tg.nnk_graph(x, k, candidates=c)
            kept = f"{edges_kept(g_exact, g):.4f}"
            loo = f"{tg.metrics.loo_error(g, y)[0].mean().item():.4f}"
        print(f"| {name} | {setting} | {t:.2f} | {t_exact / t:.1f}x | "
              f"{tg.candidate_recall(c, exact):.4f} | {kept} | {loo} |", flush=True)

    for p in args.nprobe:
        row("ivf (ours)", f"nprobe={p}", lambda: tg.approximate_candidates(x, k, nprobe=p))
    for p in args.faiss_nprobe:
        row("faiss IVFFlat", f"nprobe={p}",
            lambda: tg.approximate_candidates(x, k, engine="faiss", nprobe=p))
    for ef in args.hnsw_ef:
        row("faiss HNSW32", f"efSearch={ef}",
            lambda: tg.approximate_candidates(x, k, engine="faiss-hnsw", ef_search=ef))


def clustered(n: int, d: int, clusters: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(clusters, d, generator=g) * 4
    scales = torch.rand(clusters, generator=g) * 1.5 + 0.5
    label = torch.randint(clusters, (n,), generator=g)
    x = torch.empty(n, d)
    for s in range(0, n, 100000):
        lab = label[s:s + 100000]
        x[s:s + 100000] = centers[lab] + torch.randn(lab.numel(), d, generator=g) * scales[lab, None]
    return x, label


def cnn_features(n: int, d: int, seed: int = 0):
    """Real features: relu3 (d dims) of a StudyCNN trained 3 epochs on 10,000 Fashion-MNIST
    images, on n augmented copies (shifts up to 3 px, horizontal flips) of the 70,000 images."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
    import early_stopping_study as study

    g = torch.Generator().manual_seed(seed)
    xtr, ytr = load_fashion_mnist("train", flatten=False)
    xte, yte = load_fashion_mnist("test", flatten=False)
    images, labels = torch.cat([xtr, xte]), torch.cat([ytr, yte])
    torch.manual_seed(seed)
    model = study.StudyCNN(hidden=d)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(3):
        study.train_one_epoch(model, opt, xtr[:10000], ytr[:10000], 128, g)
    model.eval()
    src = torch.randint(images.shape[0], (n,), generator=g)
    shifts = torch.randint(-3, 4, (n, 2), generator=g)
    flips = torch.rand(n, generator=g) < 0.5
    out = torch.empty(n, d)
    with torch.no_grad():
        for s in range(0, n, 5000):
            batch = images[src[s:s + 5000]].clone()
            for j in range(batch.shape[0]):
                dy, dx = int(shifts[s + j, 0]), int(shifts[s + j, 1])
                im = torch.roll(batch[j], (dy, dx), (1, 2))
                batch[j] = im.flip(2) if flips[s + j] else im
            h = model.relu2(model.conv2(model.relu1(model.conv1(batch))))
            out[s:s + 5000] = model.relu3(model.fc1(model.flatten(h)))
    return out, labels[src]


def large(args) -> None:
    t0 = time.perf_counter()
    if args.data == "features":
        x, y = cnn_features(args.n, args.d)
        what = "CNN features (augmented Fashion-MNIST)"
    else:
        x, y = clustered(args.n, args.d, args.clusters)
        what = f"synthetic clustered, clusters={args.clusters}"
    k = args.k
    print(f"{what} N={args.n} D={args.d} k={k}, {torch.get_num_threads()} threads "
          f"(data made in {time.perf_counter() - t0:.0f} s)")
    steps = []
    cand, t = _timed(lambda: tg.approximate_candidates(x, k, nprobe=args.large_nprobe, progress=True))
    steps.append((f"approximate_candidates (ivf, nprobe={args.large_nprobe})", t))
    if args.check_recall:
        # recall on a sample of queries against brute force
        idx = torch.randperm(args.n, generator=torch.Generator().manual_seed(1))[:args.check_recall]
        xs = torch.nn.functional.normalize(x, dim=1)
        sc = xs[idx] @ xs.T
        sc[torch.arange(idx.numel()), idx] = -2
        ref = sc.topk(k, 1).indices
        del sc, xs
        print(f"recall@{k} on {idx.numel()} sampled queries: {tg.candidate_recall(cand[idx], ref):.4f}")
    g, t = _timed(lambda: tg.nnk_graph(x, k, candidates=cand))
    steps.append(("nnk_graph solve (candidates given)", t))
    _, t = _timed(lambda: g.edge_index)
    steps.append((f"symmetrize min_error -> {g.edge_index.shape[1]} edges", t))
    if not args.skip_metrics:
        _, t = _timed(lambda: tg.metrics.manifold_metrics(x, g))
        steps.append(("manifold_metrics", t))
    (hard, _), t = _timed(lambda: tg.metrics.loo_error(g, y))
    steps.append((f"loo_error = {hard.mean().item():.4f}", t))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("\n| step | seconds |\n|---|---|")
    for name, t in steps:
        print(f"| {name} | {t:.1f} |")
    print(f"| total | {sum(t for _, t in steps):.1f} |")
    print(f"\npeak RSS: {peak:.0f} MiB (input {x.numel() * 4 / 2**20:.0f} MiB, "
          f"mean degree {g.degree.float().mean().item():.2f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=("fmnist", "large"))
    ap.add_argument("--n", type=int, default=60000)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--nprobe", type=int, nargs="*", default=[8, 16, 24])
    ap.add_argument("--faiss-nprobe", type=int, nargs="*", default=[8, 16])
    ap.add_argument("--hnsw-ef", type=int, nargs="*", default=[64, 128])
    ap.add_argument("--large-nprobe", type=int, default=16)
    ap.add_argument("--check-recall", type=int, default=2000)
    ap.add_argument("--nnk", action="store_true")
    ap.add_argument("--data", choices=("clustered", "features"), default="clustered",
                    help="large mode: synthetic clusters or real CNN features")
    ap.add_argument("--skip-metrics", action="store_true", help="large mode: no manifold metrics")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    fmnist(args) if args.mode == "fmnist" else large(args)


if __name__ == "__main__":
    main()
