# Two commands do all set-up on a fresh machine (python3 + pip + make):
#   make demo   - the main job: sandbox + local Prefect on SQLite + serve, a realistic stream, a report
#   make test   - the test suite (starts a throwaway PostgreSQL on 127.0.0.1 when its binaries exist)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint bench schema clean

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e ".[dev,devkit]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/klaviyo-segment demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# The inner loop: everything but the tests marked slow, in 3 pytest-xdist workers (each with its own Prefect
# test server, sandbox and PostgreSQL); most tests wait on I/O, so 3 workers fit 2 cores.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not slow" -n 3 $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/klaviyo-segment bench

schema:
	$(PY) scripts/gen_klaviyo_schema.py

clean:
	rm -rf $(VENV) .pytest_cache

# Quality gates run by CI before the tests: ruff (lint + format check), mypy on the product, and the import
# contracts. mypy and import-linter read a real, non-editable install of the package, because flows/, tasks/,
# blocks/, bench/ and devkit/ are mapped into klaviyo_segment by package-dir.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	rm -rf .lint && $(BIN)/pip install -q --no-deps --target .lint/pkg . 2>&1 | grep -v "^WARNING: Location" || true
	cd .lint/pkg && ../../$(BIN)/mypy --config-file ../../pyproject.toml -p klaviyo_segment
	cd .lint && PYTHONPATH=pkg ../$(BIN)/lint-imports ../pyproject.toml
