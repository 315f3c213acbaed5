"""How the package is built and loaded: one compiled library inside the package, and (in the
torch 2.x leg of `make test`) a wheel installed into a fresh venv rather than the source tree."""
import importlib.metadata
import os
import pathlib

import torch

import torch_geometry

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGE = pathlib.Path(torch_geometry.__file__).resolve().parent


def _loaded_libraries():
    with open("/proc/self/maps") as f:
        return {line.split()[-1] for line in f if line.rstrip().endswith(".so")}


def test_operators_come_from_the_library_shipped_in_the_package():
    lib = PACKAGE / "lib" / "libtorch_geometry.so"
    assert lib.is_file(), f"{lib} is missing: the package must ship the compiled library"
    loaded = {p for p in _loaded_libraries() if p.endswith("libtorch_geometry.so")}
    assert loaded == {str(lib)}, f"expected only {lib} to be loaded, got {loaded}"
    # The operators (the dispatcher entry points name their schemas) are compiled into
    # the library only, not a second time into the extension module.
    schema = b"torch_geometry::nnk_graph"
    module = next(PACKAGE.glob("_C*.so"))
    assert schema in lib.read_bytes()
    assert schema not in module.read_bytes()


def test_installed_wheel_is_what_runs():
    if os.environ.get("TORCH_GEOMETRY_INSTALLED") != "1":
        # The Debian leg runs from the source tree (the venv sees it through a .pth file).
        assert PACKAGE == ROOT / "torch_geometry"
        return
    assert PACKAGE != ROOT / "torch_geometry", f"imported from the source tree: {PACKAGE}"
    assert "site-packages" in PACKAGE.parts
    assert importlib.metadata.version("torch_geometry") == torch_geometry.__version__
    # The installed package works: exact kNN against a brute-force cosine ranking.
    x = torch.randn(60, 5, dtype=torch.float64)
    nbr, sim = torch_geometry.knn_graph(x, k=4)
    u = torch.nn.functional.normalize(x, dim=1)
    s = (1 + u @ u.T) / 2
    s.fill_diagonal_(-1)
    ref = s.topk(4, dim=1)
    assert torch.equal(nbr, ref.indices)
    torch.testing.assert_close(sim, ref.values, rtol=0, atol=1e-12)
