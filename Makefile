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

.PHONY: book test unit nbval book-strict execute clean help

help:
	@echo "make book   -- install into .venv and build the HTML book into _build/html"
	@echo "make test   -- unit tests + strict nbval over every chapter + strict book build"

$(STAMP): requirements.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements.txt -c constraints.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

book: $(STAMP)
	$(BIN)/jupyter-book build --all -W --keep-going .
	@echo "Book built: open file://$(CURDIR)/_build/html/index.html"

unit: $(STAMP)
	$(BIN)/python -m pytest tests --doctest-modules gated_hmoe

nbval: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider --nbval --nbval-current-env \
		--nbval-sanitize-with nbval_sanitize.cfg --nbval-cell-timeout=600 chapters/

book-strict: book

test: unit nbval book-strict

# Maintainers: re-execute every chapter in place (stored outputs are what nbval compares).
# Stored widget state is dropped and figures re-encoded small (scripts/tidy_notebooks.py).
execute: $(STAMP)
	$(BIN)/jupyter-execute --inplace --timeout=1800 chapters/*.ipynb
	$(BIN)/python scripts/tidy_notebooks.py chapters/*.ipynb

clean:
	rm -rf _build .pytest_cache
