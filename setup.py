"""Builds the Python extension ``torch_geometry._C``.

The same C++ sources (csrc/, hooks/) are also built by CMakeLists.txt into
``libtorch_geometry.so`` for LibTorch users; this file adds the pybind11 module
(torch_geometry/csrc/) that binds the C++ training state to Python.
"""
import glob
import os

from setuptools import find_packages, setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

ROOT = os.path.dirname(os.path.abspath(__file__))


def _eigen_include() -> str:
    for path in (os.environ.get("EIGEN3_INCLUDE_DIR", ""), "/usr/include/eigen3",
                 "/usr/local/include/eigen3"):
        if path and os.path.isfile(os.path.join(path, "Eigen", "Dense")):
            return path
    raise RuntimeError(
        "Eigen 3 headers not found: install them (Debian: apt-get install libeigen3-dev, "
        "or run `make setup`) or set EIGEN3_INCLUDE_DIR to the folder holding Eigen/Dense")


def _sources():
    patterns = ["csrc/*.cpp", "csrc/cpu/*.cpp", "hooks/*.cpp", "torch_geometry/csrc/*.cpp"]
    files = []
    for pattern in patterns:
        files += sorted(glob.glob(pattern, root_dir=ROOT) if hasattr(glob, "root_dir") else
                        [os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern))])
    return sorted(files)


extension = CppExtension(
    name="torch_geometry._C",
    sources=_sources(),
    include_dirs=[ROOT, _eigen_include()],
    extra_compile_args=["-O3", "-std=c++17", "-fopenmp", "-DTORCH_GEOMETRY_PYTHON"],
    extra_link_args=["-fopenmp"],
)

setup(
    name="torch_geometry",
    version="0.1.0",
    description="NNK graphs and manifold graph metrics on neural network activations",
    packages=find_packages(include=["torch_geometry", "torch_geometry.*"]),
    ext_modules=[extension],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    python_requires=">=3.9",
    install_requires=["torch", "numpy"],
    zip_safe=False,
)
