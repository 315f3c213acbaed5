"""stability() and linear_cka against direct computations: Jaccard and weighted overlaps of
NNK supports computed from the graphs in Python, CKA against its HSIC form on N x N Gram
matrices, invariances, per-class means and bad input."""
import numpy as np
import pytest
import torch

import torch_geometry
from torch_geometry import linear_cka, stability


def cka_hsic(x, y):
    """Linear CKA as HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)), K = X X^T, L = Y Y^T."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    n = x.shape[0]
    h = np.eye(n) - 1.0 / n
    k, l = h @ x @ x.T @ h, h @ y @ y.T @ h
    return (k * l).sum() / np.sqrt((k * k).sum() * (l * l).sum())


def supports(g):
    return [{j: w for j, w in zip(n, ws) if w > 0} for n, ws in zip(g.neighbors.tolist(), g.weights.tolist())]


def test_overlaps_match_direct_computation_for_differing_dimensions():
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(150, 6, generator=gen, dtype=torch.float64)
    feats = [base @ torch.randn(6, d, generator=gen, dtype=torch.float64)
             + 0.3 * torch.randn(150, d, generator=gen, dtype=torch.float64) for d in (6, 12, 20)]
    out = stability(feats, k=8)
    assert out["pairs"] == [(0, 1), (0, 2), (1, 2)]
    sup = [supports(torch_geometry.nnk_graph(f, 8)) for f in feats]
    for p, (a, b) in enumerate(out["pairs"]):
        for i in range(150):
            sa, sb = sup[a][i], sup[b][i]
            jac = len(sa.keys() & sb.keys()) / len(sa.keys() | sb.keys())
            ta, tb = sum(sa.values()), sum(sb.values())
            wov = sum(min(sa[j] / ta, sb[j] / tb) for j in sa.keys() & sb.keys())
            assert abs(out["jaccard"][p, i].item() - jac) < 1e-12
            assert abs(out["weighted"][p, i].item() - wov) < 1e-12
    np.testing.assert_allclose(out["node_jaccard"].numpy(), out["jaccard"].mean(0).numpy())
    assert abs(out["mean_weighted"] - out["weighted"].mean().item()) < 1e-15
    for p, (a, b) in enumerate(out["pairs"]):
        assert abs(out["cka"][p].item() - cka_hsic(feats[a], feats[b])) < 1e-12
    # Representations that share only noise are less stable than near-copies.
    assert 0 < out["mean_jaccard"] < 1


def test_identical_and_rotated_representations_are_fully_stable():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(120, 10, generator=gen, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(10, 10, generator=gen, dtype=torch.float64))
    out = stability([x, x.clone(), 3.0 * x @ q], k=10)
    assert (out["jaccard"][0] == 1).all() and (out["weighted"][0] - 1).abs().max() < 1e-14
    # The cosine kernel and CKA are invariant to rotations and scaling.
    assert (out["jaccard"] == 1).all()
    assert (out["weighted"] - 1).abs().max() < 1e-8
    assert (out["cka"] - 1).abs().max() < 1e-12


def test_unrelated_representations_have_low_cka_and_overlap():
    gen = torch.Generator().manual_seed(2)
    a = torch.randn(300, 8, generator=gen, dtype=torch.float64)
    b = torch.randn(300, 8, generator=gen, dtype=torch.float64)
    out = stability([a, b], k=10)
    assert out["mean_jaccard"] < 0.1 and out["mean_cka"] < 0.1


def test_per_class_means():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(90, 5, generator=gen, dtype=torch.float64)
    y = np.repeat(["a", "b", "c"], 30)
    out = stability([x, x + 0.2 * torch.randn(90, 5, generator=gen, dtype=torch.float64)],
                    probe_labels=y, k=6)
    for c, sl in zip("abc", (slice(0, 30), slice(30, 60), slice(60, 90))):
        assert out["per_class"][c]["jaccard"] == pytest.approx(out["node_jaccard"][sl].mean().item(), abs=1e-15)
        assert out["per_class"][c]["weighted"] == pytest.approx(out["node_weighted"][sl].mean().item(), abs=1e-15)


def test_linear_cka_known_values():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(50, 4, generator=gen, dtype=torch.float64)
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-14)
    # Only isotropic scaling is free: stretching one axis lowers CKA, as the HSIC form says.
    s = x * torch.tensor([1.0, 1.0, 1.0, 10.0], dtype=torch.float64)
    assert linear_cka(x, s) == pytest.approx(cka_hsic(x, s), abs=1e-12)
    assert linear_cka(x, s) < 0.9


def test_bad_inputs():
    x = torch.randn(20, 3)
    with pytest.raises(ValueError, match=">= 2 representations"):
        stability([x])
    with pytest.raises(ValueError, match="same N = 20"):
        stability([x, torch.randn(19, 3)])
    with pytest.raises(ValueError, match="probe_labels"):
        stability([x, x], probe_labels=np.zeros(5))
    with pytest.raises(ValueError, match="same N points"):
        linear_cka(x, torch.randn(19, 2))
    with pytest.raises(ValueError, match="constant"):
        linear_cka(x, torch.ones(20, 2))
