"""NNK classification and regression with the scikit-learn estimator API, and few-shot
evaluation of frozen features.

A query's prediction is the NNK interpolation of the training targets over its NNK polytope
among the training points (:func:`torch_geometry.nnk_neighbors`,
:func:`torch_geometry.nnk_interpolate`): ``yhat_q = sum_j theta_qj y_j / sum_j theta_qj``,
one-hot labels for the classifier (argmax, ties to the first class of ``classes_``).

scikit-learn is optional: when it is installed the estimators derive from its
``BaseEstimator`` and mixins (``clone``, pipelines and grid searches work); without it they
keep the same methods (``fit``, ``predict``, ``predict_proba``, ``score``, ``get_params``,
``set_params``).
"""
import inspect
import warnings
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np
import torch

from .neighbors import nnk_interpolate, nnk_neighbors

try:  # optional dependency
    from sklearn.base import BaseEstimator as _Base
    from sklearn.base import ClassifierMixin as _ClassifierMixin
    from sklearn.base import RegressorMixin as _RegressorMixin
    from sklearn.exceptions import DataConversionWarning as _ConversionWarning
    from sklearn.exceptions import NotFittedError as _NotFittedError
except ImportError:
    class _Base:
        """get_params/set_params from the constructor's arguments (scikit-learn's rule)."""

        @classmethod
        def _get_param_names(cls):
            sig = inspect.signature(cls.__init__)
            return sorted(p for p in sig.parameters if p != "self")

        def get_params(self, deep: bool = True) -> Dict[str, Any]:
            return {name: getattr(self, name) for name in self._get_param_names()}

        def set_params(self, **params: Any):
            valid = self._get_param_names()
            for name, value in params.items():
                if name not in valid:
                    raise ValueError(f"Invalid parameter {name!r} for {type(self).__name__}")
                setattr(self, name, value)
            return self

    class _ClassifierMixin:
        def score(self, X, y, sample_weight=None) -> float:
            pred = self.predict(X)
            return float(np.average(pred == np.asarray(y), weights=sample_weight))

    class _RegressorMixin:
        def score(self, X, y, sample_weight=None) -> float:
            y = np.asarray(y, dtype=np.float64)
            pred = np.asarray(self.predict(X), dtype=np.float64).reshape(y.shape)
            w = np.ones(y.shape[0]) if sample_weight is None else np.asarray(sample_weight)
            ss_res = (w[:, None] * (y - pred).reshape(len(y), -1) ** 2).sum(0)
            mean = np.average(y.reshape(len(y), -1), axis=0, weights=w)
            ss_tot = (w[:, None] * (y.reshape(len(y), -1) - mean) ** 2).sum(0)
            return float(np.mean(1 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0)))

    class _ConversionWarning(UserWarning):
        pass

    class _NotFittedError(ValueError, AttributeError):
        pass


def _features(X: Any, name: str, estimator: str) -> torch.Tensor:
    """X as a 2-D float32/float64 tensor of finite values (tensors keep their device)."""
    if hasattr(X, "toarray") or type(X).__module__.startswith("scipy.sparse"):
        raise TypeError(f"{estimator}: sparse {name} is not supported, pass a dense array")
    if isinstance(X, torch.Tensor):
        t = X.detach()
        if t.dtype in (torch.float16, torch.bfloat16):
            t = t.float()
        if t.is_complex():
            raise ValueError(f"{estimator}: Complex data not supported in {name}")
        if not t.is_floating_point():
            t = t.double()
    else:
        a = np.asarray(X)
        if np.iscomplexobj(a):
            raise ValueError(f"{estimator}: Complex data not supported in {name}")
        if a.dtype.kind not in "fiub":
            try:
                a = a.astype(np.float64)
            except TypeError as exc:
                raise TypeError(f"{estimator}: {name} should hold numbers ({exc})") from exc
            except ValueError as exc:
                raise ValueError(f"{estimator}: {name} should hold numbers ({exc})") from exc
        if a.dtype not in (np.float32, np.float64):
            a = a.astype(np.float64)
        t = torch.from_numpy(np.ascontiguousarray(a))
    if t.dim() != 2:
        raise ValueError(f"{estimator}: expected a 2D array for {name} [n_samples, n_features], "
                         f"got {t.dim()}D with shape {tuple(t.shape)}. Reshape your data with "
                         f"X.reshape(-1, 1) for a single feature or X.reshape(1, -1) for a "
                         f"single sample")
    if t.shape[0] == 0:
        raise ValueError(f"{estimator}: {name} has 0 sample(s) (shape={tuple(t.shape)}) while "
                         f"a minimum of 1 is required.")
    if t.shape[1] == 0:
        raise ValueError(f"{estimator}: {name} has 0 feature(s) (shape={tuple(t.shape)}) while "
                         f"a minimum of 1 is required.")
    if not torch.isfinite(t).all():
        raise ValueError(f"{estimator}: Input {name} contains NaN or infinity")
    return t


