# Two set-up commands: `make demo` and `make test`. Everything else is a stage of the pipeline.
PYTHON ?= python3
VENV   ?= .venv
# CPU build by default. GPU users override it, e.g. on Windows/Linux with CUDA 12.6:
#   make install TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"
TORCH  ?= torch==2.13.0
PY     := $(VENV)/bin/python

# Paths and settings of the pipeline; override on the command line: make train CACHE=/fast/cache STEPS=5000
PROFILE    ?= gta5
RECORDINGS ?= runs/recordings
CACHE      ?= runs/cache
RUN        ?= runs/train
BACKBONE   ?= dinov2_vitb14_reg
WEIGHTS    ?= official
FEATURE_ARGS ?=
STEPS      ?= 2000
TRAIN_ARGS ?=
GAME       ?= carracing
CKPT       ?= $(RUN)/best.pt
DRIVE_ARGS ?=
MINUTES    ?= 10
ABLATE_ARGS ?=
BENCH_ARGS ?=

.PHONY: install test test-all demo record record-expert import inspect features train ablate ablate-drive drive eval bench clean-venv

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q

test-all: install
	$(PY) -m pytest -q --runslow

demo: install
	$(PY) -m tools.demo

record: install
	$(PY) -m tools.record --profile $(PROFILE) --out $(RECORDINGS)

record-expert: install
	$(PY) -m tools.record --game carracing --expert --minutes $(MINUTES) --seed 0 --out $(RECORDINGS)

import: install
	@test -n "$(SRC)" || { echo "usage: make import SRC='old/new_data old/stuck old/turns'"; exit 2; }
	$(PY) -m tools.import_legacy $(SRC) --out $(RECORDINGS)

inspect: install
	$(PY) -m tools.inspect $(RECORDINGS) --montage $(RECORDINGS)/montage.png

features: install
	$(PY) -m extract_features --recordings $(RECORDINGS) --cache $(CACHE) --backbone $(BACKBONE) --weights $(WEIGHTS) $(FEATURE_ARGS)

train: install
	$(PY) -m train_head --cache $(CACHE) --out $(RUN) --steps $(STEPS) $(TRAIN_ARGS)

ablate: install
	$(PY) -m train_head.ablate --cache $(CACHE) --out $(RUN)-ablate --steps $(STEPS) $(TRAIN_ARGS)

ablate-drive: install
	$(PY) -m tools.ablate_drive --out runs/ablate-drive $(ABLATE_ARGS)

drive: install
	$(PY) -m drive --game $(GAME) --ckpt $(CKPT) $(DRIVE_ARGS)

eval: install
	$(PY) -m drive --game carracing --ckpt $(CKPT) --eval --seeds 1000-1009 --latency 0.1 --table $(RUN)/eval.md $(DRIVE_ARGS)

bench: install
	$(PY) -m tools.bench --scale $(BENCH_ARGS)

clean-venv:
	rm -rf $(VENV)
