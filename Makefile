# Two set-up commands: `make demo` and `make test`. Everything else is a stage of the pipeline.
PYTHON ?= python3
VENV   ?= .venv
# CPU build by default; GPU users override, e.g. make install TORCH="torch==2.13.0 --index-url <CUDA wheel index>"
TORCH  ?= torch==2.13.0
PY     := $(VENV)/bin/python

# Paths of the pipeline (override on the command line: make train CACHE=/fast/disk/cache)
PROFILE    ?= gta5
RECORDINGS ?= runs/recordings
CACHE      ?= runs/cache
CKPT_DIR   ?= runs/train

.PHONY: install test test-all record import inspect clean-venv

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q

test-all: install
	$(PY) -m pytest -q --runslow

record: install
	$(PY) -m tools.record --profile $(PROFILE) --out $(RECORDINGS)

inspect: install
	$(PY) -m tools.inspect $(RECORDINGS)

clean-venv:
	rm -rf $(VENV)
