"""Tests for torch_geometry.datasets (Fashion-MNIST IDX reader and sklearn digits)."""

import gzip
import os
from pathlib import Path

import pytest
import torch

from torch_geometry.datasets import (
    DEFAULT_FASHION_MNIST_ROOT,
    FASHION_MNIST_ENV,
    load_digits,
    load_fashion_mnist,
)

_ROOT = Path(os.environ.get(FASHION_MNIST_ENV, DEFAULT_FASHION_MNIST_ROOT))
# The test environment installs Fashion-MNIST (make setup): a missing copy fails loudly.
needs_fmnist = pytest.mark.usefixtures("fashion_mnist_installed")


@needs_fmnist
def test_train_full_shapes_and_class_counts():
    x, y = load_fashion_mnist("train")
    assert x.shape == (60000, 784) and x.dtype == torch.float32 and x.is_contiguous()
    assert y.shape == (60000,) and y.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert torch.bincount(y, minlength=10).tolist() == [6000] * 10


@needs_fmnist
def test_test_split_first_n_unflattened_float64():
    x, y = load_fashion_mnist("test", n=100, flatten=False, dtype=torch.float64)
    assert x.shape == (100, 1, 28, 28) and x.dtype == torch.float64
    assert y.shape == (100,) and int(y.min()) >= 0 and int(y.max()) <= 9
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    # n takes a prefix: the first 100 flattened agree with the first 100 of a larger load.
    x2, y2 = load_fashion_mnist("test", n=500)
    assert torch.equal(x.reshape(100, -1).float(), x2[:100])
    assert torch.equal(y, y2[:100])


@needs_fmnist
def test_n_zero_and_too_large():
    x, y = load_fashion_mnist("test", n=0)
    assert x.shape == (0, 784) and y.shape == (0,)
    with pytest.raises(ValueError, match="at most 10000"):
        load_fashion_mnist("test", n=10001)


def test_bad_root_raises_with_instructions(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist") as info:
        load_fashion_mnist(root=tmp_path / "nowhere")
    assert "root" in str(info.value) and FASHION_MNIST_ENV in str(info.value)


def test_env_var_is_used(tmp_path, monkeypatch):
    monkeypatch.setenv(FASHION_MNIST_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load_fashion_mnist()


def test_bad_magic_number(tmp_path):
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        with gzip.open(tmp_path / name, "wb") as f:
            f.write(b"\x00\x00\x08\x05" + b"\x00" * 64)
    with pytest.raises(ValueError, match="magic"):
        load_fashion_mnist("test", root=tmp_path)


def test_small_handmade_idx_file(tmp_path):
    # 3 images of 2x2 pixels, labels 7, 0, 9.
    pixels = bytes([0, 255, 51, 102, 1, 2, 3, 4, 255, 255, 255, 255])
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write((0x803).to_bytes(4, "big") + b"".join(v.to_bytes(4, "big") for v in (3, 2, 2)))
        f.write(pixels)
    with gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write((0x801).to_bytes(4, "big") + (3).to_bytes(4, "big") + bytes([7, 0, 9]))
    x, y = load_fashion_mnist("test", root=tmp_path)
    assert x.shape == (3, 4) and y.tolist() == [7, 0, 9]
    assert torch.allclose(x[0], torch.tensor([0.0, 1.0, 0.2, 0.4]))
    x, _ = load_fashion_mnist("test", root=tmp_path, flatten=False)
    assert x.shape == (3, 1, 2, 2)


@pytest.mark.parametrize("kwargs, match", [
    ({"split": "valid"}, "split"),
    ({"n": -1}, "n should be"),
    ({"n": 2.5}, "n should be"),
    ({"dtype": torch.int64}, "dtype"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_fashion_mnist(**kwargs)


def test_digits():
    x, y = load_digits()
    assert x.shape == (1797, 64) and x.dtype == torch.float32
    assert y.shape == (1797,) and y.dtype == torch.int64
    assert int(y.min()) == 0 and int(y.max()) == 9
    assert float(x.min()) >= 0.0 and float(x.max()) <= 16.0
