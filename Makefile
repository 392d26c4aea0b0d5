# The two commands: `make run` serves the tiny built-in model on 127.0.0.1:8080,
# `make test` runs the test suite. Both create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CHECKOV_VENV := .venv-checkov
CHECKOV := $(CHECKOV_VENV)/bin/checkov
# The google provider's schema, offline: the generated bindings of hashicorp/google 7.46.1 (a
# wheel read as data by tests/terraform/test_provider_schema.py, never installed).
PROVIDER_WHEEL := .cache/provider-google/cdktn_provider_google-20.3.1-py3-none-any.whl
TORCH_REPORT := .cache/torch-wheel-report.json
TF_DIR := terraform
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: run test lint clean shellcheck browser bundle wheelhouse wheelhouse-push tf-check tf-state tf-init deploy destroy bench bench-lipsync

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip

# Installs go through uv (the same pins, about 7x faster than pip on a fresh venv: see
# docs/architecture.md); uv does not read pip's configuration, so this machine's find-links, extra
# indexes and constraints (`pip config list`) are handed to it. If uv fails, pip does the install.
UV_VERSION := 0.13.9
PIP_TO_UV := import shlex, sys; flags = {"find-links": "--find-links", "extra-index-url": "--extra-index-url", \
  "index-url": "--index-url", "constraint": "--constraint"}; \
  pairs = [line.strip().split(".", 1)[1].split("=", 1) for line in sys.stdin if "=" in line and "." in line]; \
  print(" ".join(f"{flags[k]} {shlex.quote(v)}" for k, raw in pairs if k in flags for v in shlex.split(shlex.split(raw)[0])))
UV_ARGS = $(shell $(BIN)/pip config list 2>/dev/null | $(BIN)/python -c '$(PIP_TO_UV)')
UV_INSTALL = $(BIN)/uv pip install --python $(BIN)/python --index-strategy unsafe-best-match $(UV_ARGS)

$(BIN)/uv: | $(BIN)/python
	$(BIN)/pip install -q uv==$(UV_VERSION)

$(VENV)/.runtime: requirements.txt requirements-nodeps.txt | $(BIN)/python $(BIN)/uv
	$(UV_INSTALL) -r requirements.txt || $(BIN)/pip install -r requirements.txt
	$(UV_INSTALL) --no-deps -r requirements-nodeps.txt || $(BIN)/pip install --no-deps -r requirements-nodeps.txt
	$(UV_INSTALL) --no-deps -e . || $(BIN)/pip install --no-deps -e .
	touch $@

$(VENV)/.dev: requirements-dev.txt requirements.txt $(VENV)/.runtime
	$(UV_INSTALL) -r requirements-dev.txt || $(BIN)/pip install -r requirements-dev.txt
	touch $@

run: $(VENV)/.runtime
	HOST=$(HOST) PORT=$(PORT) $(BIN)/python -m serve

# LTX-Video: plain diffusers vs exact vs fast mode (full size on CUDA, tiny on a CPU); BENCH_ARGS for sizes.
bench: $(VENV)/.runtime
	$(BIN)/python -m bench.ltx $(BENCH_ARGS)

# LatentSync: one 16-frame chunk with and without DeepCache, plus VAE and Whisper (full size on CUDA).
bench-lipsync: $(VENV)/.runtime
	$(BIN)/python -m bench.latentsync $(BENCH_ARGS)

# The app bundle a VM installs (see docs/deploy.md); prints its path and sha256.
bundle: $(VENV)/.runtime
	$(BIN)/python -m serve.cli.boot bundle --out dist/app.tar.gz

# Chromium and its WebDriver (the page's browser test), and the ffmpeg CLI (upstream LatentSync's
# 25 fps step, which the tests compare our frames with) come from Debian's packages too.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null && command -v ffmpeg >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver ffmpeg >/dev/null; \
	  else echo "chromium or ffmpeg missing (apt-get install chromium chromium-driver ffmpeg); their tests will be skipped"; fi; }

# ShellCheck comes from Debian's packages; installed here when missing and we may (root + apt).
shellcheck:
	@command -v shellcheck >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq shellcheck >/dev/null; \
	  else echo "shellcheck missing (apt-get install shellcheck); its test will be skipped"; fi; }

