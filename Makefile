# Every target builds .venv from the project's own files first, so a fresh
# clone needs nothing but Python 3.11+ and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test soak bench lint clean

# The package is installed as links to this checkout ("strict" editable
# mode: a plain path that mypy and other tools follow, unlike the default
# import hook). A module added or removed changes the folder: relink then.
$(STAMP): pyproject.toml icanhazmodel
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,lint]' --config-settings editable_mode=strict
	touch $(STAMP)

## demo: download the sample model from a local S3 server into ./ptms (no AWS account)
demo: $(STAMP)
	$(BIN)/python tests/demo.py

## test: run the test suite against local S3 servers, then again with every run on 4 worker processes
# Four pytest workers on any machine: most tests wait on a server, a proxy or
# a subprocess; worksteal keeps the slow ones from queueing behind each other.
TEST_WORKERS ?= 4
# The suite starts hundreds of CLI and worker processes: compile the package
# once, here and where its links are (an editable install is not compiled,
# and PYTHONDONTWRITEBYTECODE may be set).
test: $(STAMP)
	$(BIN)/python -m compileall -q icanhazmodel build
	@# The new __pycache__ changes the package folder's mtime, which the
	@# stamp watches for added modules: the install is current, say so.
	touch $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal
	ICANHAZMODEL_TEST_PROCESSES=4 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal

## soak: thousands of objects through a flaky proxy (slow; not part of `make test`)
soak: $(STAMP)
	$(BIN)/python -m pytest -m soak -s tests/test_soak.py

## bench: icanhazmodel vs aws-cli and s5cmd on a local s3rver (BENCH_ARGS="--scale 0.1" for a quick run)
BENCH_VENV := .venv-bench
$(BENCH_VENV)/.installed: tests/bench/requirements.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet -r tests/bench/requirements.txt
	touch $@

tests/bench/node_modules/.installed: tests/bench/package.json tests/bench/package-lock.json
	cd tests/bench && npm ci --no-audit --no-fund --loglevel=error
	touch $@

bench: $(STAMP) $(BENCH_VENV)/.installed tests/bench/node_modules/.installed
	@# Compiled, as an installed wheel is: with PYTHONDONTWRITEBYTECODE set, an
	@# editable install would compile every module again in every run. Its
	@# links under build/ are what is imported, so compiled there too.
	$(BIN)/python -m compileall -q icanhazmodel build
	touch $(STAMP)
	$(BIN)/python tests/bench/bench.py $(BENCH_ARGS)

## lint: ruff and mypy --strict
lint: $(STAMP)
	$(BIN)/ruff check icanhazmodel tests
	$(BIN)/ruff format --check icanhazmodel tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(BENCH_VENV) build tests/bench/node_modules ptms .pytest_cache .mypy_cache .ruff_cache
