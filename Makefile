# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Both create .venv when it is missing and install the project into it.
#
# torch: on a machine with an NVIDIA GPU we install the regular torch build;
# without one we pin the CPU build so that set-up never pulls several GB of
# CUDA libraries. Override with e.g. `make test TORCH_SPEC=torch==2.5.1` or
# `TORCH_INDEX_URL=<a CPU wheel index>` where your package index serves CUDA
# wheels by default.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
TORCH_SPEC ?= $(if $(HAS_GPU),torch,torch==2.13.0)
TORCH_INDEX_URL ?=
PIP_TORCH_FLAGS := $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL),)
STAMP := $(VENV)/.installed

DEVICE ?= cuda

.PHONY: demo test setup clean tensorboard gpu-check

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q $(PIP_TORCH_FLAGS) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[test,ray]"
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/amortize bench sphere --name demo-sphere
	$(BIN)/amortize bench qp --policy shipped --groups held-out --name demo-rlqp
	$(BIN)/amortize bench warm-start --checkpoint shipped:mpc --contexts 20 --name demo-warm-start
	$(BIN)/amortize bench ot --checkpoint shipped:digits --contexts 64 --name demo-ot
	$(BIN)/amortize eval shipped:humanoid-sac --episodes 1 --video || \
	  { echo "(no off-screen rendering here: the episode without a video)"; $(BIN)/amortize eval shipped:humanoid-sac --episodes 1; }
	$(BIN)/amortize gap shipped:humanoid-sac

test: $(STAMP)
	$(BIN)/python -m pytest -q

# One short check on a GPU machine (a few minutes): the tests that take a device, then the speed table on it;
# everything goes to runs/gpu-check/. `make gpu-check DEVICE=cpu` runs the same script on the CPU.
gpu-check: $(STAMP)
	@mkdir -p runs/gpu-check
	AMORTIZE_TEST_DEVICE=$(DEVICE) $(BIN)/python -m pytest -q tests/test_device.py --junitxml=runs/gpu-check/tests.xml
	$(BIN)/amortize bench speed --device $(DEVICE) --quick --float32 --root runs/gpu-check --name speed-$(DEVICE) | tee runs/gpu-check/speed-$(DEVICE).txt

tensorboard: $(STAMP)
	$(BIN)/tensorboard --logdir runs

clean:
	rm -rf $(VENV) runs .pytest_cache *.egg-info
