# crr: developer and CI entry points. `make` (or `make help`) lists the targets.
#
# Needs only Python 3.11 (as `python3` on PATH, or PYTHON=...) and make. Two virtual
# environments are kept apart because aws-sam-cli pins an older boto3 than the project:
#   .venv/      the project, editable, with its dev extras (ruff, mypy, pytest, moto, cfn-lint)
#   .sam-venv/  the SAM CLI only

SHELL := /bin/bash
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

PYTHON ?= python3
VENV := .venv
SAM_VENV := .sam-venv
SAM_CLI_VERSION := 1.170.0
SAM := $(SAM_VENV)/bin/sam
# checkov pins its own dependency set, so it gets a third virtual environment.
CHECKOV_VENV := .checkov-venv
CHECKOV_VERSION := 3.3.30
CHECKOV := $(CHECKOV_VENV)/bin/checkov

VENV_STAMP := $(VENV)/.installed
SAM_STAMP := $(SAM_VENV)/.installed-$(SAM_CLI_VERSION)
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION)

# pytest workers (pytest-xdist): `auto` = one per core; PYTEST_WORKERS=0 runs in one process.
PYTEST_WORKERS ?= auto
# Per-test limit (pytest-timeout), so a hung test fails instead of eating CI's time.
PYTEST_TIMEOUT ?= 300
PYTEST_ARGS ?=

# Directories type-checked by mypy, keeping only those that hold Python files, so the
# target never points at something that does not exist.
MYPY_CANDIDATES := layers/crr/crr cli/crr_cli functions bench tests
MYPY_PATHS = $(foreach d,$(MYPY_CANDIDATES),$(if $(shell find $(d) -name '*.py' -print -quit 2>/dev/null),$(d)))

PIP_FLAGS := --quiet --disable-pip-version-check --progress-bar off

# The SAM CLI must not phone home (this network only reaches package registries).
export SAM_CLI_TELEMETRY := 0

