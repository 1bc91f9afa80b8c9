# One-command entry points (see README). VENV can be overridden: make test VENV=/path/to/venv
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU wheel of torch 2.13 must be installed before anything that depends on torch,
# otherwise pip resolves a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: venv demo test lint bench clean web-venv web test-web chromium

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
	$(MAKE) test-web

# The browser front end lives in its own environment: trame-slicer 2 pins slicer-core 5.11 and vtk 9.6,
# while the test environment above tests the Slicer library on the newest slicer-core.
WEB_VENV ?= .venv-web
WEB_BIN := $(WEB_VENV)/bin
$(WEB_BIN)/python:
	$(PYTHON) -m venv $(WEB_VENV)
	$(WEB_BIN)/python -m pip install -q --upgrade pip

web-venv: $(WEB_BIN)/python
	$(WEB_BIN)/python -c "import torch" 2>/dev/null || $(WEB_BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(WEB_BIN)/python -m pip install -q -e ".[web,web-test]"

# Debian's Chromium for the browser tests (Playwright drives it; it never downloads a browser).
chromium:
	command -v chromium >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q chromium; }

# The app on the sample CT: open the printed address in a browser.
web: web-venv
	$(WEB_BIN)/mambamim web --load $(SAMPLE)/ct.nii.gz

# Browser tests of the web app (pixels of the real views), then the Slicer library's own tests on
# trame-slicer's slicer-core: the library the app uses is tested on the release it runs on.
test-web: web-venv chromium
	MAMBAMIM_REQUIRE_WEB_TESTS=1 OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(WEB_BIN)/python -m pytest -q Testing/web
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(WEB_BIN)/python -m pytest -q Testing/slicer_module

lint: venv
	$(BIN)/ruff check Training Testing MambaMIMSegmenter MambaMIMSegmenterWeb

clean:
	rm -rf $(VENV) $(WEB_VENV) .pytest_cache .ruff_cache
