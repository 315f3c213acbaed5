"""Manifold graph metrics of Fashion-MNIST pixels, summarised per class.

    .venv/bin/python examples/metrics_fashion_mnist.py --n 10000 --k 50

Builds the NNK graph of the first N training images (cosine kernel), computes the per-node
metrics, and prints the median of each metric per class plus the leave-one-out label error.
"""
import argparse
import time

import torch

import torch_geometry as tg
from torch_geometry import metrics
from torch_geometry.datasets import load_fashion_mnist

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
           "Sneaker", "Bag", "Ankle boot"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    x, y = load_fashion_mnist("train", n=args.n)
    t0 = time.perf_counter()
    g = tg.nnk_graph(x, args.k)
    t1 = time.perf_counter()
    m = metrics.manifold_metrics(x, g)
    hard, soft = metrics.loo_error(g, y)
    t2 = time.perf_counter()
    print(f"N = {args.n}, k = {args.k}, cosine kernel: nnk_graph {t1 - t0:.2f} s, "
          f"metrics {t2 - t1:.2f} s, {torch.get_num_threads()} threads")
    print(f"LOO error {hard.double().mean():.4f} (soft {soft.double().mean():.4f}), "
          f"label smoothness {metrics.label_smoothness(g, y):.4f}, "
          f"isolated nodes {int(m['isolated'].sum())}\n")
    names = ["degree", "diameter", "local_dim", "log_volume", "curvature", "error"]
    print("| class | " + " | ".join(names) + " | loo_error |")
    print("|---" * (len(names) + 2) + "|")
    for c in range(10):
        sel = y == c
        s = metrics.summarize({n: m[n][sel] for n in names})
        cells = [f"{s[n]['median']:.3g}" for n in names]
        print(f"| {CLASSES[c]} | " + " | ".join(cells) + f" | {hard[sel].double().mean():.3f} |")
    print("\n(medians per class; loo_error is the class mean)")


if __name__ == "__main__":
    main()
