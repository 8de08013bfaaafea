# The two commands (each creates or reuses .venv and installs what it needs):
#   make study   # the whole embedded study through the runner, offline, on a CPU (configs/default.yaml)
#   make test    # the test suite, including the tiny config end to end through the runner
# Others: make tiny (every notebook in seconds), make run CONFIG=configs/paper_mistral7b.yaml
VENV ?= .venv
CONFIG ?= configs/default.yaml
export HF_HUB_OFFLINE ?= 1

.PHONY: venv study tiny run test bench
venv:
	@./scripts/setup_venv.sh >/dev/null

study: venv
	$(VENV)/bin/python -m kinject_utils.runner -f configs/default.yaml --verbose

tiny: venv
	$(VENV)/bin/python -m kinject_utils.runner -f configs/tiny.yaml

run: venv
	$(VENV)/bin/python -m kinject_utils.runner -f $(CONFIG)

test: venv
	$(VENV)/bin/python -m pytest -q -ra

bench: venv
	$(VENV)/bin/python scripts/bench_scoring.py
	$(VENV)/bin/python scripts/bench_train.py
