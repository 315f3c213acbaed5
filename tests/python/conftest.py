import os
import pathlib
import socket
import subprocess
import sys

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def build_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("TORCH_GEOMETRY_BUILD_DIR", ROOT / "build"))


@pytest.fixture(scope="session")
def fashion_mnist_installed() -> pathlib.Path:
    """The Fashion-MNIST folder; fails (never skips) when the data set is missing."""
    from torch_geometry.datasets import DEFAULT_FASHION_MNIST_ROOT, FASHION_MNIST_ENV

    root = pathlib.Path(os.environ.get(FASHION_MNIST_ENV, DEFAULT_FASHION_MNIST_ROOT))
    if not (root / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail(f"Fashion-MNIST not installed at {root}: run `make setup` (it installs the "
                    f"Debian package dataset-fashion-mnist) or set {FASHION_MNIST_ENV}",
                    pytrace=False)
    return root


def _is_import_skip(report) -> bool:
    return (report.skipped and not hasattr(report, "wasxfail")
            and isinstance(report.longrepr, tuple) and len(report.longrepr) == 3
            and "could not import" in str(report.longrepr[2]))


def _fail_import_skip(report) -> None:
    # pytest.importorskip turns a missing dependency into a skip that a green run hides; the
    # test environment is supposed to hold every dependency, so such a skip is a failure.
    if _is_import_skip(report):
        report.outcome = "failed"
        report.longrepr = f"a dependency is missing (importorskip): {report.longrepr[2]}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_import_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _fail_import_skip(outcome.get_result())


@pytest.fixture(autouse=True)
def _two_threads():
    # Debian's torch starts with one thread here; the ops follow torch's setting.
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


def run_ranks(tmp_path, worker_source: str, world: int = 2, timeout: int = 300) -> str:
    """Runs `worker_source` as `world` processes (argv: rank, world, port, out prefix) that
    join a gloo process group on localhost; returns the out prefix. Fails the test with the
    worker's stderr if a rank fails."""
    script = tmp_path / "worker.py"
    script.write_text(worker_source)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "out")
    env = dict(os.environ, TEST_DIR=os.path.dirname(__file__), OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, str(script), str(r), str(world), str(port), out],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in range(world)]
    for p in procs:
        _, err = p.communicate(timeout=timeout)
        assert p.returncode == 0, err
    return out
