# One-command entry points (see README). VENV can be overridden: make test VENV=/path/to/venv
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU wheel of torch 2.13 must be installed before anything that depends on torch,
# otherwise pip resolves a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: venv demo test lint bench clean gpu-wheels gpu-check

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

venv: $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[test]"

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

# GPU check (Testing/gpu/check.sh). `make gpu-wheels` here, then carry .whl/ to the GPU machine (which has
# CUDA torch and Triton but reaches no package index) and run `make gpu-check` there; GPU_CHECK_DIR sets the
# report folder. The wheels are the versions of this venv, for the GPU machine's Python (GPU_PYTHON);
# numpy and scipy come with CUDA PyTorch images (add them to GPU_WHEELS if not). About 60 MB.
GPU_PYTHON ?= 3.12
GPU_WHEELS ?= monai einops safetensors psutil tqdm nibabel pydicom SimpleITK packaging
GPU_PLATFORMS := manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64
gpu-wheels: venv
	rm -rf .whl/wheels .whl/site && mkdir -p .whl/wheels .whl/sample
	$(BIN)/python -m pip download -q --no-deps --only-binary=:all: --python-version $(GPU_PYTHON) \
		$(addprefix --platform ,$(GPU_PLATFORMS)) -d .whl/wheels \
		$$($(BIN)/python -c "import importlib.metadata as m, sys; \
			print(' '.join(f'{n}=={m.version(n)}' for n in sys.argv[1:]))" $(GPU_WHEELS))
	cp $(SAMPLE)/ct.nii.gz .whl/sample/ct.nii.gz
	du -sh .whl

gpu-check:
	bash Testing/gpu/check.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
