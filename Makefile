# The README's two commands: `make demo` and `make test`. Each creates .venv if missing and installs
# what it needs (uv when it can be had, pip otherwise); re-installs only when pyproject.toml changes.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=
# Let Python cache compiled bytecode: with it off, every Ray worker and CLI subprocess recompiles
# torch and ray from source (tens of seconds each on a small machine).
unexport PYTHONDONTWRITEBYTECODE

install = if [ -x $(BIN)/uv ]; then $(BIN)/uv pip install --python $(BIN)/python $(1); \
          else $(BIN)/python -m pip install $(1); fi

.PHONY: demo test setup setup-dev chromium clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	-$(BIN)/python -m pip install -q uv

$(VENV)/.deps-run: pyproject.toml | $(BIN)/python
	$(call install,-e .)
	touch $@

$(VENV)/.deps-dev: pyproject.toml | $(BIN)/python
	$(call install,-e ".[dev]")
	touch $@ $(VENV)/.deps-run

setup: $(VENV)/.deps-run
setup-dev: $(VENV)/.deps-dev
	@$(MAKE) --no-print-directory chromium

# Headless Chromium for the report's render test (tests/test_report.py): Debian's package, installed only
# when it is missing and we are root; anything else (no apt, no network, not root) is silently skipped.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    { DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
	      { apt-get update -q >/dev/null 2>&1 && \
	        DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1; }; } ; } || true

demo: $(VENV)/.deps-run
	$(BIN)/curate demo

test: $(VENV)/.deps-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf demo-out .pytest_cache
