"""Tests of the reference implementations in benchmarks/peers.py (the other tests' referees).

The kNN peers must agree with each other, and the naive NNK solver must be KKT-optimal, since
the torch_geometry tests judge the compiled operators against it.
"""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import peers  # noqa: E402

import faiss  # noqa: E402,F401  (the peers are judged against FAISS: a missing one fails)


def _kkt_violation(x: torch.Tensor, nbrs: torch.Tensor, w: torch.Tensor) -> float:
    """Largest KKT violation of the cosine-kernel NNK QPs, float64: |g| on the support,
    max(-g, 0) off it, with g = K_SS w - k_S."""
    xn = torch.nn.functional.normalize(x.double(), dim=1)
    worst = 0.0
    for i in range(x.shape[0]):
        valid = nbrs[i] >= 0
        s, t = nbrs[i][valid], w[i][valid]
        g = (1 + xn[s] @ xn[s].T) / 2 @ t - (1 + xn[s] @ xn[i]) / 2
        on = t > 0
        worst = max(worst, g[on].abs().max().item() if on.any() else 0.0,
                    (-g[~on]).clamp(min=0).max().item() if (~on).any() else 0.0)
    return worst


@pytest.fixture(scope="module")
def clustered() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(8, 32, generator=g)
    return centers.repeat_interleave(50, 0) + 0.3 * torch.randn(400, 32, generator=g)


def test_knn_peers_agree(clustered):
    k = 10
    a, sa = peers.faiss_knn(clustered, k)
    b, sb = peers.torch_knn(clustered, k, block=64)
    c, sc = peers.sklearn_knn(clustered, k)
    assert a.dtype == torch.int64 and a.shape == (400, k)
    assert (a != torch.arange(400)[:, None]).all()
    assert peers.recall(b, a) == 1.0 and peers.recall(c, a) == 1.0
    assert torch.allclose(sa, sb, atol=1e-5) and torch.allclose(sa, sc, atol=1e-5)
    assert (sa[:, :-1] >= sa[:, 1:] - 1e-6).all() and sa.min() >= 0 and sa.max() <= 1


def test_ivf_recall_is_reported(clustered):
    exact, _ = peers.faiss_knn(clustered, 10)
    approx, _ = peers.faiss_ivf_knn(clustered, 10, nlist=8, nprobe=8)  # probes every list
    assert peers.recall(approx, exact) == 1.0
    assert 0.0 <= peers.recall(approx[:, :5], exact) <= 0.5


def test_cluster_knn(clustered):
    exact, se = peers.faiss_knn(clustered, 10)
    full, sf = peers.cluster_knn(clustered, 10, nlist=4, nprobe=4)  # searches everything
    assert torch.equal(full, exact) or peers.recall(full, exact) == 1.0
    assert torch.allclose(sf, se, atol=1e-5)
    approx, _ = peers.cluster_knn(clustered, 10, nlist=8, nprobe=2)
    assert approx.shape == (400, 10) and (approx != torch.arange(400)[:, None]).all()
    assert peers.recall(approx, exact) > 0.9  # 8 well-separated blobs


def test_naive_nnk_is_kkt_optimal(clustered):
    nbrs, _ = peers.faiss_knn(clustered, 15)
    w, e = peers.naive_nnk(clustered, nbrs)
    assert w.shape == nbrs.shape and e.shape == (400,) and (w >= 0).all()
    assert _kkt_violation(clustered, nbrs, w) < 1e-9
    assert torch.allclose(peers.nnk_error(clustered, nbrs, w), e, atol=1e-12)
    assert ((e >= -1e-12) & (e <= 1)).all()


def test_naive_nnk_singular_and_padded():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 3, generator=g)  # D = 3 < k = 8: every K_SS is singular
    x[5] = x[2]
    nbrs, _ = peers.faiss_knn(x, 8)
    nbrs[0, 6:] = -1
    w, e = peers.naive_nnk(x, nbrs)
    assert torch.isfinite(w).all() and torch.isfinite(e).all()
    assert (w[0, 6:] == 0).all()
    assert _kkt_violation(x, nbrs, w) < 1e-6
    assert e[2].abs() < 1e-9 and e[5].abs() < 1e-9  # duplicates reconstruct each other exactly


def test_naive_nnk_bad_input(clustered):
    nbrs, _ = peers.faiss_knn(clustered, 5)
    with pytest.raises(ValueError, match="kernel"):
        peers.naive_nnk(clustered, nbrs, kernel="laplace")
    with pytest.raises(ValueError, match="neighbors"):
        peers.naive_nnk(clustered, nbrs[:10])
    with pytest.raises(ValueError, match="sigma"):
        peers.naive_nnk(clustered, nbrs, kernel="gaussian", sigma=-1.0)
