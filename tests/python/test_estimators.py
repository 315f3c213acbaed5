"""NNKClassifier, NNKRegressor and few_shot_accuracy: predictions against brute force
(exact candidates + scipy NNLS, then the interpolation by hand), known answers on separable
data, the duplicate rule, scikit-learn's estimator checks (with the list of checks that do
not apply and why), and bad input."""
import warnings

import numpy as np
import pytest
import torch

import torch_geometry
from torch_geometry.estimators import NNKClassifier, NNKRegressor, few_shot_accuracy

from test_nnk_neighbors import brute_candidates, brute_nnk


def blobs(n_per, centers, d, seed, spread=0.3):
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centers, d)) * 3
    x = np.concatenate([c[i] + spread * rng.normal(size=(n_per, d)) for i in range(centers)])
    y = np.repeat(np.arange(centers), n_per)
    return x, y


def brute_interpolation(xq, xr, values, k, kernel="cosine", sigma=None):
    cand = brute_candidates(xq, xr, k, kernel, "kernel")
    out = []
    for i, c in enumerate(cand):
        theta, _, _, _ = brute_nnk(xq[i], xr[c], kernel, sigma)
        theta[theta <= 1e-10] = 0.0  # the estimators' threshold
        out.append(theta @ values[c] / theta.sum())
    return np.array(out)


@pytest.mark.parametrize("kernel,sigma", [("cosine", None), ("gaussian", 8.0)])
def test_classifier_probabilities_against_brute_force(kernel, sigma):
    x, y = blobs(40, 3, 16, seed=0, spread=3.0)  # overlapping classes: mixed polytopes
    rng = np.random.default_rng(1)
    xq = x[rng.choice(120, 30)] + rng.normal(size=(30, 16))  # near the data (D > k: K_SS PD)
    labels = np.array(["cat", "dog", "emu"])[y]
    clf = NNKClassifier(k=12, kernel=kernel, sigma=sigma).fit(x, labels)
    assert list(clf.classes_) == ["cat", "dog", "emu"]
    proba = clf.predict_proba(xq)
    want = brute_interpolation(xq, x, np.eye(3)[y], 12, kernel, sigma)
    np.testing.assert_allclose(proba, want, atol=1e-8)
    assert 0.05 < (proba.max(1) < 0.999).mean()  # some queries really mix classes
    np.testing.assert_array_equal(clf.predict(xq), clf.classes_[want.argmax(1)])


def test_classifier_separable_data_and_training_points():
    x, y = blobs(50, 4, 8, seed=2)
    xt, yt = blobs(20, 4, 8, seed=2)  # the same centres, new draws
    clf = NNKClassifier(k=10).fit(torch.from_numpy(x), torch.from_numpy(y))
    assert clf.score(xt, yt) == 1.0
    # A training point is its own duplicate: weight 1 on itself, its own label for sure.
    p = clf.predict_proba(x[::7])
    np.testing.assert_array_equal(p, np.eye(4)[y[::7]])
    # Tensors (float32) and arrays give the same labels.
    np.testing.assert_array_equal(clf.predict(torch.from_numpy(xt).float()), clf.predict(xt))


def test_classifier_zero_query_gets_class_frequencies():
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.1]])
    y = np.array([0, 1, 1, 1])
    clf = NNKClassifier(k=2).fit(x, y)
    np.testing.assert_array_equal(clf.predict_proba(np.zeros((1, 2))), [[0.25, 0.75]])


def test_classifier_small_training_sets_use_all_points():
    clf = NNKClassifier(k=25).fit(np.array([[1.0, 0.1], [0.1, 1.0]]), [3, 7])
    assert clf.k_ == 1
    np.testing.assert_array_equal(clf.predict(np.array([[2.0, 0.3], [0.2, 3.0]])), [3, 7])


