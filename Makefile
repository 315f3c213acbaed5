# torch_geometry — one entry point for set-up, build, tests, demo and benchmarks.
#   make demo   the main job (does its own set-up)
#   make test   GoogleTest through ctest, then pytest (does its own set-up)

PYTHON      := .venv/bin/python
BUILD_DIR   := build
INSTALL_DIR := $(BUILD_DIR)/install
JOBS        ?= $(shell nproc)
SOURCES     := $(wildcard csrc/*.cpp csrc/*.h csrc/cpu/*.cpp csrc/cpu/*.h hooks/*.cpp hooks/*.h \
                 torch_geometry/csrc/*.cpp torch_geometry/csrc/*.h)

.PHONY: setup deps venv build python cmake test test-cpp test-python test-cpp-example demo demo-nnk bench clean

setup: deps venv build

deps:
	@bash scripts/install_deps.sh

venv: .venv/.created
.venv/.created: | deps
	/usr/bin/python3 -m venv --system-site-packages .venv
	touch $@

build: python cmake

# pip's editable install registers the package once; the extension itself is rebuilt
# incrementally (ninja) whenever a C++ source changes.
python: .venv/.installed torch_geometry/.built
.venv/.installed: .venv/.created setup.py
	$(PYTHON) -m pip install --no-build-isolation --no-deps --no-index -e . -q
	touch $@ torch_geometry/.built
torch_geometry/.built: $(SOURCES) setup.py .venv/.installed
	$(PYTHON) setup.py -q build_ext --inplace -j $(JOBS)
	touch $@

cmake: $(BUILD_DIR)/.built
$(BUILD_DIR)/.built: $(SOURCES) CMakeLists.txt $(wildcard tests/cpp/*.cpp) | deps venv
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release \
	  -DCMAKE_INSTALL_PREFIX=$(abspath $(INSTALL_DIR)) -DCMAKE_PREFIX_PATH=/usr/lib/x86_64-linux-gnu/cmake \
	  -DTORCH_GEOMETRY_PYTHON=$(abspath $(PYTHON))
	cmake --build $(BUILD_DIR) -j $(JOBS)
	cmake --install $(BUILD_DIR) > /dev/null
	touch $@

test: setup test-cpp test-python test-cpp-example

# The ctest TorchScript fixture imports torch_geometry: the Python extension must be built.
test-cpp: python cmake
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)

# The LibTorch trainer example, built as a user would: against the installed package.
test-cpp-example: cmake
	cmake -S examples/cpp_trainer -B $(BUILD_DIR)/cpp_trainer -G Ninja -DCMAKE_BUILD_TYPE=Release \
	  -DCMAKE_PREFIX_PATH="$(abspath $(INSTALL_DIR));/usr/lib/x86_64-linux-gnu/cmake"
	cmake --build $(BUILD_DIR)/cpp_trainer -j $(JOBS)
	$(BUILD_DIR)/cpp_trainer/cpp_trainer --epochs 2 --subset 2000 --out $(BUILD_DIR)/cpp_trainer/run

test-python: python cmake
	$(PYTHON) -m pytest tests/python -q

demo: setup
	$(PYTHON) examples/fashion_mnist.py --epochs 15 --train-size 20000 --probe-size 1000 --threads 2

demo-nnk: setup
	$(PYTHON) examples/demo_nnk.py

bench: setup
	$(PYTHON) benchmarks/bench_graph.py
	$(PYTHON) benchmarks/bench_metrics.py
	$(PYTHON) benchmarks/bench_tracking.py

clean:
	rm -rf $(BUILD_DIR) torch_geometry/_C*.so torch_geometry/.built .venv/.installed
