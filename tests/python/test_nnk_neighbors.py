"""nnk_neighbors and nnk_interpolate against brute force: exact candidates from a full
numpy distance matrix, weights from scipy.optimize.nnls on the kernel system, KKT, the
duplicate (self-query) rule, the device-generic kernels against the CPU kernels, and the
errors for bad input."""
import numpy as np
import pytest
import scipy.optimize
import torch

import torch_geometry
from torch_geometry import nnk_interpolate, nnk_neighbors

ops = torch.ops.torch_geometry


def data(q, n, d, seed, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    ref = torch.randn(n, d, generator=gen, dtype=torch.float64)
    ref = ref * torch.rand(n, 1, generator=gen, dtype=torch.float64).add(0.5)  # norms vary
    qry = torch.randn(q, d, generator=gen, dtype=torch.float64)
    qry = qry * torch.rand(q, 1, generator=gen, dtype=torch.float64).add(0.5)
    return qry.to(dtype), ref.to(dtype)


def kernel_matrix(a, b, kernel, sigma=None):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if kernel == "cosine":
        an = a / np.linalg.norm(a, axis=1, keepdims=True)
        bn = b / np.linalg.norm(b, axis=1, keepdims=True)
        return 0.5 * (1.0 + np.clip(an @ bn.T, -1, 1))
    d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    return np.exp(-d2 / (2 * sigma ** 2))


def brute_candidates(qry, ref, k, kernel, metric):
    """Exact k best reference rows per query, ties to the smaller index."""
    qry, ref = np.asarray(qry, np.float64), np.asarray(ref, np.float64)
    if kernel == "cosine" and metric == "kernel":
        score = kernel_matrix(qry, ref, "cosine")
    else:
        score = -((qry[:, None, :] - ref[None, :, :]) ** 2).sum(-1)
    # lexsort: last key is primary; -score descending, index ascending.
    idx = np.arange(ref.shape[0])
    return np.stack([np.lexsort((idx, -s))[:k] for s in score])


def brute_nnk(xq, xs, kernel, sigma=None):
    """argmin_{theta >= 0} 1/2 theta^T K theta - b^T theta by NNLS on the Cholesky factor:
    with K = L L^T, ||L^T theta - L^{-1} b||^2 = theta^T K theta - 2 b^T theta + const."""
    K = kernel_matrix(xs, xs, kernel, sigma)
    b = kernel_matrix(xq[None], xs, kernel, sigma)[0]
    L = np.linalg.cholesky(K)
    theta, _ = scipy.optimize.nnls(L.T, np.linalg.solve(L, b))
    err = 1 - 2 * theta @ b + theta @ K @ theta
    return theta, err, K, b


@pytest.mark.parametrize("kernel", ["cosine", "gaussian"])
@pytest.mark.parametrize("metric", ["kernel", "euclidean"])
def test_against_brute_force(kernel, metric):
    qry, ref = data(30, 120, 16, seed=1)  # D > k: K_SS positive definite, theta unique
    k = 10
    sigma = 1.3 if kernel == "gaussian" else None
    nbr, w, err = nnk_neighbors(qry, ref, k, kernel=kernel, sigma=sigma,
                                candidate_metric=metric)
    assert nbr.shape == (30, k) and nbr.dtype == torch.long
    assert w.shape == (30, k) and w.dtype == torch.float64 and err.shape == (30,)
    cand = brute_candidates(qry, ref, k, kernel, metric)
    for q in range(30):
        assert sorted(nbr[q].tolist()) == sorted(cand[q].tolist())
        theta, e, K, b = brute_nnk(qry[q].numpy(), ref[cand[q]].numpy(), kernel, sigma)
        got = dict(zip(nbr[q].tolist(), w[q].tolist()))
        np.testing.assert_allclose([got[j] for j in cand[q]], theta, atol=1e-8)
        assert abs(err[q].item() - e) < 1e-8
        # KKT on the returned weights themselves.
        t = np.array([got[j] for j in cand[q]])
        g = K @ t - b
        assert (t >= 0).all()
        assert np.abs(g[t > 0]).max() < 1e-9
        assert g[t == 0].min() > -1e-9 if (t == 0).any() else True
        # Sorted by weight descending.
        assert (np.diff(w[q].numpy()) <= 0).all()


def test_euclidean_and_kernel_candidates_differ_when_norms_vary():
    # A point close in direction but far in norm: first under the cosine ranking, beyond the
    # Euclidean candidates.
    ref = torch.tensor([[10.0, 0.1], [1.0, 1.0], [1.2, 0.8], [0.9, 1.3], [1.5, 2.0]],
                       dtype=torch.float64)
    qry = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    by_kernel = nnk_neighbors(qry, ref, 2)[0]
    by_l2 = nnk_neighbors(qry, ref, 2, candidate_metric="euclidean")[0]
    assert sorted(by_kernel[0].tolist()) == sorted(brute_candidates(qry, ref, 2, "cosine", "kernel")[0])
    assert sorted(by_l2[0].tolist()) == sorted(brute_candidates(qry, ref, 2, "cosine", "euclidean")[0])
    assert 0 in by_kernel[0].tolist() and 0 not in by_l2[0].tolist()


@pytest.mark.parametrize("mode", ["mean", "local"])
def test_gaussian_sigma_modes(mode):
    qry, ref = data(12, 60, 5, seed=2)
    k = 6
    nbr, w, err = nnk_neighbors(qry, ref, k, kernel="gaussian", sigma=mode)
    cand = brute_candidates(qry, ref, k, "gaussian", "kernel")
    far = np.array([np.sqrt(((ref[c].numpy() - qry[i].numpy()) ** 2).sum(1).max())
                    for i, c in enumerate(cand)])
    sig = np.full(12, far.mean() / 3) if mode == "mean" else far / 3
    for q in range(12):
        theta, e, _, _ = brute_nnk(qry[q].numpy(), ref[cand[q]].numpy(), "gaussian", sig[q])
        got = dict(zip(nbr[q].tolist(), w[q].tolist()))
        np.testing.assert_allclose([got[j] for j in cand[q]], theta, atol=1e-8)
        assert abs(err[q].item() - e) < 1e-8


@pytest.mark.parametrize("kernel", ["cosine", "gaussian"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_query_equal_to_a_reference_point_gets_it_with_weight_one(kernel, dtype):
    _, ref = data(1, 50, 6, seed=3, dtype=dtype)
    qry = ref[[7, 31, 7]].clone()
    nbr, w, err = nnk_neighbors(qry, ref, 5, kernel=kernel, sigma=0.8 if kernel == "gaussian" else None)
    assert nbr[:, 0].tolist() == [7, 31, 7]
    assert w[:, 0].tolist() == [1.0, 1.0, 1.0]
    assert (w[:, 1:] == 0).all()
    assert err.tolist() == [0.0, 0.0, 0.0]


def test_duplicated_reference_points_all_get_weight_one_and_zero_rows_take_no_part():
    _, ref = data(1, 40, 4, seed=4)
    ref[10] = ref[3]
    ref[20] = 0.0  # no direction under the cosine kernel
    qry = torch.stack([ref[3].clone(), torch.zeros(4, dtype=torch.float64), -ref[20] + 1e-3])
    nbr, w, err = nnk_neighbors(qry, ref, 6)
    assert sorted(nbr[0, :2].tolist()) == [3, 10] and w[0, :2].tolist() == [1.0, 1.0]
    assert (w[0, 2:] == 0).all() and err[0] == 0
    # An all-zero query has no candidates: padding, weights 0, error 1.
    assert nbr[1].tolist() == [-1] * 6 and (w[1] == 0).all() and err[1] == 1
    # The all-zero reference row is nobody's candidate.
    assert 20 not in nbr.tolist()[2]


def test_batches_and_given_candidates_do_not_change_results():
    qry, ref = data(40, 300, 12, seed=5)
    nbr, w, err = nnk_neighbors(qry, ref, 15)
    for q in (0, 17, 39):
        n1, w1, e1 = nnk_neighbors(qry[q:q + 1], ref, 15)
        assert torch.equal(n1[0], nbr[q]) and torch.equal(w1[0], w[q]) and torch.equal(e1[0], err[q])
    # The exact candidates, given in another order with repeats and padding, give the same
    # polytope.
    cand = torch.as_tensor(brute_candidates(qry, ref, 15, "cosine", "kernel"))
    shuffled = cand.flip(1).clone()
    shuffled[:, -1] = -1
    shuffled[:, -2] = shuffled[:, 0]
    n2, w2, _ = nnk_neighbors(qry, ref, 15, candidates=cand.flip(1))
    assert torch.equal(n2, nbr) and torch.allclose(w2, w, atol=1e-14)
    n3, w3, _ = nnk_neighbors(qry, ref, 15, candidates=shuffled)
    assert set(n3[0].tolist()) - {-1} <= set(cand[0].tolist())
    assert (n3 == -1).sum(1).min() >= 2


def test_search_runs_over_several_tiles_and_keeps_ties_by_index():
    # More than one reference tile (2048) and query tile (1024); exact ties from repeated
    # directions must go to the smaller index.
    gen = torch.Generator().manual_seed(6)
    base = torch.randn(900, 10, generator=gen, dtype=torch.float64)
    ref = torch.cat([base, 2 * base, 4 * base])  # the same directions, three times: exact ties
    qry = torch.randn(1100, 10, generator=gen, dtype=torch.float64)
    nbr, w, _ = nnk_neighbors(qry, ref[: 2500], 4)
    cand = brute_candidates(qry, ref[: 2500], 4, "cosine", "kernel")
    assert all(sorted(nbr[i].tolist()) == sorted(cand[i].tolist()) for i in range(1100))


def test_interpolate_against_direct_computation():
    qry, ref = data(25, 100, 6, seed=7)
    y = torch.randint(0, 4, (100,))
    onehot = torch.nn.functional.one_hot(y, 4).double()
    nbr, w, _ = nnk_neighbors(qry, ref, 8)
    out = nnk_interpolate(nbr, w, onehot)
    want = np.zeros((25, 4))
    for q in range(25):
        for j, t in zip(nbr[q].tolist(), w[q].tolist()):
            if j >= 0:
                want[q] += t * onehot[j].numpy()
        want[q] /= w[q].sum().item()
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(out.sum(1).numpy(), 1.0, rtol=1e-12)
    # 1-D values give a 1-D result; real vectors work the same way.
    vals = torch.randn(100, dtype=torch.float64)
    np.testing.assert_allclose(nnk_interpolate(nbr, w, vals).numpy(),
                               (w * vals[nbr]).sum(1).numpy() / w.sum(1).numpy(), rtol=1e-12)


def test_interpolate_zero_weight_rows_give_zeros_and_padding_is_ignored():
    nbr = torch.tensor([[0, 2, -1], [-1, -1, -1], [1, 0, -1]])
    w = torch.tensor([[0.5, 1.5, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0], [3.0, 5.0]], dtype=torch.float64)
    out = nnk_interpolate(nbr, w, v)
    assert out.tolist() == [[(0.5 * 1 + 1.5 * 3) / 2, (1.5 * 5) / 2], [0.0, 0.0], [0.0, 0.0]]
    assert torch.isfinite(out).all()
    # float32 weights with float64 values promote to float64.
    assert nnk_interpolate(nbr, w.float(), v).dtype == torch.float64
    assert nnk_interpolate(nbr, w.float(), v.float()).dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kernel,metric", [("cosine", "kernel"), ("cosine", "euclidean"),
                                           ("gaussian", "kernel")])
def test_generic_kernel_equals_cpu_kernel(dtype, kernel, metric, monkeypatch):
    # A small budget: several row blocks and column tiles in the generic search.
    monkeypatch.setenv("TORCH_GEOMETRY_GENERIC_BUDGET", "200000")
    qry, ref = data(70, 400, 9, seed=8, dtype=dtype)
    qry[3] = ref[11]
    ref[5] = 0.0
    qry = torch.cat([qry, qry], 1)[:, ::2]  # any strides
    args = (qry, ref, 12, kernel, None, "mean", metric, None, 1e-10)
    n1, w1, e1 = ops.nnk_neighbors(*args)
    n2, w2, e2 = ops._generic_nnk_neighbors(*args)
    tol = 5e-5 if dtype == torch.float32 else 1e-10
    assert torch.equal(n1[w1 > tol], n2[w1 > tol])
    assert torch.equal(torch.sort(n1, 1)[0], torch.sort(n2, 1)[0])
    assert (w1 - w2).abs().max() < tol and (e1 - e2).abs().max() < tol
    v = torch.randn(400, 3, dtype=torch.float64)
    assert torch.allclose(ops.nnk_interpolate(n1, w1, v), ops._generic_nnk_interpolate(n1, w1, v),
                          rtol=1e-12, atol=1e-14)


def test_empty_queries():
    _, ref = data(1, 20, 3, seed=9)
    nbr, w, err = nnk_neighbors(torch.empty(0, 3, dtype=torch.float64), ref, 4)
    assert nbr.shape == (0, 4) and w.shape == (0, 4) and err.shape == (0,)
    assert nnk_interpolate(nbr, w, torch.ones(20, 2)).shape == (0, 2)


BAD = [
    (lambda q, r: (q[:, :3], r, 4, {}), "same dimension D"),
    (lambda q, r: (q, r, 20, {}), "smaller than the number of reference points N = 20, got k=20"),
    (lambda q, r: (q, r, 0, {}), "k should be >= 1, got 0"),
    (lambda q, r: (q.float(), r, 4, {}), "same dtype"),
    (lambda q, r: (q.long(), r.long(), 4, {}), "float32 or float64"),
    (lambda q, r: (q[0], r, 4, {}), "2-D tensor [Q, D]"),
    (lambda q, r: (q, r, 4, {"kernel": "laplace"}), "kernel"),
    (lambda q, r: (q, r, 4, {"candidate_metric": "l1"}), "candidate_metric"),
    (lambda q, r: (q, r, 4, {"candidates": torch.zeros(5, 3, dtype=torch.long)}), "shape [Q, k]"),
    (lambda q, r: (q, r, 4, {"candidates": torch.zeros(5, 4)}), "int64"),
    (lambda q, r: (q, r, 4, {"candidates": torch.full((5, 4), 20)}), "[0, N) = [0, 20)"),
    (lambda q, r: (q, r, 4, {"candidates": torch.full((5, 4), -2)}), "-1 for padding"),
    (lambda q, r: (q * float("nan"), r, 4, {}), "finite"),
    (lambda q, r: (q, r, 4, {"threshold": -1.0}), "threshold"),
]


@pytest.mark.parametrize("case", range(len(BAD)))
@pytest.mark.parametrize("path", ["cpu", "generic"])
def test_bad_inputs_get_clear_errors(case, path):
    qry, ref = data(5, 20, 6, seed=10)
    make, message = BAD[case]
    q, r, k, kw = make(qry, ref)
    if path == "cpu":
        with pytest.raises((RuntimeError, ValueError), match=None) as info:
            nnk_neighbors(q, r, k, **kw)
    else:
        args = dict(kernel="cosine", sigma=None, sigma_mode="mean", candidate_metric="kernel",
                    candidates=None, threshold=1e-10)
        args.update(kw)
        with pytest.raises(RuntimeError) as info:
            ops._generic_nnk_neighbors(q, r, k, args["kernel"], args["sigma"], args["sigma_mode"],
                                       args["candidate_metric"], args["candidates"],
                                       args["threshold"])
    assert message in str(info.value)
    assert "nnk_neighbors" in str(info.value)


INTERP_BAD = [
    (lambda n, w, v: (n.int(), w, v), "int64"),
    (lambda n, w, v: (n, w[:, :1], v), "shape of neighbors"),
    (lambda n, w, v: (n + 10, w, v), "[0, N) = [0, 3)"),
    (lambda n, w, v: (n, -w, v), ">= 0"),
    (lambda n, w, v: (n, w * float("inf"), v), "finite"),
    (lambda n, w, v: (n, w, v[:, :, None]), "2-D tensor [N, C]"),
    (lambda n, w, v: (torch.tensor([[0, -1]]), torch.tensor([[1.0, 2.0]]), v), "0 on padding"),
]


@pytest.mark.parametrize("case", range(len(INTERP_BAD)))
@pytest.mark.parametrize("op", ["nnk_interpolate", "_generic_nnk_interpolate"])
def test_interpolate_bad_inputs(case, op):
    nbr = torch.tensor([[0, 1], [2, 1]])
    w = torch.tensor([[1.0, 0.5], [0.2, 0.3]])
    v = torch.ones(3, 2)
    make, message = INTERP_BAD[case]
    with pytest.raises(RuntimeError) as info:
        getattr(ops, op)(*make(nbr, w, v))
    assert message in str(info.value) and "nnk_interpolate" in str(info.value)



def test_zero_reference_rows_never_take_a_candidate_slot():
    # Query along e1; 5 reference points on its side, 10 behind it (negative cosine), one
    # all-zero row (no direction; its score would be 0, above every point behind).
    gen = torch.Generator().manual_seed(12)
    front = torch.rand(5, 3, generator=gen, dtype=torch.float64) + torch.tensor([2.0, 0, 0], dtype=torch.float64)
    back = torch.rand(10, 3, generator=gen, dtype=torch.float64) - torch.tensor([3.0, 0, 0], dtype=torch.float64)
    ref = torch.cat([front, torch.zeros(1, 3, dtype=torch.float64), back])
    qry = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    best_behind = 6 + int(brute_candidates(qry, back, 1, "cosine", "kernel")[0][0])
    for op in (ops.nnk_neighbors, ops._generic_nnk_neighbors):
        nbr = op(qry, ref, 6)[0]
        assert sorted(nbr[0].tolist()) == [0, 1, 2, 3, 4, best_behind]


def test_queries_without_candidates_only():
    # Every query an all-zero row: nothing to solve, whatever k.
    _, ref = data(1, 10, 3, seed=13)
    for op in (ops.nnk_neighbors, ops._generic_nnk_neighbors):
        nbr, w, err = op(torch.zeros(2, 3, dtype=torch.float64), ref, 9)
        assert (nbr == -1).all() and (w == 0).all() and (err == 1).all()


@pytest.mark.skipif(not hasattr(torch, "compile"), reason="torch 1.13 has no torch.compile or fake tensors")
def test_compiled_model_calls_the_operators_in_one_graph():
    # The fake implementations give shapes and dtypes without data: fullgraph tracing works
    # and the compiled function returns what the eager one does.
    def f(q, r, v):
        nbr, w, _ = ops.nnk_neighbors(q, r, 4)
        return ops.nnk_interpolate(nbr, w, v) * 2

    q, r = data(7, 30, 5, seed=14, dtype=torch.float32)
    v = torch.randn(30, 3, dtype=torch.float64)
    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    out = compiled(q, r, v)
    assert out.dtype == torch.float64 and torch.equal(out, f(q, r, v))
