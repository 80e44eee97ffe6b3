# Every target bootstraps .venv on its own: a fresh clone needs nothing else.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo-run

.PHONY: venv test test-all demo bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and exactly: the CPU wheel; letting another package pull torch brings a CUDA build
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

test-all: $(STAMP)
	$(BIN)/python -m pytest -m ''

demo: $(STAMP)
	$(BIN)/python scripts/demo.py --dir $(DEMO_DIR)

bench: $(STAMP)
	$(BIN)/python benchmarks/extract.py --json
	$(BIN)/python benchmarks/evaluate.py --json

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
