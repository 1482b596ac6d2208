# make run / make test install what is missing (uv + the locked environment in .venv), then do their job.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV = $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
SYNCED := $(VENV)/.synced
ARGS ?=
PYTEST_ARGS ?=

.PHONY: install run test lock environment clean-runs

install: $(SYNCED)

# requirements.lock pins every package with its hashes, so a fresh machine gets exactly what CI tested.
$(SYNCED): pyproject.toml requirements.lock
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m uv --version >/dev/null 2>&1 \
	  || $(PYTHON) -m pip install --quiet uv || $(PYTHON) -m pip install --quiet --user uv
	$(UV) venv --quiet --allow-existing --python $(PYTHON) $(VENV)
	$(UV) pip sync --quiet --python $(PY) requirements.lock
	$(UV) pip install --quiet --python $(PY) --no-deps --editable .
	@touch $@

## Train the quickstart experiment (configs/experiment/quickstart.yaml; more overrides: make run ARGS="seed=1")
run: $(SYNCED)
	$(PY) src/train.py experiment=quickstart $(ARGS)

## The test suite
test: $(SYNCED)
	$(PY) -m pytest $(PYTEST_ARGS)

## Re-resolve requirements.lock from pyproject.toml (newest allowed versions), then environment.yml
lock:
	$(UV) pip compile pyproject.toml --group dev --universal --generate-hashes --upgrade \
	  --custom-compile-command "make lock" --quiet -o requirements.lock
	$(MAKE) environment

## Regenerate environment.yml (conda, for GPU nodes) from pyproject.toml and requirements.lock
environment:
	$(PYTHON) scripts/write_environment.py > environment.yml

clean-runs:
	rm -rf runs multirun outputs
