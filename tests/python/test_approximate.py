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


def test_probe_lists_follow_the_members():
    from torch_geometry.approximate import _probe_lists

    # Each row: a point's 3 nearest centroids, nearest first (its cluster = the first).
    first = torch.tensor([[0, 2, 3], [0, 2, 1], [0, 3, 2], [0, 3, 1],
                          [1, 3, 0], [1, 0, 2],
                          [2, 0, 1],
                          [3, 3, 3]])
    assign = first[:, 0]
    p = _probe_lists(first, assign, nlist=4, nprobe=3)
    # cluster 0: itself, then 2 (twice) and 3 (twice): the tie goes to the smaller index
    assert p[0].tolist() == [0, 2, 3]
    # cluster 1: itself, then 0 (twice), then 3 and 2 once each: 2 by index
    assert p[1].tolist() == [1, 0, 2]
    assert p[2].tolist() == [2, 0, 1]
    # cluster 3 has no neighbours among its members' lists: the smallest other indices fill in
    assert p[3].tolist() == [3, 0, 1]


@pytest.mark.parametrize("engine,kernel", [("faiss", "cosine"), ("faiss-hnsw", "cosine"),
                                           ("faiss", "gaussian")])
def test_faiss_engines_against_the_exact_search(fmnist, engine, kernel):
    x = fmnist[:3000].clone()
    x[7] = 0
    sigma = None if kernel == "cosine" else 1.0
    exact, _ = tg.knn_graph(x, 20, kernel=kernel, sigma=sigma)
    cand = tg.approximate_candidates(x, 20, kernel=kernel, engine=engine, nprobe=16)
    assert cand.shape == (3000, 20)
    _rows_clean(cand)
    assert tg.candidate_recall(cand, exact) >= 0.95
    if kernel == "cosine":
        assert bool((cand[7] == -1).all()) and not bool((cand == 7).any())
    # nearest first: the exact scores of the rows decrease along each row
    xs = torch.nn.functional.normalize(x[:50].double(), dim=1) if kernel == "cosine" else None
    if xs is not None:
        xa = torch.nn.functional.normalize(x.double(), dim=1)
        s = (xa[cand[8:50]] * xa[8:50].unsqueeze(1)).sum(2)
        assert bool((s[:, :-1] >= s[:, 1:] - 1e-5).all())


def test_faiss_missing_says_what_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(ImportError, match="pip install faiss-cpu"):
        tg.approximate_candidates(torch.randn(100, 4), 5, engine="faiss")
    # the torch engine does not need it
    assert tg.approximate_candidates(torch.randn(100, 4), 5).shape == (100, 5)


def test_progress_bar_and_engine_errors(fmnist, capsys):
    x = fmnist[:1500]
    quiet = tg.approximate_candidates(x, 10)
    shown = tg.approximate_candidates(x, 10, progress=True)
    assert torch.equal(quiet, shown)
    assert "approximate_candidates" in capsys.readouterr().err
    with pytest.raises(ValueError, match="engine should be one of"):
        tg.approximate_candidates(x, 10, engine="annoy")
    with pytest.raises(ValueError, match="hnsw_m"):
        tg.approximate_candidates(x, 10, engine="faiss-hnsw", hnsw_m=1)


@pytest.mark.parametrize("engine", ["ivf", "faiss", "faiss-hnsw"])
def test_nnk_graph_takes_an_engine_name_as_candidates(fmnist, engine, monkeypatch):
    if engine != "ivf":
        pytest.importorskip("faiss", reason="faiss is an optional dependency (torch-2 leg)")
    import torch_geometry.approximate as approx

    x = fmnist[:1500]
    seen, real = [], approx.approximate_candidates

    def recording(*args, **kwargs):        # FAISS HNSW is not deterministic: keep its answer
        seen.append((kwargs.get("engine"), kwargs.get("kernel")))
        seen.append(real(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(approx, "approximate_candidates", recording)
    by_name = tg.nnk_graph(x, 10, candidates=engine)
    assert seen[0] == (engine, "cosine")
    given = tg.nnk_graph(x, 10, candidates=seen[1])
    assert torch.equal(by_name.neighbors, given.neighbors)
    assert torch.equal(by_name.weights, given.weights)
    exact, _ = tg.knn_graph(x, 10)
    assert tg.candidate_recall(seen[1], exact) >= 0.9


def test_nnk_graph_refuses_an_unknown_engine_name(fmnist):
    with pytest.raises(ValueError, match="candidates should be a tensor or one of"):
        tg.nnk_graph(fmnist[:100], 10, candidates="hnsw")
