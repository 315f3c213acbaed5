"""Small loaders for the data sets the examples, tests and benchmarks use.

Import-light on purpose: only numpy and torch (sklearn on demand), never the compiled
``torch_geometry._C`` library, so the data can be loaded before the extension is built.

- :func:`load_fashion_mnist` reads the gzip IDX files shipped by the Debian package
  ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``).
- :func:`load_digits` wraps scikit-learn's bundled 8x8 digits.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np
import torch

__all__ = ["load_fashion_mnist", "load_digits", "FASHION_MNIST_ENV", "DEFAULT_FASHION_MNIST_ROOT"]

#: Environment variable that overrides the default Fashion-MNIST folder.
FASHION_MNIST_ENV = "TORCH_GEOMETRY_FASHION_MNIST"
#: Where the Debian package ``dataset-fashion-mnist`` installs the files.
DEFAULT_FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"

# IDX magic numbers: two zero bytes, the element type (0x08 = uint8), the number of dims.
_IDX_MAGIC_IMAGES = 0x00000803
_IDX_MAGIC_LABELS = 0x00000801

_SPLIT_PREFIX = {"train": "train", "test": "t10k"}
_SPLIT_SIZE = {"train": 60000, "test": 10000}


def _resolve_root(root: Optional[Union[str, os.PathLike]]) -> Path:
    if root is not None:
        return Path(root)
    return Path(os.environ.get(FASHION_MNIST_ENV, DEFAULT_FASHION_MNIST_ROOT))


def _read_idx(path: Path, magic: int, count: Optional[int]) -> np.ndarray:
    """Reads the first ``count`` items (all if None) of a gzip IDX file of uint8 values.

    Returns an array of shape ``[count, *item_shape]``, dtype uint8.
    """
    if not path.is_file():
        raise FileNotFoundError(
            f"load_fashion_mnist: {path} not found. Install the Debian package "
            f"'dataset-fashion-mnist' (apt-get install dataset-fashion-mnist; `make setup` does it), "
            f"or pass root=<folder with the *-ubyte.gz files>, or set the environment variable "
            f"{FASHION_MNIST_ENV}=<that folder>."
        )
    with gzip.open(path, "rb") as f:
        header = f.read(4)
        if len(header) != 4:
            raise ValueError(f"load_fashion_mnist: {path} is truncated (no IDX header)")
        got = int.from_bytes(header, "big")
        if got != magic:
            raise ValueError(
                f"load_fashion_mnist: {path} should start with the IDX magic number "
                f"0x{magic:08x}, got 0x{got:08x}; is it the right file, and gzip-compressed?"
            )
        ndim = magic & 0xFF
        dims = [int.from_bytes(f.read(4), "big") for _ in range(ndim)]
        total = dims[0]
        if count is None:
            count = total
        elif count > total:
            raise ValueError(
                f"load_fashion_mnist: n should be at most {total} for {path.name}, got {count}"
            )
        item = int(np.prod(dims[1:], dtype=np.int64)) if ndim > 1 else 1
        buf = f.read(count * item)
        if len(buf) != count * item:
            raise ValueError(
                f"load_fashion_mnist: {path} is truncated: expected {count * item} bytes of data, "
                f"got {len(buf)}"
            )
    return np.frombuffer(buf, dtype=np.uint8).reshape([count] + dims[1:])


def load_fashion_mnist(
    split: str = "train",
    n: Optional[int] = None,
    root: Optional[Union[str, os.PathLike]] = None,
    flatten: bool = True,
    dtype: torch.dtype = torch.float32,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Loads Fashion-MNIST images and labels from the gzip IDX files.

    Args:
        split (str): ``"train"`` (60,000 images) or ``"test"`` (10,000). (default: ``"train"``)
        n (int, optional): take the first ``n`` images of the split, in file order.
            (default: all)
        root (str or PathLike, optional): folder holding ``train-images-idx3-ubyte.gz``,
            ``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz`` and
            ``t10k-labels-idx1-ubyte.gz``. (default: ``$TORCH_GEOMETRY_FASHION_MNIST``, else
            ``/usr/share/datasets/fashion-mnist`` from the Debian package
            ``dataset-fashion-mnist``)
        flatten (bool): return ``x`` as ``[n, 784]`` if True, ``[n, 1, 28, 28]`` if False.
            (default: True)
        dtype (torch.dtype): floating dtype of ``x``. (default: ``torch.float32``)

    Returns:
        x (Tensor[n, 784] or Tensor[n, 1, 28, 28]): pixels scaled to [0, 1], contiguous.
        y (Tensor[n], int64): class labels in 0..9.

    Raises:
        FileNotFoundError: the files are not under ``root`` (the message says how to get them).
        ValueError: bad ``split``/``n``/``dtype``, or a file that is not a valid IDX file.

    Example::

        >>> x, y = load_fashion_mnist("train", n=1000)
        >>> x.shape, y.shape
        (torch.Size([1000, 784]), torch.Size([1000]))
    """
    if split not in _SPLIT_PREFIX:
        raise ValueError(f"load_fashion_mnist: split should be 'train' or 'test', got {split!r}")
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"load_fashion_mnist: n should be a non-negative int or None, got {n!r}")
        n = int(n)
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"load_fashion_mnist: dtype should be a floating torch.dtype, got {dtype!r}")

    folder = _resolve_root(root)
    prefix = _SPLIT_PREFIX[split]
    images = _read_idx(folder / f"{prefix}-images-idx3-ubyte.gz", _IDX_MAGIC_IMAGES, n)
    labels = _read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", _IDX_MAGIC_LABELS, n)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"load_fashion_mnist: {images.shape[0]} images but {labels.shape[0]} labels in {folder}"
        )

    x = torch.from_numpy(images.astype(np.float32)).to(dtype) / 255.0
    pixels = int(np.prod(images.shape[1:], dtype=np.int64))
    x = x.reshape(x.shape[0], pixels) if flatten else x.reshape(x.shape[0], 1, *images.shape[1:])
    y = torch.from_numpy(labels.astype(np.int64))
    return x.contiguous(), y


def load_digits(dtype: torch.dtype = torch.float32) -> Tuple[torch.Tensor, torch.Tensor]:
    """Loads scikit-learn's bundled 8x8 handwritten digits (no download needed).

    Args:
        dtype (torch.dtype): floating dtype of ``x``. (default: ``torch.float32``)

    Returns:
        x (Tensor[1797, 64]): pixel intensities as sklearn gives them (0..16).
        y (Tensor[1797], int64): class labels in 0..9.
    """
    try:
        from sklearn.datasets import load_digits as _sk_load_digits
    except ImportError as e:  # pragma: no cover - sklearn is a declared dependency
        raise ImportError(
            "load_digits needs scikit-learn: apt-get install python3-sklearn (`make setup` does it)"
        ) from e
    bunch = _sk_load_digits()
    x = torch.as_tensor(np.asarray(bunch.data), dtype=dtype).contiguous()
    y = torch.as_tensor(np.asarray(bunch.target), dtype=torch.int64)
    return x, y
