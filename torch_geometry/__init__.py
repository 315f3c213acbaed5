"""torch_geometry: NNK graphs and manifold graph metrics on neural network activations."""
import torch  # noqa: F401  (loads libtorch's symbols, which the compiled library needs)

from ._ops import ensure_loaded

ensure_loaded()

from . import _fake  # noqa: E402

# Fake implementations let torch.compile / torch.export trace the operators (torch >= 2).
_fake.register()

from . import callbacks, channelwise, metrics  # noqa: E402
from .callbacks import NNKEarlyStopping, select_models  # noqa: E402
from .graph import NNKGraph, knn_graph, nnk_graph  # noqa: E402
from .approximate import approximate_candidates, candidate_recall  # noqa: E402
from .tracking import GeometryTracker  # noqa: E402

__version__ = "0.1.0"
__all__ = ["GeometryTracker", "approximate_candidates", "candidate_recall", "NNKEarlyStopping", "callbacks", "channelwise", "select_models", "NNKGraph", "knn_graph", "metrics", "nnk_graph", "__version__"]

from .neighbors import nnk_interpolate, nnk_neighbors  # noqa: E402

__all__ += ["nnk_interpolate", "nnk_neighbors"]
from .stability import linear_cka, stability  # noqa: E402

__all__ += ["linear_cka", "stability", "NNKClassifier", "NNKRegressor", "few_shot_accuracy"]

# The estimators import scikit-learn (optional) when it is installed: loaded on first use.
_LAZY_ESTIMATORS = ("NNKClassifier", "NNKRegressor", "few_shot_accuracy")


def __getattr__(name):
    if name in _LAZY_ESTIMATORS:
        from . import estimators
        return getattr(estimators, name)
    raise AttributeError(f"module 'torch_geometry' has no attribute {name!r}")
