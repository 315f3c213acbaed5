"""Builds the Python extension ``torch_geometry._C`` on top of the C++ library.

The operators and the training state (csrc/, hooks/) are compiled once, by CMake, into
``libtorch_geometry.so`` -- the same library LibTorch users link through
``find_package(TorchGeometry)``. This file drives that CMake build against the torch of the
Python that runs it, ships the library inside the package (``torch_geometry/lib``) and
compiles only the pybind11 module (torch_geometry/csrc/) that binds the training state.

Environment:
  TORCH_GEOMETRY_CMAKE_BUILD_DIR  an existing or new CMake build folder to build the library
                                  in (``make`` passes its own, so nothing compiles twice);
                                  default: a folder under setuptools' build_temp.
  TORCH_GEOMETRY_CUDA             ON/OFF: compile the CUDA sources (default: ON when this
                                  torch is a CUDA build and nvcc is found).
  MAX_JOBS                        parallel compile jobs (default: the CPU count).
"""
import glob
import os
import shutil
import subprocess
import sys

import torch
from setuptools import find_packages, setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

ROOT = os.path.dirname(os.path.abspath(__file__))
LIBRARY = "libtorch_geometry.so"


def _torch_cmake_prefix():
    """CMake search prefixes for the torch this Python imports: its package config and the
    package itself (so that its libraries are found before another torch installed in the
    system's folders), or None when that torch ships no config (Debian's python3-torch:
    CMake then finds libtorch-dev's)."""
    import torch.utils

    prefix = getattr(torch.utils, "cmake_prefix_path", None)
    if prefix and os.path.isfile(os.path.join(prefix, "Torch", "TorchConfig.cmake")):
        return f"{prefix};{os.path.dirname(torch.__file__)}"
    return None


def _cmake():
    exe = shutil.which("cmake")
    if exe is None:
        raise RuntimeError("cmake (>= 3.18) is needed to build torch_geometry: install it "
                           "(Debian: apt-get install cmake; or pip install cmake)")
    return exe


class CMakeBuildExt(BuildExtension):
    """Builds libtorch_geometry with CMake, then the extension modules against it."""

    def run(self):
        build_dir = os.environ.get("TORCH_GEOMETRY_CMAKE_BUILD_DIR") or os.path.join(
            os.path.abspath(self.build_temp), "cmake")
        build_dir = os.path.abspath(build_dir)
        self._cmake_build(build_dir)
        built = os.path.join(build_dir, LIBRARY)
        # The library goes next to the package, in the wheel and in an in-place build alike.
        for pkg_root in {os.path.abspath(self.build_lib), ROOT if self.inplace else None} - {None}:
            dest = os.path.join(pkg_root, "torch_geometry", "lib")
            os.makedirs(dest, exist_ok=True)
            target = os.path.join(dest, LIBRARY)
            if not (os.path.exists(target) and os.path.samefile(built, target)):
                shutil.copy2(built, target)
        for ext in self.extensions:
            ext.library_dirs.append(build_dir)
        super().run()

    def _cmake_build(self, build_dir):
        cmake = _cmake()
        jobs = os.environ.get("MAX_JOBS") or str(os.cpu_count() or 1)
        if not os.path.isfile(os.path.join(build_dir, "CMakeCache.txt")):
            args = [cmake, "-S", ROOT, "-B", build_dir, "-DCMAKE_BUILD_TYPE=Release",
                    "-DTORCH_GEOMETRY_BUILD_TESTS=OFF"]
            prefix = _torch_cmake_prefix()
            if prefix:
                args.append(f"-DCMAKE_PREFIX_PATH={prefix}")
            if os.environ.get("TORCH_GEOMETRY_CUDA"):
                args.append(f"-DTORCH_GEOMETRY_CUDA={os.environ['TORCH_GEOMETRY_CUDA']}")
            if shutil.which("ninja"):
                args += ["-G", "Ninja"]
            subprocess.check_call(args)
        subprocess.check_call([cmake, "--build", build_dir, "--target", "torch_geometry",
                               "-j", jobs])


# Our code needs C++17. torch 1.x's build helper asks for C++14, so raise it there; torch 2.x
# asks for what its own headers need (C++20 for torch 2.15), which must stay.
_CXX_STANDARD = ["-std=c++17"] if int(torch.__version__.split(".")[0]) < 2 else []

extension = CppExtension(
    name="torch_geometry._C",
    sources=sorted(os.path.relpath(p, ROOT)
                   for p in glob.glob(os.path.join(ROOT, "torch_geometry", "csrc", "*.cpp"))),
    include_dirs=[ROOT],
    libraries=["torch_geometry"],
    extra_compile_args=["-O3"] + _CXX_STANDARD,
    # _C finds the library in torch_geometry/lib wherever the package is installed.
    extra_link_args=["-Wl,-rpath,$ORIGIN/lib"],
)

setup(
    packages=find_packages(include=["torch_geometry", "torch_geometry.*"]),
    package_data={"torch_geometry": ["lib/*.so"]},
    ext_modules=[extension],
    cmdclass={"build_ext": CMakeBuildExt.with_options(use_ninja=True)},
    # One setuptools build folder per torch: a build for one torch never reuses objects
    # compiled against another.
    options={"build": {"build_base": os.path.join("build", "setuptools", f"torch-{torch.__version__}")}},
    zip_safe=False,
)
