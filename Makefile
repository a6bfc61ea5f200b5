# Two entry points that set themselves up on a fresh machine: `make demo` and `make test`.
# `make demo` fits a novelty detector on examples/ships/normal with the shipped backbone and scores
# examples/ships/new; the CSV and the HTML report land in runs/demo.
# torch==2.13.0 goes in first (the local CPU wheel), so the package's `torch>=2.1` adds nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.corel-installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml setup.py src/corel/_native/kernels.c src/corel/_native/kernels_impl.h
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: $(STAMP)
	$(BIN)/corel fit examples/ships/normal --out runs/demo/ship.corel
	$(BIN)/corel score runs/demo/ship.corel examples/ships/new --out runs/demo/scores.csv \
		--report runs/demo/report.html --labels examples/ships/labels.csv

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_h0.py

clean:
	rm -rf $(VENV) build src/*.egg-info src/corel/_native/*.so
