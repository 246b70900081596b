# Two entry points: `make demo` and `make test`. Both create .venv if it is missing and install
# the package into it; the install is redone only when pyproject.toml or this file changes.
PYTHON ?= python3
VENV ?= .venv
# torch 2.13.0 is the CPU build this project is developed against; any torch >= 2.5 works
# (override, e.g. `make demo TORCH_SPEC='torch>=2.5'` on a machine with CUDA).
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
STAMP := $(VENV)/.samadapt-installed
TEST_STAMP := $(VENV)/.samadapt-test-installed
PYTEST_ARGS ?=

.PHONY: demo test install install-test bench clean

demo: $(STAMP)
	$(VENV)/bin/samadapt demo

test: $(TEST_STAMP)
	$(PY) -m ruff check samadapt tests benchmarks
	$(PY) -m pytest $(PYTEST_ARGS)

install: $(STAMP)

$(VENV)/bin/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "samadapt needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml Makefile | $(VENV)/bin/python
	$(PIP) install --upgrade pip
	$(PIP) install "$(TORCH_SPEC)"
	$(PIP) install -e .
	touch $@

# Test-only references: Meta's SAM2 code (PyPI `sam2`, an unofficial upload) and `segment-anything`
# build the official architectures so checkpoint conversion can be checked against them. They are
# installed without their dependencies because both want torchvision, which samadapt does not need.
$(TEST_STAMP): $(STAMP) requirements-test-reference.txt requirements-nnunet.txt
	$(PIP) install -e ".[test]"
	$(PIP) install --no-deps "nnunetv2==2.8.1" "dynamic-network-architectures==0.4.4"
	$(PIP) install "$(TORCH_SPEC)" -r requirements-nnunet.txt
	SAM2_BUILD_CUDA=0 $(PIP) install --no-deps --no-build-isolation -r requirements-test-reference.txt
	$(PIP) install "hydra-core>=1.3,<1.4" "iopath>=0.1.10" "omegaconf>=2.3,<2.4" "antlr4-python3-runtime==4.9.3"
	touch $@

bench: $(TEST_STAMP)
	$(PY) -m benchmarks.run

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
