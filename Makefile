# Two set-up commands: `make demo` and `make test`. Everything else is a stage of the pipeline.
# Every target calls tools/setup_env.py, the set-up that Windows runs without make (README, Set up): it
# creates $(VENV), installs torch and the project (again only when pyproject.toml changes), then runs the
# target's command in the venv's Python.
ifeq ($(OS),Windows_NT)
PYTHON ?= py -3
else
PYTHON ?= python3
endif
VENV   ?= .venv
# PyTorch: the CPU build (torch==2.13.0) unless TORCH says otherwise, e.g. with CUDA 12.6 (recreates the venv,
# and later targets keep that build):
#   make install TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"
TORCH  ?=
SETUP  := $(PYTHON) tools/setup_env.py --venv $(VENV) $(if $(TORCH),--torch "$(TORCH)")
PYRUN  := $(SETUP) run -m

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
DEMO_ARGS  ?=
BENCH_ARGS ?=

.PHONY: install test test-all demo record record-expert import inspect estimate features train ablate ablate-drive drive eval bench measure-reduction clean-venv

install:
	$(SETUP) install

test:
	$(SETUP) test

test-all:
	$(SETUP) test --runslow

demo:
	$(SETUP) demo $(DEMO_ARGS)

record:
	$(PYRUN) tools.record --game $(PROFILE) --out $(RECORDINGS)

record-expert:
	$(PYRUN) tools.record --game carracing --expert --minutes $(MINUTES) --seed 0 --out $(RECORDINGS)

import:
	$(if $(SRC),,$(error usage: make import SRC='old/new_data old/stuck old/turns'))
	$(PYRUN) tools.import_legacy $(SRC) --out $(RECORDINGS)

inspect:
	$(PYRUN) tools.inspect $(RECORDINGS) --montage $(RECORDINGS)/montage.png

estimate:
	$(PYRUN) extract_features --recordings $(RECORDINGS) --cache $(CACHE) --backbone $(BACKBONE) --weights $(WEIGHTS) $(FEATURE_ARGS) --estimate

features:
	$(PYRUN) extract_features --recordings $(RECORDINGS) --cache $(CACHE) --backbone $(BACKBONE) --weights $(WEIGHTS) $(FEATURE_ARGS)

train:
	$(PYRUN) train_head --cache $(CACHE) --out $(RUN) --steps $(STEPS) $(TRAIN_ARGS)

ablate:
	$(PYRUN) train_head.ablate --cache $(CACHE) --out $(RUN)-ablate --steps $(STEPS) $(TRAIN_ARGS)

ablate-drive:
	$(PYRUN) tools.ablate_drive --out runs/ablate-drive $(ABLATE_ARGS)

drive:
	$(PYRUN) drive --game $(GAME) --ckpt $(CKPT) $(DRIVE_ARGS)

eval:
	$(PYRUN) drive --game carracing --ckpt $(CKPT) --eval --seeds 1000-1009 --latency 0.1 --table $(RUN)/eval.md $(DRIVE_ARGS)

bench:
	$(PYRUN) tools.bench --scale $(BENCH_ARGS)

measure-reduction:
	$(PYRUN) tools.measure_reduction --out runs/reduction

clean-venv:
	$(SETUP) clean
