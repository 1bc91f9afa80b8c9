# One-command entry points (see README). VENV can be overridden: make test VENV=/path/to/venv
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU wheel of torch 2.13 must be installed before anything that depends on torch,
# otherwise pip resolves a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: venv demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Naming the installed torch as a requirement keeps pip from replacing it: dynamic-network-architectures
# needs timm -> torchvision, whose newest release would pull the newest (CUDA) torch.
venv: $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[test]" "torch==$$($(BIN)/python -c 'import torch; print(torch.__version__)')"

# The main job: segment the sample CT with the built-in demo package on the CPU, print per-organ Dice.
SAMPLE ?= ../shared/data/ct_abdomen
demo: venv
	mkdir -p out
	$(BIN)/mambamim segment --input $(SAMPLE)/ct.nii.gz --output out/ct_labels.nii.gz --device cpu \
		--reference $(SAMPLE)/ct_labels_btcv13.nii.gz --overwrite

# One intra-op thread per process: the suite runs many tiny models and child processes at once, where
# OpenMP threads only wait on each other (the whole suite is several times faster this way).
test: venv lint
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check Training Testing MambaMIMSegmenter

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