# Fails with a clear message unless $(PYTHON) is CPython 3.11, the Lambda runtime's version.
define require_python311
	@found=$$($(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null); \
	if [ "$$found" != "3.11" ]; then \
	  echo "error: crr needs Python 3.11 as '$(PYTHON)', which is: $${found:-missing or not runnable}." >&2; \
	  echo "       Put python3.11 first on PATH, or pass PYTHON=/path/to/python3.11 to make." >&2; \
	  exit 1; fi
endef

# Creates the venv $(1) with $(PYTHON), replacing one built from another Python version.
define make_venv
	@if [ -x $(1)/bin/python ] && ! $(1)/bin/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then \
	  echo "$(1) was not built with Python 3.11: recreating it"; rm -rf $(1); fi
	@[ -x $(1)/bin/python ] || { echo "creating $(1)"; $(PYTHON) -m venv $(1); }
endef

.PHONY: help venv sam-venv checkov-venv lint format build test test-unit test-integration test-e2e demo bench bench-large bench-backfill bench-backfill-workflow bench-two-way bench-scale bench-scale-quick clean distclean

help: ## List the targets (this text)
	@echo "usage: make TARGET   (PYTHON=$(PYTHON), SAM CLI $(SAM_CLI_VERSION))"
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-17s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

venv: $(VENV_STAMP) ## Create .venv and install crr editable with its dev extras
$(VENV_STAMP): pyproject.toml
	$(require_python311)
	$(call make_venv,$(VENV))
	$(VENV)/bin/python -m pip install $(PIP_FLAGS) -e '.[dev]'
	@touch $@

sam-venv: $(SAM_STAMP) ## Create .sam-venv with the pinned SAM CLI
$(SAM_STAMP):
	$(require_python311)
	$(call make_venv,$(SAM_VENV))
	$(SAM_VENV)/bin/python -m pip install $(PIP_FLAGS) 'aws-sam-cli==$(SAM_CLI_VERSION)'
	@rm -f $(SAM_VENV)/.installed-*
	@touch $@

checkov-venv: $(CHECKOV_STAMP) ## Create .checkov-venv with the pinned checkov
$(CHECKOV_STAMP):
	$(require_python311)
	$(call make_venv,$(CHECKOV_VENV))
	$(CHECKOV_VENV)/bin/python -m pip install $(PIP_FLAGS) 'checkov==$(CHECKOV_VERSION)'
	@rm -f $(CHECKOV_VENV)/.installed-*
	@touch $@

# Every linter runs even after one fails, so one run shows all the findings. checkov must report zero
# failed checks; the only skips allowed are written in template.yaml with their reason.
lint: venv sam-venv checkov-venv ## ruff, ruff format --check, mypy, cfn-lint, sam validate --lint, checkov
	@failed=""; \
	run() { echo "+ $$*"; "$$@" || failed="$$failed [$${1##*/} $$2]"; }; \
	run $(VENV)/bin/ruff check .; \
	run $(VENV)/bin/ruff format --check .; \
	run $(VENV)/bin/mypy $(MYPY_PATHS); \
	run $(VENV)/bin/cfn-lint template.yaml; \
	run $(SAM) validate --lint --template-file template.yaml; \
	run $(CHECKOV) -f template.yaml --framework cloudformation --skip-download --compact --quiet; \
	if [ -n "$$failed" ]; then echo "lint failed:$$failed" >&2; exit 1; fi

format: venv ## Apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

build: sam-venv ## sam build (arm64 layer and functions into .aws-sam/build; no container)
	@command -v python3.11 >/dev/null || { \
	  echo "error: sam build needs python3.11 on PATH (the runtime of the layer and functions)" >&2; exit 1; }
	$(SAM) build --template-file template.yaml

# pytest exits 5 when it collects no test: that must fail loudly, never pass.
define run_pytest
	@rc=0; $(VENV)/bin/pytest -n $(PYTEST_WORKERS) --timeout=$(PYTEST_TIMEOUT) $(PYTEST_ARGS) $(1) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests in $(1)" >&2; fi; \
	exit $$rc
endef

test: venv ## Run every test: unit, integration and e2e (PYTEST_WORKERS=0 for serial)
	$(call run_pytest,tests)

test-unit: venv ## Run the unit tests only
	$(call run_pytest,tests/unit)

test-integration: venv ## Run the integration tests (local cloud over HTTP) only
	$(call run_pytest,tests/integration)

test-e2e: venv ## Run the end-to-end demo scenario tests only
	$(call run_pytest,tests/e2e)

demo: venv ## Run the demo against the embedded local cloud
	$(VENV)/bin/python -m crr_cli.demo

bench: venv ## Live replication on the local cloud: latency percentiles, requests per object (BENCH_ARGS='--latency-ms 10,60')
	$(VENV)/bin/python bench/replicate.py $(BENCH_ARGS)

bench-large: venv ## Large-object copy on SeaweedFS: crr vs aws s3 cp vs rclone (1 GiB; BENCH_ARGS='--size-mib 64' to shrink)
	$(VENV)/bin/python -m bench.large $(BENCH_ARGS)

bench-backfill: venv ## Backfill on SeaweedFS: crr vs aws s3 sync vs rclone vs a bare copy loop (BENCH_ARGS='--objects 2000')
	$(VENV)/bin/python -m bench.backfill $(BENCH_ARGS)

bench-backfill-workflow: venv ## The whole backfill state machine on the local cloud (2000 objects)
	$(VENV)/bin/python -m bench.backfill_workflow $(BENCH_ARGS)

bench-two-way: venv ## Two-way sync: replicator writes, nudges and S3 requests per user change
	$(VENV)/bin/python -m bench.two_way $(BENCH_ARGS)

bench-scale: venv ## Scale-out: live path per invocation, backfill at 1-16 ranges, cost per million, projection (~21 min)
	$(VENV)/bin/python -m bench.scale $(BENCH_ARGS)

bench-scale-quick: venv ## bench-scale in under 5 minutes: fewer objects, no 16 ranges, no p99 run
	$(VENV)/bin/python -m bench.scale --quick $(BENCH_ARGS)

clean: ## Remove build output and caches (keeps the venvs)
	rm -rf .aws-sam .pytest_cache .mypy_cache .ruff_cache .hypothesis .local-cloud build dist *.egg-info
	find . -path ./$(VENV) -prune -o -path ./$(SAM_VENV) -prune -o -path ./$(CHECKOV_VENV) -prune -o -path ./.git -prune -o \
	  -type d -name __pycache__ -prune -exec rm -rf {} +

distclean: clean ## clean, and remove the three venvs
	rm -rf $(VENV) $(SAM_VENV) $(CHECKOV_VENV)
