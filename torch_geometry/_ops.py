"""Loads the compiled extension, whose import registers ``torch.ops.torch_geometry.*``."""
import importlib

_C = None
_ERROR = None

try:
    _C = importlib.import_module("torch_geometry._C")
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    _ERROR = exc


def ensure_loaded():
    """Returns the compiled module, or raises an ImportError that says how to build it."""
    if _C is None:
        raise ImportError(
            "torch_geometry's compiled library (torch_geometry._C) could not be loaded: "
            f"{_ERROR}. Build it from the repository root with `make setup` (Debian 12), or "
            "`pip install --no-build-isolation -e .` against the torch you run; the extension "
            "must be rebuilt whenever torch is upgraded.") from _ERROR
    return _C