def _targets(y: Any, n: int, estimator: str, allow_2d: bool) -> np.ndarray:
    if y is None:
        raise ValueError(f"{estimator} requires y to be passed, but the target y is None")
    y = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1 and not allow_2d:
        warnings.warn("A column-vector y was passed when a 1d array was expected: it is "
                      "raveled", _ConversionWarning)
        y = y.ravel()
    if y.ndim not in ((1, 2) if allow_2d else (1,)):
        raise ValueError(f"{estimator}: y should be 1-D{' or 2-D' if allow_2d else ''}, got "
                         f"shape {y.shape}")
    if y.shape[0] != n:
        raise ValueError(f"{estimator}: X and y should have the same number of samples, got "
                         f"{n} and {y.shape[0]}")
    return y


class _NNKBase(_Base):
    def __init__(self, k: int = 25, kernel: str = "cosine",
                 sigma: Union[float, str, None] = None, candidate_metric: str = "kernel",
                 threshold: float = 1e-10, batch_size: int = 4096):
        self.k = k
        self.kernel = kernel
        self.sigma = sigma
        self.candidate_metric = candidate_metric
        self.threshold = threshold
        self.batch_size = batch_size

    def _fit_points(self, X: Any) -> torch.Tensor:
        name = type(self).__name__
        if isinstance(self.k, bool) or not isinstance(self.k, (int, np.integer)) or self.k < 1:
            raise ValueError(f"{name}: k should be an integer >= 1, got {self.k!r}")
        if self.kernel not in ("cosine", "gaussian"):
            raise ValueError(f"{name}: kernel should be 'cosine' or 'gaussian', got {self.kernel!r}")
        if self.candidate_metric not in ("kernel", "euclidean"):
            raise ValueError(f"{name}: candidate_metric should be 'kernel' or 'euclidean', got "
                             f"{self.candidate_metric!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, (int, np.integer)) \
                or self.batch_size < 1:
            raise ValueError(f"{name}: batch_size should be an integer >= 1, got {self.batch_size!r}")
        Xt = _features(X, "X", name)
        if Xt.shape[0] < 2:
            raise ValueError(f"{name}: fitting needs at least 2 samples, got 1 sample")
        self.X_fit_ = Xt
        self.n_features_in_ = Xt.shape[1]
        # Fewer than k + 1 training points: all the others are candidates.
        self.k_ = int(min(self.k, Xt.shape[0] - 1))
        self.sigma_ = self._resolve_sigma(Xt)
        return Xt

    def _resolve_sigma(self, X: torch.Tensor) -> Union[float, str, None]:
        """The Gaussian bandwidth, fixed at fit time so that a prediction does not depend on
        the other queries of its batch: sigma=None/"mean" is the training set's own
        (mean distance of each training point to its k-th nearest other one / 3)."""
        if self.kernel != "gaussian":
            return None
        if self.sigma is None or self.sigma == "mean":
            from .graph import knn_graph
            nbr, _ = knn_graph(X, self.k_, kernel="gaussian", sigma=1.0)
            far = (X - X[nbr[:, -1]]).double().norm(dim=1)
            return max(float(far.mean()) / 3.0, 1e-150)
        return self.sigma

    def _neighbors(self, X: Any):
        name = type(self).__name__
        if not hasattr(self, "X_fit_"):
            raise _NotFittedError(f"This {name} instance is not fitted yet: call fit first")
        Xt = _features(X, "X", name)
        if Xt.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {Xt.shape[1]} features, but {name} is expecting "
                             f"{self.n_features_in_} features as input")
        ref = self.X_fit_
        if Xt.dtype != ref.dtype:
            dtype = torch.promote_types(Xt.dtype, ref.dtype)
            Xt, ref = Xt.to(dtype), ref.to(dtype)
        Xt = Xt.to(ref.device)
        parts = [nnk_neighbors(Xt[i:i + self.batch_size], ref, self.k_, kernel=self.kernel,
                               sigma=self.sigma_, candidate_metric=self.candidate_metric,
                               threshold=self.threshold)
                 for i in range(0, Xt.shape[0], self.batch_size)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def neighbors(self, X: Any):
        """The NNK neighbours of X among the training points: (neighbors [Q, k] int64 into the
        training set, -1 padded; weights [Q, k])."""
        return self._neighbors(X)


class NNKClassifier(_ClassifierMixin, _NNKBase):
    """NNK classifier: the label distribution of a query is the NNK interpolation of the
    one-hot training labels over its NNK polytope among the training points.

    Args:
        k (int): candidates per query; with n training points, min(k, n - 1) are used.
            (default: 25)
        kernel (str): ``"cosine"`` or ``"gaussian"``. (default: ``"cosine"``)
        sigma (float or str, optional): Gaussian bandwidth: a number, ``None``/``"mean"``
            (the training set's: mean distance to the k-th nearest other training point / 3,
            fixed at fit) or ``"local"`` (per query). (default: ``None``)
        candidate_metric (str): ``"kernel"`` or ``"euclidean"``. (default: ``"kernel"``)
        threshold (float): NNK weights ``<= threshold`` are dropped. (default: ``1e-10``)
        batch_size (int): queries per call of the operator (bounds memory). (default: 4096)

    X may be a numpy array or a tensor [n_samples, n_features] (float32/float64; other
    numbers become float64); y any labels numpy can sort. A query without candidates (an
    all-zero row under the cosine kernel) gets the training class frequencies.

    Example:
        >>> clf = torch_geometry.NNKClassifier(k=10).fit(X_train, y_train)
        >>> clf.score(X_test, y_test)
    """

    def fit(self, X: Any, y: Any):
        Xt = self._fit_points(X)
        y = _targets(y, Xt.shape[0], type(self).__name__, allow_2d=False)
        if y.dtype.kind == "f" and not np.isfinite(y).all():
            raise ValueError("NNKClassifier: Input y contains NaN or infinity")
        if y.dtype.kind == "f" and not np.array_equal(y, np.round(y)):
            raise ValueError("NNKClassifier: Unknown label type: continuous (float labels with "
                             "fractions); use NNKRegressor for real-valued targets")
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        onehot = np.zeros((len(y_idx), len(self.classes_)))
        onehot[np.arange(len(y_idx)), y_idx] = 1.0
        self._onehot = torch.from_numpy(onehot).to(Xt.device)
        self._prior = onehot.mean(0)
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Tensor or array [n_samples, n_features] -> array [n_samples, n_classes]."""
        nbr, w = self._neighbors(X)
        p = nnk_interpolate(nbr, w, self._onehot).cpu().numpy()
        empty = (w > 0).sum(1).cpu().numpy() == 0
        p[empty] = self._prior
        return p

    def predict(self, X: Any) -> np.ndarray:
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]


class NNKRegressor(_RegressorMixin, _NNKBase):
    """NNK regressor: the prediction at a query is the NNK interpolation of the training
    targets (1-D or [n_samples, n_outputs]) over its NNK polytope among the training points.

    Arguments as :class:`NNKClassifier`. A query without candidates gets the mean target.
    """

    def _more_tags(self):  # scikit-learn < 1.6
        return {"multioutput": True}

    def __sklearn_tags__(self):  # scikit-learn >= 1.6
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def fit(self, X: Any, y: Any):
        Xt = self._fit_points(X)
        y = _targets(y, Xt.shape[0], type(self).__name__, allow_2d=True)
        try:
            y = y.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"NNKRegressor: y should hold numbers, got dtype {y.dtype}") from exc
        if not np.isfinite(y).all():
            raise ValueError("NNKRegressor: Input y contains NaN or infinity")
        self._y_1d = y.ndim == 1
        self._y = torch.from_numpy(y.reshape(len(y), -1)).to(Xt.device)
        self._mean = y.reshape(len(y), -1).mean(0)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Tensor or array [n_samples, n_features] -> array [n_samples] (or
        [n_samples, n_outputs])."""
        nbr, w = self._neighbors(X)
        out = nnk_interpolate(nbr, w, self._y).cpu().numpy()
        empty = (w > 0).sum(1).cpu().numpy() == 0
        out[empty] = self._mean
        return out[:, 0] if self._y_1d else out


def few_shot_accuracy(features_train: Any, y_train: Any, features_test: Any, y_test: Any,
                      shots: Sequence[int] = (1, 5, 10), episodes: int = 100,
                      ways: Optional[int] = None, queries_per_class: Optional[int] = None,
                      k: int = 25, kernel: str = "cosine", seed: int = 0,
                      **classifier_kwargs: Any) -> Dict[int, Dict[str, Any]]:
    """Few-shot classification accuracy of frozen features with the NNK classifier.

    Each episode draws ``ways`` classes (all classes when None), ``shots`` labelled support
    examples per class from the training features, and classifies test examples of those
    classes (all of them, or ``queries_per_class`` per class) with an :class:`NNKClassifier`
    fitted on the support set.

    Args:
        features_train (Tensor[N, D] or ndarray), y_train ([N] labels): the support pool.
        features_test (Tensor[M, D] or ndarray), y_test ([M] labels): the query pool.
        shots (sequence of int): support examples per class. (default: (1, 5, 10))
        episodes (int): episodes per shot count. (default: 100)
        ways (int, optional): classes per episode. (default: all classes of y_train)
        queries_per_class (int, optional): test examples per class and episode. (default: all)
        k (int): NNK candidates (min(k, support size - 1) are used). (default: 25)
        kernel (str): the classifier's kernel. (default: ``"cosine"``)
        seed (int): seed of the episode sampler. (default: 0)

    Returns:
        {shots: {"mean": mean accuracy, "ci95": half-width of the normal 95% interval over
        episodes (None for a single episode), "accuracies": array [episodes]}}
    """
    Xtr = _features(features_train, "features_train", "few_shot_accuracy")
    Xte = _features(features_test, "features_test", "few_shot_accuracy")
    ytr = _targets(y_train, Xtr.shape[0], "few_shot_accuracy", allow_2d=False)
    yte = _targets(y_test, Xte.shape[0], "few_shot_accuracy", allow_2d=False)
    if isinstance(episodes, bool) or not isinstance(episodes, (int, np.integer)) or episodes < 1:
        raise ValueError(f"few_shot_accuracy: episodes should be an integer >= 1, got {episodes!r}")
    classes = np.unique(ytr)
    ways = len(classes) if ways is None else ways
    if not 2 <= ways <= len(classes):
        raise ValueError(f"few_shot_accuracy: ways should be in [2, {len(classes)}] (the classes "
                         f"of y_train), got {ways}")
    by_class = {c: np.flatnonzero(ytr == c) for c in classes}
    test_by_class = {c: np.flatnonzero(yte == c) for c in classes}
    rng = np.random.default_rng(seed)
    out: Dict[int, Dict[str, Any]] = {}
    for s in shots:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1:
            raise ValueError(f"few_shot_accuracy: shots should be integers >= 1, got {s!r}")
        short = [c for c in classes if len(by_class[c]) < s]
        if short:
            raise ValueError(f"few_shot_accuracy: {s} shots need {s} training examples per "
                             f"class; classes {short} have fewer")
        acc = np.empty(episodes)
        for e in range(episodes):
            chosen = rng.choice(classes, size=ways, replace=False)
            support = np.concatenate([rng.choice(by_class[c], size=s, replace=False)
                                      for c in chosen])
            query = []
            for c in chosen:
                pool = test_by_class[c]
                if queries_per_class is not None and len(pool) > queries_per_class:
                    pool = rng.choice(pool, size=queries_per_class, replace=False)
                query.append(pool)
            query = np.concatenate(query)
            if len(query) == 0:
                raise ValueError("few_shot_accuracy: no test examples of the episode's classes")
            clf = NNKClassifier(k=k, kernel=kernel, **classifier_kwargs)
            clf.fit(Xtr[torch.from_numpy(support)], ytr[support])
            acc[e] = np.mean(clf.predict(Xte[torch.from_numpy(query)]) == yte[query])
        out[int(s)] = {"mean": float(acc.mean()),
                       "ci95": (float(1.96 * acc.std(ddof=1) / np.sqrt(episodes)) if episodes > 1
                                else None),
                       "accuracies": acc}
    return out
