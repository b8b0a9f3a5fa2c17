PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LINTED := src tests examples bench mcpb
# The bundle tests need the MCPB CLI from npm; where npm is missing they skip (in CI they must run, and fail).
NODE_TOOLS := $(if $(shell command -v npm),node_modules/.installed)

.PHONY: serve test lint bench dist mcpb clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("stripe-inbox needs Python 3.11 or newer") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

serve: $(VENV)/.installed
	$(BIN)/stripe-inbox serve

test: $(VENV)/.installed $(NODE_TOOLS)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/pytest -n 2 --dist loadfile

lint: $(VENV)/.installed
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

# The wheel and sdist in dist/, checked as PyPI will check them.
dist: $(VENV)/.installed
	rm -f dist/stripe_inbox-*
	$(BIN)/python -m build --outdir dist .
	$(BIN)/twine check --strict dist/stripe_inbox-*

# dist/stripe-inbox.mcpb, the Claude Desktop bundle, validated and packed by the official MCPB CLI.
mcpb: $(VENV)/.installed node_modules/.installed
	$(BIN)/python mcpb/build.py

bench: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	@command -v wrk >/dev/null || { echo "bench needs wrk: apt-get install wrk"; exit 1; }
	$(BIN)/python bench/classify_bench.py
	$(BIN)/python bench/store_bench.py
	$(BIN)/python bench/ingress_bench.py --connections 4 16 64
	$(BIN)/python bench/mcp_bench.py

clean:
	rm -rf $(VENV) .pytest_cache node_modules build dist
