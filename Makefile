# Two commands do all the set-up on a fresh machine:
#   make train   create .venv if needed, then train the embedded default (DPO, tiny model, CPU)
#   make test    create .venv if needed, then run the whole test suite
#
# torch is installed first and pinned, so that no other package pulls a build of its own.
# The default is the CPU wheel; GPU users choose theirs, e.g.
#   make train TORCH_SPEC="torch==2.8.0" TORCH_INDEX=https://download.pytorch.org/whl/cu128

PYTHON ?= python3.11
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
EXTRAS ?= dev,wandb,slurm,sweep
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv train test bench gpu-check clean

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

train: $(STAMP)
	$(PY) -m rlhf.train $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# Every section of the benchmark, each written to benchmarks/<section>.json, then BENCHMARKS.md
# rendered from those records (python -m rlhf.bench; ARGS="--only data_large" runs one section).
bench: $(STAMP)
	$(PY) -m rlhf.bench $(ARGS)

# On a GPU host: every GPU path of the platform on a model it builds (python -m rlhf.gpu_check;
# ARGS="--list" prints the plan, ARGS="--only fsdp,zero3" runs some).
gpu-check: $(STAMP)
	$(PY) -m rlhf.gpu_check $(ARGS)

clean:
	rm -rf $(VENV) outputs multirun .cache
