# The two commands of the README:
#   make app    create/update the environment, serve the dashboard on the embedded demo data
#   make test   create/update the environment (+ Chromium and a local SLURM cluster), run all tests
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch first, so that nothing pulls a multi-GB CUDA build on a CPU machine. Any torch >= 2.4 works;
# override e.g. `make test TORCH_SPEC="torch==2.5.1"`.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.finescale-installed
PORT ?= 5006
ADDRESS ?= 127.0.0.1
PYTEST_ARGS ?=

.PHONY: env system-deps app test test-fast bench clean-env

env: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

# Chromium for the browser tests and Slurm + MariaDB for the real cluster tests (Debian/Ubuntu, root).
system-deps:
	bash scripts/install-system-deps.sh

app: env
	$(PY) -m panel serve app --address $(ADDRESS) --port $(PORT) --allow-websocket-origin=$(ADDRESS):$(PORT) --allow-websocket-origin=localhost:$(PORT)

test: env system-deps
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: env
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

bench: env
	$(PY) -m benchmarks.skill
	$(PY) -m benchmarks.speed

clean-env:
	rm -rf $(VENV)
