PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: serve test lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("stripe-inbox needs Python 3.11 or newer") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

serve: $(VENV)/.installed
	$(BIN)/stripe-inbox serve

test: $(VENV)/.installed
	$(BIN)/ruff check src tests examples bench
	$(BIN)/pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests examples bench
	$(BIN)/ruff format --check src tests examples bench

bench: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	@command -v wrk >/dev/null || { echo "bench needs wrk: apt-get install wrk"; exit 1; }
	$(BIN)/python bench/classify_bench.py
	$(BIN)/python bench/store_bench.py
	$(BIN)/python bench/ingress_bench.py --connections 4 16 64
	$(BIN)/python bench/mcp_bench.py

clean:
	rm -rf $(VENV) .pytest_cache
