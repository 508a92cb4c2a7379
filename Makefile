# gated-hmoe: the README's two commands are `make book` and `make test`.
# Everything runs in a local virtual environment (.venv) built from the exact pins.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# Heavy sweeps are cached on disk, keyed by configuration (gated_hmoe.experiments).
export GATED_HMOE_CACHE ?= $(CURDIR)/.cache/gated_hmoe
export JAX_PLATFORMS ?= cpu
export PYDEVD_DISABLE_FILE_VALIDATION = 1

.PHONY: book test test-fast unit nbval book-strict html assets chromium execute clean help

help:
	@echo "make book   -- install into .venv and build the HTML book into _build/html from the"
	@echo "               outputs stored in the chapters (executes nothing)"
	@echo "make test   -- unit tests + strict nbval over every chapter + strict book build +"
	@echo "               the built-HTML tests (no other host; every page in headless Chromium)"

$(STAMP): requirements.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements.txt -c constraints.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

# MathJax, RequireJS and the widget manager, served with the HTML (no CDN at view time):
# fetched once from the npm registry into _npm/ (scripts/fetch_web_assets.py) and copied
# into the HTML by _ext/html_assets.py.
assets:
	$(PYTHON) scripts/fetch_web_assets.py

book: $(STAMP) assets
	$(BIN)/jupyter-book build --all -W --keep-going .
	@echo "Book built: open file://$(CURDIR)/_build/html/index.html (works offline)"

unit: $(STAMP)
	$(BIN)/python -m pytest tests --ignore=tests/html --doctest-modules gated_hmoe --durations=20

# For development: the unit tests and doctests without the slow ones (no chapters, no book).
test-fast: $(STAMP)
	$(BIN)/python -m pytest tests --ignore=tests/html --doctest-modules gated_hmoe -m "not slow" \
		--durations=10

nbval: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider --nbval --nbval-current-env \
		--nbval-sanitize-with nbval_sanitize.cfg --nbval-cell-timeout=600 chapters/

book-strict: book

# The built book: no page loads anything from another host, and every page opened in
# headless Chromium with the network off typesets its math, loads its images, logs no
# error and its static explorers respond (screenshots in _build/screenshots/).
html: $(STAMP) book-strict chromium
	GATED_HMOE_HTML_REQUIRED=1 $(BIN)/python -m pytest -p no:cacheprovider tests/html

chromium:
	@if [ -n "$$CHROMIUM" ] || command -v chromium >/dev/null 2>&1; then :; else \
		echo "make test: the browser test needs Chromium, which is not installed."; \
		echo "  Debian/Ubuntu (as root): apt-get update && apt-get install -y chromium"; \
		echo "  or set CHROMIUM=/path/to/chromium-or-chrome"; \
		exit 1; fi

test: chromium unit nbval book-strict html

# Maintainers: re-execute every chapter in place (stored outputs are what nbval compares).
# Stored widget state is dropped and figures re-encoded small (scripts/tidy_notebooks.py).
execute: $(STAMP)
	$(BIN)/jupyter-execute --inplace --timeout=1800 chapters/*.ipynb
	$(BIN)/python scripts/tidy_notebooks.py chapters/*.ipynb

clean:
	rm -rf _build .pytest_cache _npm
