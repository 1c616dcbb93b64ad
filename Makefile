# ASiT — two commands set everything up:  `make demo`  and  `make test`.
# Override the torch build with e.g. `make install TORCH=torch` (CUDA wheels) or TORCH="torch==2.5.1".
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
ifeq ($(OS),Windows_NT)
  BIN := $(VENV)/Scripts
else
  BIN := $(VENV)/bin
endif
PY := $(BIN)/python

.PHONY: install demo test test-fast test-compat bench serve test-serve test-container clean
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip wheel
	$(PY) -m pip install "$(TORCH)"
	$(PY) -m pip install -e ".[test,bench]"
	touch $@

demo: install
	$(PY) -m asit_helpers.cli demo --out outputs

test: install
	$(PY) -m pytest

# The non-browser suite in venvs pinned to Colab's runtimes and pyproject's lowest versions (compat/*.txt), after
# checking that installing the package as the notebooks' setup cell does changes none of the pinned packages.
# Venvs live in ~/.cache/asit-compat and are rebuilt only when their pins or pyproject.toml change.
# One env: `make test-compat ENVS=colab-py313`.
test-compat:
	$(PYTHON) compat/run.py $(ENVS)

bench: install
	$(PY) bench/run_all.py

serve: install
	$(PY) -m asit_helpers.cli serve $(CHECKPOINT)

# The server's tests alone, with the load test's figures printed (also saved to bench/results/serve_load.json)
test-serve: install
	$(PY) -m pytest tests/test_serve.py tests/test_serve_live.py tests/test_serve_browser.py -s -q

# The API's container image, built and run with podman (Debian 12 base from debootstrap, cached in
# ~/.cache/asit-container; README "Deploy"). Skips without podman unless ASIT_REQUIRE_CONTAINER=1.
test-container: install
	ASIT_CONTAINER=1 $(PY) -m pytest tests/test_container.py -s -q

clean:
	rm -rf outputs .pytest_cache
