# The two commands (each creates or reuses .venv and installs what it needs):
#   make study   # the whole embedded study through the runner, offline, on a CPU (configs/default.yaml: notebooks 01-06)
#   make test    # the test suite, including the tiny config end to end through the runner
# Others: make tiny (every notebook in seconds), make lint (ruff), make bench,
#   make newknowledge                               # notebook 07 (new knowledge, SliCK) offline (configs/new_knowledge.yaml)
#   make plan CONFIG=configs/paper_mistral7b.yaml   # offline: models, devices, tokens, steps, GPU-hours
#   make gpu-check                                  # GPU self-check on a random Mistral-7B-shaped model (GPU env's python)
#   make run CONFIG=configs/paper_mistral7b.yaml    # paper scale: online (hub access), no HF_HUB_OFFLINE
# Paper scale runs in the GPU environment, not the CPU venv: activate it (conda env create -f
# environment.yml) and pass its interpreter, e.g.  make run PYTHON=python CONFIG=configs/paper_mistral7b.yaml
# Only study, newknowledge, tiny, test and bench set HF_HUB_OFFLINE=1 (an accidental hub id then fails at once).
VENV ?= .venv
PYTHON ?= $(VENV)/bin/python
CONFIG ?= configs/default.yaml
OFFLINE = HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

.PHONY: venv study newknowledge tiny run plan gpu-check test lint bench
venv:
	@./scripts/setup_venv.sh >/dev/null

study: venv
	$(OFFLINE) $(VENV)/bin/python -m kinject_utils.runner -f configs/default.yaml --verbose

newknowledge: venv
	$(OFFLINE) $(VENV)/bin/python -m kinject_utils.runner -f configs/new_knowledge.yaml --verbose

tiny: venv
	$(OFFLINE) $(VENV)/bin/python -m kinject_utils.runner -f configs/tiny.yaml

run: $(if $(filter $(VENV)/bin/python,$(PYTHON)),venv)
	$(PYTHON) -m kinject_utils.runner -f $(CONFIG)

plan: $(if $(filter $(VENV)/bin/python,$(PYTHON)),venv)
	$(PYTHON) -m kinject_utils.runner -f $(CONFIG) --plan

# the GPU self-check runs in the GPU environment's interpreter (the active conda env's `python`), not the CPU venv
GPU_PYTHON ?= python
gpu-check:
	$(GPU_PYTHON) scripts/gpu_check.py

test: venv
	$(VENV)/bin/ruff check kinject_utils tests scripts
	$(OFFLINE) $(VENV)/bin/python -m pytest -q -ra

lint: venv
	$(VENV)/bin/ruff check kinject_utils tests scripts

bench: venv
	$(OFFLINE) $(VENV)/bin/python scripts/bench_scoring.py
	$(OFFLINE) $(VENV)/bin/python scripts/bench_train.py
