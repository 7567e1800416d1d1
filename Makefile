# geneattn: two commands do all set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch: the local CPU wheel (an unpinned torch would pull a multi-GB CUDA build);
# constraints.txt pins the versions the suite was run with (Geneformer tie order depends on numpy/scipy)
TORCH_PIN ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: demo test venv lint bench clean

$(STAMP): pyproject.toml Makefile constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_PIN)"
	$(BIN)/python -m pip install -q -e ".[dev]" -c constraints.txt
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/geneattn run --out results

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_tokenize.py
	$(BIN)/python benchmarks/bench_attention.py
	$(BIN)/python benchmarks/train.py

clean:
	rm -rf $(VENV) results .pytest_cache
