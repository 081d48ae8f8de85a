# One command each for a fresh machine: `make demo`, `make test`.
# Both create .venv and install the project into it first.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARGS   ?=

.PHONY: install demo test property lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Agents elect a leader through a local Kafka broker while the demo kills them.
demo: $(STAMP)
	$(BIN)/nccoord demo $(ARGS)

## The whole test suite; starts its own Kafka broker (and a three-broker cluster).
test: $(STAMP)
	$(BIN)/pytest $(ARGS)

## Only the hypothesis property tests of the protocol.
property: $(STAMP)
	$(BIN)/pytest -m property $(ARGS)

## The election benchmarks beside ZooKeeper and Kafka groups, quick mode.
bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m benchmarks.run --quick $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

.PHONY: docs
## The documentation site, built strictly (a warning fails it) into build/site.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