$(PROVIDER_WHEEL): | $(BIN)/python
	$(BIN)/pip download --quiet --no-deps -d $(dir $(PROVIDER_WHEEL)) cdktn-provider-google==20.3.1

# PyPI's metadata of the torch wheel a VM installs (Python 3.12, manylinux x86_64), without the
# wheel: tests/startup/test_gpu_stack.py reads its CUDA version from it.
$(TORCH_REPORT): requirements.txt | $(BIN)/python
	mkdir -p $(dir $@)
	PIP_FIND_LINKS= $(BIN)/pip install --dry-run --quiet --ignore-installed --no-deps --only-binary=:all: \
	  --platform manylinux_2_28_x86_64 --python-version 3.12 --target $(dir $@)dry-run \
	  --report $@ "$$(grep -E '^torch==' requirements.txt)"

$(CHECKOV): requirements-checkov.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet -r requirements-checkov.txt
	touch $@

test: $(VENV)/.dev $(CHECKOV) $(PROVIDER_WHEEL) $(TORCH_REPORT) shellcheck browser
	CHECKOV=$(CURDIR)/$(CHECKOV) PROVIDER_SCHEMA_WHEEL=$(CURDIR)/$(PROVIDER_WHEEL) TORCH_WHEEL_REPORT=$(CURDIR)/$(TORCH_REPORT) \
	  $(BIN)/python -m pytest $(PYTEST_ARGS)

# The offline Terraform checks alone: fmt, structure (python-hcl2), checkov.
tf-check: $(VENV)/.dev $(CHECKOV) $(PROVIDER_WHEEL)
	terraform fmt -check -recursive $(TF_DIR)
	CHECKOV=$(CURDIR)/$(CHECKOV) PROVIDER_SCHEMA_WHEEL=$(CURDIR)/$(PROVIDER_WHEEL) $(BIN)/python -m pytest tests/terraform $(PYTEST_ARGS)

# The VMs' wheels (Python 3.12, manylinux x86_64), so they install without PyPI: dist/wheelhouse/<hash>.tar,
# then to gs://$(BUCKET)/wheelhouse/ (the weights bucket: terraform output weights_bucket).
wheelhouse: $(VENV)/.runtime
	$(BIN)/python -m serve.cli.wheelhouse build --out dist/wheelhouse

wheelhouse-push: wheelhouse
	@test -n "$(BUCKET)" || { echo "usage: make wheelhouse-push BUCKET=<weights bucket>"; exit 2; }
	$(BIN)/python -m serve.cli.wheelhouse push --out dist/wheelhouse --bucket "$(BUCKET)"

# Real deployments (need a project, gcloud auth and terraform.tfvars; never run in tests).
# The state lives in a GCS bucket that `make tf-state PROJECT=<id>` creates once per project (it
# writes terraform/backend.hcl); local state only when asked for with TF_STATE=local.
tf-state:
	@test -n "$(PROJECT)" || { echo "usage: make tf-state PROJECT=<project id> [TF_STATE_BUCKET=<name>] [TF_STATE_LOCATION=US]"; exit 2; }
	$(TF_DIR)/state-bucket.sh "$(PROJECT)" $(TF_STATE_BUCKET) $(TF_STATE_LOCATION)

tf-init:
ifeq ($(TF_STATE),local)
	printf 'terraform {\n  backend "local" {}\n}\n' > $(TF_DIR)/backend_override.tf
	terraform -chdir=$(TF_DIR) init
else
	@test -f $(TF_DIR)/backend.hcl || { echo "no terraform/backend.hcl: run 'make tf-state PROJECT=<id>' once (shared state in GCS), or pass TF_STATE=local for state on this machine only"; exit 2; }
	rm -f $(TF_DIR)/backend_override.tf
	terraform -chdir=$(TF_DIR) init -backend-config=backend.hcl
endif

deploy: bundle tf-init
	terraform -chdir=$(TF_DIR) apply

destroy:
	terraform -chdir=$(TF_DIR) destroy

lint: $(VENV)/.dev shellcheck
	terraform fmt -check -recursive $(TF_DIR)
	$(BIN)/ruff check serve models tests bench
	$(BIN)/ruff format --check serve models tests bench
	$(BIN)/mypy serve models bench
	shellcheck startup/*.sh terraform/*.sh bench/*.sh

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) outputs dist .cache .pytest_cache .mypy_cache .ruff_cache
