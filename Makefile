# railcc: `make demo` and `make test` install what is missing, then run.
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup setup-test demo test unit emulation bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	@$(VENV)/bin/railcc demo

setup-test:
	@bash scripts/setup.sh test

test: setup-test
	@$(PY) -m pytest tests $(PYTEST_ARGS)

unit: setup-test
	@$(PY) -m pytest tests/unit $(PYTEST_ARGS)

emulation: setup-test
	@$(PY) -m pytest tests/emulation $(PYTEST_ARGS)

bench: setup
	@$(PY) benchmarks/build_fabric.py

clean:
	@if [ -x $(VENV)/bin/railcc ]; then $(VENV)/bin/railcc clean; fi
