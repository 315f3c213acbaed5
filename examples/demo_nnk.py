"""Demo: an NNK graph on Fashion-MNIST images, and what it tells about the labels.

Builds the NNK graph (cosine kernel, k candidates per image) of the first ``--n`` training
images with ``torch_geometry.nnk_graph`` and prints:

- the time to build it;
- the NNK degree per node (weights > 0 in the row): mean and median, against the k candidates
  a kNN graph would keep;
- the number of undirected edges (``symmetrize="min_error"``, the default);
- the mean reconstruction error e_i = 1 - 2 theta^T k_S + theta^T K_SS theta;
- the leave-one-out label error of NNK interpolation (predict node i's class as
  argmax_c sum_j theta_ij [y_j = c], ties to the lowest class) next to a plain kNN majority
  vote over the same k candidates. No node is its own neighbour, so both are leave-one-out.

Run: ``make demo`` or ``python examples/demo_nnk.py --n 5000 --k 25``.
"""

from __future__ import annotations

import argparse
import time

import torch

import torch_geometry
from torch_geometry.datasets import load_fashion_mnist


def vote_error(neighbors: torch.Tensor, votes: torch.Tensor, y: torch.Tensor, classes: int) -> float:
    """0/1 error of a weighted vote over each node's neighbours.

    Args:
        neighbors (Tensor[N, k], int64): neighbour indices, -1 = padding.
        votes (Tensor[N, k]): weight of each neighbour's vote (0 = no vote).
        y (Tensor[N], int64): labels in 0..classes-1.
        classes (int): number of classes.

    Returns:
        The fraction of nodes whose argmax class (ties -> lowest class) differs from y;
        a node without any vote counts as an error (as in ``metrics.loo_error``).
    """
    votes = votes.double() * (neighbors >= 0)
    scores = torch.zeros(neighbors.shape[0], classes, dtype=torch.float64)
    scores.scatter_add_(1, y[neighbors.clamp(min=0)], votes)
    # torch.argmax returns the first maximum: ties go to the lowest class.
    wrong = (scores.argmax(dim=1) != y) | (votes.sum(dim=1) == 0)
    return wrong.double().mean().item()


def nnk_loo_error(graph: torch_geometry.NNKGraph, y: torch.Tensor, classes: int) -> float:
    """NNK leave-one-out 0/1 label error: ``torch_geometry.metrics.loo_error`` when it is
    there, else the same vote computed here with the NNK weights."""
    try:
        from torch_geometry.metrics import loo_error
    except ImportError:
        return vote_error(graph.neighbors, graph.weights, y, classes)
    hard, _soft = loo_error(graph, y, num_classes=classes)
    return hard.double().mean().item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=5000, help="first n Fashion-MNIST training images")
    p.add_argument("--k", type=int, default=25, help="candidates per node")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    x, y = load_fashion_mnist("train", n=args.n)
    classes = 10
    print(f"Fashion-MNIST: {x.shape[0]} images x {x.shape[1]} pixels; k = {args.k}, cosine kernel, "
          f"{torch.get_num_threads()} threads")

    t0 = time.perf_counter()
    graph = torch_geometry.nnk_graph(x, args.k, kernel="cosine")
    edge_index = graph.edge_index  # symmetrize="min_error"
    seconds = time.perf_counter() - t0

    degree = (graph.weights > 0).sum(dim=1).double()
    pairs = torch.unique(edge_index.min(dim=0).values * x.shape[0] + edge_index.max(dim=0).values)
    knn_votes = (graph.neighbors >= 0).to(graph.weights.dtype)  # the candidates = the k nearest
    print(f"built NNK graph in {seconds:.3f} s")
    print(f"NNK degree: mean {degree.mean():.2f}, median {degree.median():.0f} (kNN degree: {args.k})")
    print(f"undirected edges (min_error): {pairs.numel()} (kNN graph: up to {x.shape[0] * args.k})")
    print(f"mean reconstruction error: {graph.error.double().mean():.4f}")
    print(f"leave-one-out label error: NNK {nnk_loo_error(graph, y, classes):.4f}, "
          f"kNN majority vote (k = {args.k}) {vote_error(graph.neighbors, knn_votes, y, classes):.4f}")


if __name__ == "__main__":
    main()
