# The project's front door. Each target sets itself up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
CONFIG ?= config/gateway.yaml

.PHONY: run test lint bench demo venv clean

$(STAMP): pyproject.toml
	@echo "Creating $(VENV) and installing the gateway with its dev tools (first run, or after pyproject.toml changed: about 2 minutes)..."
	$(PYTHON) -m venv $(VENV)
	@echo "Upgrading pip in $(VENV)..."
	$(BIN)/pip install -q --upgrade pip
	@echo "Installing the gateway, its dev tools and the training libraries (torch, CPU build) into $(VENV) (pip runs quietly; the longest step)..."
	$(BIN)/pip install -q -e '.[dev,train]'
	touch $(STAMP)
	@echo "$(VENV) is ready."

venv: $(STAMP)

# Starts the gateway on its embedded defaults. Without OPENAI_API_KEY the simulated upstream
# is started beside it, so the quick start works offline.
run: venv
	$(BIN)/gateway serve --config $(CONFIG) --simulator auto

# The dashboard's browser test drives Debian's chromium (Playwright never downloads a browser);
# the benchmarks' smoke tests drive wrk.
test: venv
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
	@command -v wrk >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
	$(BIN)/pytest -q

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mypy helm/lint.py helm/gateway/dashboards/generate.py
	$(BIN)/python helm/lint.py
	$(BIN)/python helm/gateway/dashboards/generate.py --check
	$(BIN)/hadolint Dockerfile

# wrk comes from Debian's packages; installed on first use.
bench: venv
	@command -v wrk >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# The whole distillation loop against the simulator: traffic, feedback, export, fine-tune,
# register in shadow, more traffic, eval, a rollout started. Writes to demo-output/.
BACKEND ?= openai
demo: venv
	$(BIN)/python -m exporter.demo --backend $(BACKEND)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
