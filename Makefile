# The README's two commands: `make run` (the embedded default) and `make test`.
# Both create and fill .venv/ on first use; later calls reinstall only when
# pyproject.toml or this file changed.
SHELL       := /bin/bash
.SHELLFLAGS := -eo pipefail -c
VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PIP   := $(PY) -m pip install -q --disable-pip-version-check
# pip names every local mirror folder that lacks a package; that is not news.
QUIET := 2>&1 | { grep -v 'is ignored: it is neither a file nor a directory' || true; }
export KEDRO_DISABLE_TELEMETRY := true

.PHONY: setup run test lint viz mlflow-ui notebook

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	@echo "installing into $(VENV) (first time: about 3 minutes)"
	# The CPU build of torch lies on local disk; install it before anything asks for torch.
	$(PIP) torch==2.13.0 $(QUIET)
	$(PIP) -e ".[dev]" $(QUIET)
	# --no-deps: colossalai's pins would replace the CPU torch and break kedro-viz;
	# the packages it imports are in pyproject.toml.
	$(PIP) --no-deps colossalai==0.5.0 $(QUIET)
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/kedro run $(ARGS)

test: $(STAMP)
	$(VENV)/bin/pytest $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

viz: $(STAMP)
	$(VENV)/bin/kedro viz build
	@echo "kedro viz: http://127.0.0.1:4141 (Ctrl-C stops it)"
	$(PY) -m http.server 4141 --bind 127.0.0.1 --directory build

mlflow-ui: $(STAMP)
	@$(PY) -c "from opensora_kedro.tracking_runs import print_runs_url; print_runs_url()"
	$(VENV)/bin/kedro mlflow ui

notebook: $(STAMP)
	$(PIP) -e ".[notebook]" $(QUIET)
	$(VENV)/bin/kedro jupyter lab --notebook-dir notebooks
