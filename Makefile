# torch_geometry — one entry point for set-up, build, tests, demo and benchmarks.
#   make demo   the main job (does its own set-up)
#   make test   every test on both torch builds (does its own set-up):
#                 Debian's torch 1.13 (.venv, build/): ctest, pytest, the LibTorch example
#                 PyPI's torch 2.x (.venv-torch2, build-torch2/): the library and its CUDA
#                   sources compiled with nvcc, a wheel built and installed into that venv,
#                   then ctest, pytest and the LibTorch example against the installed wheel
#                 the C++ tests under ASan + UBSan, and the bounded fuzz targets

SHELL       := /bin/bash
PYTHON      := .venv/bin/python
BUILD_DIR   := build
INSTALL_DIR := $(BUILD_DIR)/install
VENV2       := .venv-torch2
PYTHON2     := $(VENV2)/bin/python
BUILD2      := build-torch2
INSTALL2    := $(BUILD2)/install
JOBS        ?= $(shell nproc)
# CMake's search prefixes for PyPI's torch: its package config and the package itself (so that
# its libraries are found before another torch installed in the system's folders).
TORCH2_PREFIX = $(PYTHON2) -c 'import os, torch; d = os.path.dirname(torch.__file__); print(d + "/share/cmake;" + d)'
DEBIAN_CMAKE := /usr/lib/x86_64-linux-gnu/cmake
SOURCES     := $(wildcard csrc/*.cpp csrc/*.h csrc/*/*.cpp csrc/*/*.h csrc/*/*.cu csrc/*/*.cuh \
                 hooks/*.cpp hooks/*.h) CMakeLists.txt $(wildcard cmake/*)
MODULE_SOURCES := $(wildcard torch_geometry/csrc/*.cpp torch_geometry/csrc/*.h)

.PHONY: setup deps venv build python cmake test test-cpp test-python test-cpp-example \
        setup-torch2 test-torch2 test-sanitize test-fuzz demo demo-nnk bench clean

setup: deps venv build

deps:
	@bash scripts/install_deps.sh

# Debian's python with its system packages (torch 1.13, numpy, scipy, ...), plus the few test
# and integration packages Debian does not ship, from PyPI, pinned to Debian's numpy.
venv: .venv/.created
.venv/.created: requirements/debian-venv.txt | deps
	/usr/bin/python3 -m venv --system-site-packages .venv
	$(PYTHON) -m pip install -q --disable-pip-version-check -r requirements/debian-venv.txt \
	  --constraint <($(PYTHON) -c 'import numpy; print("numpy==" + numpy.__version__)')
	touch $@

build: cmake python

# The library (csrc/, hooks/) is compiled once, by CMake; the Python module links it.
cmake: $(BUILD_DIR)/.built
$(BUILD_DIR)/.built: $(SOURCES) $(wildcard tests/cpp/*.cpp) | deps venv
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release \
	  -DCMAKE_INSTALL_PREFIX=$(abspath $(INSTALL_DIR)) -DCMAKE_PREFIX_PATH=$(DEBIAN_CMAKE) \
	  -DTORCH_GEOMETRY_PYTHON=$(abspath $(PYTHON))
	cmake --build $(BUILD_DIR) -j $(JOBS)
	cmake --install $(BUILD_DIR) > /dev/null
	touch $@

# In place: torch_geometry/_C*.so and torch_geometry/lib/libtorch_geometry.so; the venv sees
# the source tree through a .pth file (an editable install without pip's build machinery).
python: torch_geometry/.built
torch_geometry/.built: $(BUILD_DIR)/.built $(MODULE_SOURCES) setup.py
	TORCH_GEOMETRY_CMAKE_BUILD_DIR=$(abspath $(BUILD_DIR)) MAX_JOBS=$(JOBS) \
	  $(PYTHON) setup.py -q build_ext --inplace
	echo "$(CURDIR)" > $$($(PYTHON) -c 'import site; print(site.getsitepackages()[0])')/torch_geometry-dev.pth
	touch $@

test: setup test-cpp test-python test-cpp-example test-torch2 test-sanitize test-fuzz

test-cpp: python cmake
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)

# The LibTorch trainer example, built as a user would: against the installed package.
test-cpp-example: cmake
	bash scripts/cpp_example.sh $(BUILD_DIR)/cpp_trainer "$(abspath $(INSTALL_DIR));$(DEBIAN_CMAKE)"

test-python: python cmake
	$(PYTHON) -m pytest tests/python -q -rs

# ---- PyPI torch 2.x ----------------------------------------------------------------------
setup-torch2: $(BUILD2)/.installed

$(VENV2)/.created: requirements/torch2.txt | deps
	rm -rf $(VENV2)
	/usr/bin/python3 -m venv $(VENV2)
	$(PYTHON2) -m pip install -q --disable-pip-version-check -r requirements/torch2.txt
	touch $@

$(BUILD2)/.built: $(SOURCES) $(wildcard tests/cpp/*.cpp) $(VENV2)/.created
	cmake -S . -B $(BUILD2) -G Ninja -DCMAKE_BUILD_TYPE=Release \
	  -DCMAKE_INSTALL_PREFIX=$(abspath $(INSTALL2)) \
	  -DCMAKE_PREFIX_PATH=$$($(TORCH2_PREFIX)) \
	  -DTORCH_GEOMETRY_PYTHON=$(abspath $(PYTHON2)) -DTORCH_GEOMETRY_CUDA_ARCHITECTURES=90
	cmake --build $(BUILD2) -j $(JOBS)
	cmake --install $(BUILD2) > /dev/null
	touch $@

# A wheel, built from the same CMake tree (nothing compiles twice) and installed as a user
# would install it: the torch-2 tests import the installed package, not the source tree.
$(BUILD2)/.installed: $(BUILD2)/.built $(MODULE_SOURCES) setup.py pyproject.toml $(wildcard torch_geometry/*.py)
	rm -rf $(BUILD2)/dist
	TORCH_GEOMETRY_CMAKE_BUILD_DIR=$(abspath $(BUILD2)) MAX_JOBS=$(JOBS) \
	  $(PYTHON2) -m pip wheel -q --disable-pip-version-check --no-build-isolation --no-deps \
	  -w $(BUILD2)/dist .
	$(PYTHON2) -m pip install -q --disable-pip-version-check --force-reinstall --no-deps $(BUILD2)/dist/torch_geometry-*.whl
	touch $@

test-torch2: setup-torch2
	cd $(BUILD2) && ctest --output-on-failure -j $(JOBS)
	cd tests && TORCH_GEOMETRY_BUILD_DIR=$(abspath $(BUILD2)) TORCH_GEOMETRY_INSTALLED=1 \
	  $(abspath $(VENV2))/bin/pytest python -q -rs -p no:cacheprovider
	bash scripts/cpp_example.sh $(BUILD2)/cpp_trainer \
	  "$(abspath $(INSTALL2));$$($(TORCH2_PREFIX))"

# ---- guards -------------------------------------------------------------------------------
test-sanitize: setup
	bash scripts/sanitize.sh

test-fuzz: setup
	bash scripts/fuzz.sh

# ---- the main job, demos, benchmarks ------------------------------------------------------
demo: setup
	$(PYTHON) examples/fashion_mnist.py --epochs 15 --train-size 20000 --probe-size 1000 --threads 2

demo-nnk: setup
	$(PYTHON) examples/demo_nnk.py

bench: setup
	$(PYTHON) benchmarks/bench_graph.py
	$(PYTHON) benchmarks/bench_metrics.py
	$(PYTHON) benchmarks/bench_tracking.py

clean:
	rm -rf $(BUILD_DIR) $(BUILD2) torch_geometry/_C*.so torch_geometry/lib torch_geometry/.built
