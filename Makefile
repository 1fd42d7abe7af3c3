# One entry point for newcomers, CI and pre-commit alike.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test lint format typecheck unit demo proto bench clean constraints

# constraints.txt pins every package to the version CI tests with; the image installs the same.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check ftpsource tests $(wildcard bench)
	$(BIN)/ruff format --check ftpsource tests $(wildcard bench)
	$(BIN)/mypy
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check ftpsource tests $(wildcard bench)
	$(BIN)/ruff format --check ftpsource tests $(wildcard bench)

format: $(STAMP)
	$(BIN)/ruff check --fix ftpsource tests $(wildcard bench)
	$(BIN)/ruff format ftpsource tests $(wildcard bench)

typecheck: $(STAMP)
	$(BIN)/mypy

demo: $(STAMP)
	$(BIN)/ftpsource demo $(DEMO_ARGS)

# Regenerate the gRPC stubs; tests/unit/test_proto_fresh.py fails when they are stale.
proto: $(STAMP)
	$(BIN)/python -m ftpsource._proto.generate

bench: $(STAMP)
	$(BIN)/python -m bench.run

# Re-pin after a dependency changed in pyproject.toml: install it into the venv, then run this.
constraints: $(STAMP)
	{ sed -n '/^#/p' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache build *.egg-info
