# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test install install-test system-deps node-deps lint bench wheel clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Developers get an editable install; the image and tests/test_packaging.py use the wheel.
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test system-deps node-deps

# Chromium and Arabic fonts for the browser tests, promtool for the alert rules (Debian packages; root only).
system-deps:
	@scripts/install-system-deps.sh

# axe-core for the accessibility test (tests/test_web_accessibility.py reads
# node_modules/axe-core/axe.min.js from disk: nothing downloads while tests run).
# The version is pinned in package.json and package-lock.json; `npm ci` installs exactly it.
AXE := node_modules/axe-core/axe.min.js
$(AXE): package.json package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "note: npm not installed; the accessibility test will be skipped (apt-get install npm)" >&2; exit 0; }; \
	  npm ci --no-audit --no-fund --silent && touch $@

node-deps: $(AXE)

demo: install
	$(BIN)/nashra demo

# Two processes, a test file each at a time (pytest-xdist): every process has its own
# PostgreSQL database and Redis key prefix (tests/conftest.py), so files do not meet.
# PYTEST_WORKERS=0 runs them in this process (e.g. with -x or a debugger).
PYTEST_WORKERS ?= 2
test: install-test
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: install-test
	$(BIN)/ruff check service tests bench

# Each benchmark prints its figures and its ratio to a reference measured in the same run.
bench: install-test
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# The wheel a deployment installs (templates and migrations inside the package).
# (build/ is removed first: setuptools would otherwise ship a stale copy of a deleted module.)
wheel: $(BIN)/python
	rm -rf build dist/nashra-*.whl
	$(BIN)/pip wheel --quiet --no-deps --wheel-dir dist .

clean:
	rm -rf $(VENV) build dist var/*.sqlite3* var/outbox