def test_gaussian_sigma_fixed_at_fit_from_the_training_set():
    x, y = blobs(30, 2, 4, seed=3, spread=1.0)
    clf = NNKClassifier(k=5, kernel="gaussian").fit(x, y)
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    assert clf.sigma_ == pytest.approx(np.sort(d, 1)[:, 4].mean() / 3, rel=1e-12)
    # A fixed sigma: predictions of one query do not depend on its batch.
    xq = x[::7][:9] + np.random.default_rng(4).normal(size=(9, 4))
    whole = clf.predict_proba(xq)
    alone = np.concatenate([clf.predict_proba(xq[i:i + 1]) for i in range(9)])
    np.testing.assert_array_equal(whole, alone)
    np.testing.assert_allclose(whole, brute_interpolation(xq, x, np.eye(2)[y], 5, "gaussian", clf.sigma_),
                               atol=1e-8)


def test_regressor_against_brute_force_and_2d_targets():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(80, 12))  # D > k: K_SS positive definite, theta unique
    yy = np.stack([np.sin(x[:, 0]) + x[:, 1], x[:, 2] ** 2], 1)
    xq = rng.normal(size=(20, 12))
    reg = NNKRegressor(k=10).fit(x, yy[:, 0])
    pred = reg.predict(xq)
    assert pred.shape == (20,)
    np.testing.assert_allclose(pred, brute_interpolation(xq, x, yy[:, 0], 10), atol=1e-8)
    reg2 = NNKRegressor(k=10).fit(x, yy)
    np.testing.assert_allclose(reg2.predict(xq), brute_interpolation(xq, x, yy, 10), atol=1e-8)
    # R^2 as scikit-learn defines it.
    yt = np.sin(xq[:, 0]) + xq[:, 1]
    r2 = 1 - ((yt - pred) ** 2).sum() / ((yt - yt.mean()) ** 2).sum()
    assert reg.score(xq, yt) == pytest.approx(r2, abs=1e-12)


def test_few_shot_accuracy_known_answers():
    x, y = blobs(30, 5, 6, seed=6)
    xt, yt = blobs(10, 5, 6, seed=6)
    res = few_shot_accuracy(x, y, xt, yt, shots=(1, 5), episodes=7)
    for s in (1, 5):
        assert res[s]["mean"] == 1.0 and len(res[s]["accuracies"]) == 7
    # Labels unrelated to the features: chance level (1 / ways) within a wide margin.
    rng = np.random.default_rng(7)
    res = few_shot_accuracy(rng.normal(size=(500, 6)), rng.integers(0, 5, 500),
                            rng.normal(size=(500, 6)), rng.integers(0, 5, 500),
                            shots=(5,), episodes=40, ways=5)
    assert abs(res[5]["mean"] - 0.2) < 0.05
    assert res[5]["ci95"] > 0
    # Seeded: the same episodes twice.
    a = few_shot_accuracy(x, y, xt, yt, shots=(1,), episodes=5, ways=3, queries_per_class=4, seed=3)
    b = few_shot_accuracy(x, y, xt, yt, shots=(1,), episodes=5, ways=3, queries_per_class=4, seed=3)
    np.testing.assert_array_equal(a[1]["accuracies"], b[1]["accuracies"])


def test_few_shot_one_episode_matches_a_direct_run():
    x, y = blobs(10, 3, 4, seed=8, spread=3.0)
    xt, yt = blobs(10, 3, 4, seed=9, spread=3.0)
    res = few_shot_accuracy(x, y, xt, yt, shots=(2,), episodes=1, seed=11)
    # Replay the sampler: classes, then 2 support examples per class, all test examples.
    rng = np.random.default_rng(11)
    chosen = rng.choice(np.arange(3), size=3, replace=False)
    support = np.concatenate([rng.choice(np.flatnonzero(y == c), size=2, replace=False) for c in chosen])
    query = np.concatenate([np.flatnonzero(yt == c) for c in chosen])
    want = brute_interpolation(xt[query], x[support], np.eye(3)[y[support]], 5)
    assert res[2]["accuracies"][0] == np.mean(want.argmax(1) == yt[query])
    assert res[2]["ci95"] is None


