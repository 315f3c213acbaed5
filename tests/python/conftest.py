import os
import pathlib

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def build_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("TORCH_GEOMETRY_BUILD_DIR", ROOT / "build"))


@pytest.fixture(autouse=True)
def _two_threads():
    # Debian's torch starts with one thread here; the ops follow torch's setting.
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)
