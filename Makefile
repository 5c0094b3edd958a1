# make bench [DEVICE=host] [MODELS=resnet56,lenet5] [OUT=results/host]  |  make paper [DEVICE=host]
# make test (the suite without the slow-marked cases: heavy zoo models, long fuzzing)  |  make test-all (CI)  |  make docs
# The first use creates .venv and installs the package with its test tools. TORCH_SPEC pins the CPU build of
# torch that CI uses; override it on a GPU machine (make bench TORCH_SPEC=torch) to keep your own build.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
DEVICE ?= host
MODELS ?=
VARIANTS ?= first
OUT ?=
PYTEST_ARGS ?=

STAMP := $(VENV)/.installed
# what runs on a Jetson (JetPack 5.1: Python 3.8, no torch)
DEVICE_SIDE := harness/__init__.py harness/errors.py harness/energy.py harness/memory.py harness/memory_child.py harness/doctor.py harness/profiles.py harness/backends harness/envinfo.py \
	harness/timing.py harness/estimators.py harness/onnx_io.py harness/results.py harness/graph_stats.py harness/cli.py harness/commands \
	harness/cost/__init__.py harness/cost/calibrate.py harness/measure.py harness/outputs.py harness/precision.py harness/remote.py \
	harness/geometry.py harness/cost/lut.py harness/cost/model.py harness/layer_profile.py

.PHONY: bench paper test test-all lint setup clean docs

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q "$(TORCH_SPEC)"
	$(VENV)/bin/python -m pip install -q -e ".[torch,dev,docs]"
	touch $(STAMP)

setup: $(STAMP)

bench: $(STAMP)
	$(VENV)/bin/harness bench --device $(DEVICE) --variants $(VARIANTS) $(if $(MODELS),--models $(MODELS)) $(if $(OUT),--out $(OUT))

paper: $(STAMP)
	$(VENV)/bin/harness suite papers --device $(DEVICE) $(if $(OUT),--out $(OUT))

test: $(STAMP)
	$(VENV)/bin/python -m pytest -m "not slow" $(PYTEST_ARGS)

test-all: $(STAMP)
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict

lint: $(STAMP)
	$(VENV)/bin/ruff check harness tests
	$(VENV)/bin/ruff format --check --line-length 100 --quiet .
	$(VENV)/bin/vermin -t=3.8- --no-tips --violations --eval-annotations $(DEVICE_SIDE)

clean:
	rm -rf $(VENV) results .pytest_cache site