# Every scikit-learn check passes (scikit-learn 1.2.1 and 1.9.1 here) except the ones
# scikit-learn itself skips for a missing optional dependency or setting: the pandas-input
# check needs pandas; the array-API check (scikit-learn >= 1.6) needs SCIPY_ARRAY_API=1 and
# an array-API namespace package, and the estimators compute in torch, not through the
# array API. The test fails if the set of failing or skipped checks differs from this one.
def not_applicable(estimator_name):
    import os

    import sklearn

    skipped = set()
    try:
        import pandas  # noqa: F401
    except ImportError:
        kind = "classifier" if estimator_name == "NNKClassifier" else "regressor"
        skipped.add(f"check_{kind}_data_not_an_array")
    version = tuple(int(p) for p in sklearn.__version__.split(".")[:2])
    if version >= (1, 6) and os.environ.get("SCIPY_ARRAY_API") != "1":
        skipped.add("check_array_api_input")
    return skipped


def _run_sklearn_checks(estimator):
    from sklearn.utils.estimator_checks import check_estimator

    failed = {}
    try:
        checks = check_estimator(estimator, generate_only=True)
    except TypeError:  # scikit-learn >= 1.6 dropped generate_only
        from sklearn.utils.estimator_checks import estimator_checks_generator
        checks = estimator_checks_generator(estimator, mark="skip")
    for est, check in checks:
        name = getattr(check, "func", check).__name__
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                check(est)
        except Exception as exc:  # noqa: BLE001  (collected and compared below)
            kind = "skipped" if type(exc).__name__ == "SkipTest" else "failed"
            failed[name] = f"{kind} {type(exc).__name__}: {exc}"[:300]
    return failed


@pytest.mark.parametrize("cls", [NNKClassifier, NNKRegressor])
def test_sklearn_estimator_checks(cls):
    failed = _run_sklearn_checks(cls(k=5))
    assert set(failed) == not_applicable(cls.__name__), failed
    assert all(v.startswith("skipped SkipTest") for v in failed.values()), failed


@pytest.mark.parametrize("bad,message", [
    (dict(k=0), "k should be an integer >= 1"),
    (dict(k=2.5), "k should be an integer >= 1"),
    (dict(kernel="rbf"), "kernel should be"),
    (dict(candidate_metric="l1"), "candidate_metric"),
])
def test_bad_parameters(bad, message):
    with pytest.raises(ValueError, match=message):
        NNKClassifier(**bad).fit(np.eye(3), [0, 1, 1])


def test_bad_data():
    clf = NNKClassifier(k=2)
    with pytest.raises(ValueError, match="not fitted"):
        clf.predict(np.eye(3))
    with pytest.raises(ValueError, match="NaN or infinity"):
        clf.fit(np.array([[1.0, np.nan], [1.0, 2.0]]), [0, 1])
    with pytest.raises(ValueError, match="same number of samples"):
        clf.fit(np.eye(3), [0, 1])
    with pytest.raises(ValueError, match="at least 2 samples"):
        clf.fit(np.eye(3)[:1], [0])
    clf.fit(np.eye(3), [0, 1, 1])
    with pytest.raises(ValueError, match="X has 2 features, but NNKClassifier is expecting 3"):
        clf.predict(np.eye(2))
    with pytest.raises(ValueError, match="2D array"):
        clf.predict(np.ones(3))
    with pytest.raises(ValueError, match="few_shot_accuracy: 3 shots need 3"):
        few_shot_accuracy(np.eye(4), [0, 0, 1, 1], np.eye(4), [0, 0, 1, 1], shots=(3,))


def test_exported_lazily():
    assert torch_geometry.NNKClassifier is NNKClassifier
    assert torch_geometry.few_shot_accuracy is few_shot_accuracy
