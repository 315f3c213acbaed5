"""torch_geometry.approximate_candidates: recall against the exact kNN on real data, shapes,
padding, zero rows, the Gaussian kernel, and use as nnk_graph candidates."""
import pytest
import torch

import torch_geometry as tg
from torch_geometry.datasets import load_fashion_mnist


@pytest.fixture(scope="module")
def fmnist():
    x, _ = load_fashion_mnist("train", n=4000)
    return x


def _rows_clean(c: torch.Tensor) -> None:
    n = c.shape[0]
    assert c.dtype == torch.long
    assert bool(((c >= -1) & (c < n)).all())
    assert not bool((c == torch.arange(n).unsqueeze(1)).any()), "self is never a candidate"
    for row in c[:200]:
        v = row[row >= 0]
        assert v.unique().numel() == v.numel(), "no repeats"


def test_recall_on_fashion_mnist_cosine(fmnist):
    k = 20
    exact, _ = tg.knn_graph(fmnist, k)
    cand = tg.approximate_candidates(fmnist, k, nprobe=8)
    assert cand.shape == (fmnist.shape[0], k)
    _rows_clean(cand)
    recall = tg.candidate_recall(cand, exact)
    assert recall >= 0.9, recall
    # probing every cluster is an exact search
    full = tg.approximate_candidates(fmnist, k, nlist=8, nprobe=8)
    assert tg.candidate_recall(full, exact) >= 0.999
    # more probes, more recall
    low = tg.candidate_recall(tg.approximate_candidates(fmnist, k, nprobe=2), exact)
    assert low <= recall + 1e-9


def test_recall_gaussian(fmnist):
    x = fmnist[:2000].double()
    exact, _ = tg.knn_graph(x, 10, kernel="gaussian", sigma=1.0)
    cand = tg.approximate_candidates(x, 10, kernel="gaussian", nprobe=8)
    _rows_clean(cand)
    assert tg.candidate_recall(cand, exact) >= 0.9


def test_deterministic_and_nnk_candidates(fmnist):
    x = fmnist[:2000]
    a = tg.approximate_candidates(x, 15, seed=3)
    b = tg.approximate_candidates(x, 15, seed=3)
    assert torch.equal(a, b)
    g = tg.nnk_graph(x, 15, candidates=a, symmetrize="none")
    assert g.neighbors.shape == (2000, 15)
    assert bool((g.weights >= 0).all())
    # NNK keeps the candidates of each row (reordered by weight)
    same = torch.sort(g.neighbors, 1).values == torch.sort(a, 1).values
    assert bool(same.all())


def test_zero_rows_padding_and_errors():
    torch.manual_seed(0)
    x = torch.randn(300, 8)
    x[5] = 0
    c = tg.approximate_candidates(x, 10, nlist=30, nprobe=1)
    assert bool((c[5] == -1).all())
    assert not bool((c == 5).any())
    _rows_clean(c)
    # nprobe=1 with ~10 points a cluster: rows can run out of candidates and are padded at the end
    for row in c:
        v = row >= 0
        assert bool((v[:-1] >= v[1:]).all())
    with pytest.raises(ValueError):
        tg.approximate_candidates(x, 300)
    with pytest.raises(ValueError):
        tg.approximate_candidates(x, 5, kernel="poly")
    with pytest.raises(ValueError):
        tg.approximate_candidates(x, 5, nprobe=0)


def test_candidate_recall():
    e = torch.tensor([[1, 2, -1], [0, 2, 1]])
    c = torch.tensor([[2, 0, 1], [2, -1, -1]])
    assert tg.candidate_recall(c, e) == pytest.approx(3 / 5)
