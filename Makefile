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

venv: $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[test]"

demo: venv
	$(BIN)/mambamim info

test: venv lint
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check Training Testing MambaMIMSegmenter

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
