# The two commands: `make run` serves the tiny built-in model on 127.0.0.1:8080,
# `make test` runs the test suite. Both create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: run test lint clean shellcheck bundle

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install -r requirements.txt
	touch $@

$(VENV)/.dev: requirements-dev.txt requirements.txt $(VENV)/.runtime
	$(BIN)/pip install -r requirements-dev.txt
	touch $@

run: $(VENV)/.runtime
	HOST=$(HOST) PORT=$(PORT) $(BIN)/python -m serve

# The app bundle a VM installs (see the README's deploy section); prints its path and sha256.
bundle: $(VENV)/.runtime
	$(BIN)/python -m serve.boot bundle --out dist/app.tar.gz

# ShellCheck comes from Debian's packages; installed here when missing and we may (root + apt).
shellcheck:
	@command -v shellcheck >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq shellcheck >/dev/null; \
	  else echo "shellcheck missing (apt-get install shellcheck); its test will be skipped"; fi; }

test: $(VENV)/.dev shellcheck
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.dev shellcheck
	$(BIN)/ruff check serve models tests
	$(BIN)/ruff format --check serve models tests
	$(BIN)/mypy serve models
	shellcheck startup/*.sh

clean:
	rm -rf $(VENV) outputs dist .pytest_cache .mypy_cache .ruff_cache
