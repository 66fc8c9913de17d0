# The README's two commands:  `make`  (set up from nothing + main job)  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The real datasets sit beside the checkout in development and CI; the main job also works without them.
SBTS_DATA_DIR ?= $(wildcard $(abspath ../shared/data))
export SBTS_DATA_DIR
RUN_DIR := runs/japanesevowels-sbt-$(shell date +%Y%m%d-%H%M%S)

.PHONY: all setup demo test
all: demo

setup: $(VENV)/.installed

# CPU torch 2.13.0 first; an unpinned torch would pull a multi-GB CUDA build. Where no local CPU wheel
# is configured for pip, point TORCH_INDEX at a CPU wheel index, e.g.
#   make TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m sbts.baselines.classification  # aeon's numba kernels compiled once, cached on disk
	touch $@

# Main job: train and evaluate a sparse binary Transformer (density 0.5) on JapaneseVowels, report its size
# (paper and honest accounting), export it as a compact .sbts file and predict the test set with the
# torch-free runtime, then export it as C99 source for a microcontroller (its flash and RAM printed).
demo: setup
	$(BIN)/sbts train classification --data UEA/JapaneseVowels --model sbt --density 0.5 --seed 0 --epochs 100 --out $(RUN_DIR)
	$(BIN)/sbts evaluate $(RUN_DIR)
	$(BIN)/sbts summary $(RUN_DIR) --accounting paper
	$(BIN)/sbts summary $(RUN_DIR) --accounting honest
	$(BIN)/sbts export $(RUN_DIR) -o $(RUN_DIR)/model.sbts
	$(BIN)/sbts predict $(RUN_DIR)/model.sbts -o $(RUN_DIR)/test_predictions.csv \
	  --input "$$($(BIN)/python -c 'from sbts.data import resolve_classification as r; print(r("UEA/JapaneseVowels")[1])')"
	$(BIN)/sbts export $(RUN_DIR)/model.sbts --format c --c-weights mask -o $(RUN_DIR)/c

test: setup
	$(BIN)/python -m pytest -q
