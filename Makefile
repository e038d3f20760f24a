# Two entry points: `make dev` (install, then run a control plane and an edge
# node serving the examples) and `make test` (install, then run every test).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install dev test lint bench examples proto clean

$(STAMP): pyproject.toml setup.py $(wildcard src/edgefn/*/_*.c src/edgefn/*/*/_*.c)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The suite runs on parallel workers (pytest-xdist), one per core by default, each
# test sent to the first free worker; TEST_WORKERS=0 runs it in one process. More
# workers than cores overlap more waiting, at the cost of the timing margins of the
# end-to-end tests.
TEST_WORKERS ?= auto
TEST_ARGS ?=

install: $(STAMP)

dev: $(STAMP)
	$(BIN)/edgefn dev

# The pinned AssemblyScript compiler (src/edgefn/builder/assemblyscript/, one
# definition for the build service, the SDK tests and `edgefn init`), installed
# once per machine into $EDGEFN_BUILDER_HOME.
test: $(STAMP)
	$(BIN)/python -m edgefn.builder setup >/dev/null
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/mypy
	$(BIN)/python scripts/check_proto.py
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist worksteal $(TEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/hot_path.py

examples:
	bash scripts/build_wasm.sh

clean:
	rm -rf $(VENV) .edgefn

proto: $(STAMP)
	$(BIN)/python scripts/gen_proto.py
