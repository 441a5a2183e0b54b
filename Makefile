# The README's commands. Each target sets up what it needs: a fresh clone only needs python3 >= 3.11
# and the package registries.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.advface-installed
# Use the GPU build of TensorFlow where an NVIDIA driver is present.
EXTRAS := dev,gui$(shell command -v nvidia-smi >/dev/null 2>&1 && echo ,gpu)
SAMPLES := data/samples/.complete
RUN    ?= runs/demo

.PHONY: setup samples demo test lint bench clean

setup: $(STAMP)

$(STAMP): setup.py Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	# The offline face generator's weights. --no-deps: its declared dependencies (torch, torchvision,
	# requests) are not needed, advface reads the weights file itself.
	$(BIN)/python -m pip install --quiet --no-deps gan-face-generate==1.1.1
	touch $@

samples: $(SAMPLES)

$(SAMPLES): $(STAMP) advface/samples.py
	$(BIN)/python -m advface.samples data/samples

demo: $(STAMP) $(SAMPLES)
	$(BIN)/advface demo --out $(RUN)
	# The desktop launcher: a real job on every page, drawn offscreen, screenshots in $(RUN)/gui.
	$(BIN)/python -m advface.gui.tour $(RUN)/gui --report $(RUN)/report.md

test: $(STAMP) $(SAMPLES)
	$(BIN)/ruff check advface networks gui tests benchmarks
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check advface networks gui tests benchmarks

bench: $(STAMP) $(SAMPLES)
	$(BIN)/python benchmarks/embed.py
	$(BIN)/python benchmarks/pgd_vs_art.py

clean:
	rm -rf $(VENV) data/samples runs test-artifacts
