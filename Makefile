# One-command entry points (see README). VENV can be overridden: make test VENV=/path/to/venv
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU wheel of torch 2.13 must be installed before anything that depends on torch,
# otherwise pip resolves a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0

# Python 3.12 is what Slicer 5.10+ embeds (PythonSlicer). Override where it lives elsewhere.
PYTHON312 ?= /root/.pyenv/versions/3.12.1/bin/python
VENV312 ?= .venv312

# Offscreen rendering tests (Testing/slicer_module/test_rendering.py): VTK renders through EGL with
# Mesa's software driver; installed when missing (Debian packages, as root).
EGL_PACKAGES := libegl1 libegl-mesa0 libgl1-mesa-dri libgl1

.PHONY: venv venv312 egl demo test test-fast test312 lint bench clean web-venv web test-web chromium gpu-wheels gpu-check triton-site

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Naming the installed torch as a requirement keeps pip from replacing it: dynamic-network-architectures
# needs timm -> torchvision, whose newest release would pull the newest (CUDA) torch.
venv: $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[test]" "torch==$$($(BIN)/python -c 'import torch; print(torch.__version__)')"

# The Qt-free module library and the engine's torch-free parts on Python 3.12 (no torch there: no CPU
# build for 3.12 is reachable from the registries here), see Testing/requirements-py312.txt.
$(VENV312)/bin/python:
	$(PYTHON312) -m venv $(VENV312)
	$(VENV312)/bin/python -m pip install -q --upgrade pip

venv312: $(VENV312)/bin/python
	$(VENV312)/bin/python -m pip install -q -r Testing/requirements-py312.txt
	$(VENV312)/bin/python -m pip install -q --no-deps -e .

# The library's tests on 3.12 send the engine's child processes to the main venv's Python (with torch).
test312: venv
	@if [ -x "$(PYTHON312)" ]; then \
		$(MAKE) venv312 && \
		MAMBAMIM_TEST_ENGINE_PYTHON="$(abspath $(BIN)/python)" OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} \
		$(VENV312)/bin/python -m pytest -q -p no:cacheprovider -m "not slow" \
			--ignore=Testing/slicer_module/test_rendering.py Testing/slicer_module Testing/test_python312_smoke.py; \
	else \
		echo "Python 3.12 not found at $(PYTHON312) (set PYTHON312=...): Python 3.12 tests not run"; \
	fi

# The main job: segment the sample CT with the built-in demo package on the CPU, print per-organ Dice.
SAMPLE ?= ../shared/data/ct_abdomen
demo: venv
	mkdir -p out
	$(BIN)/mambamim segment --input $(SAMPLE)/ct.nii.gz --output out/ct_labels.nii.gz --device cpu \
		--reference $(SAMPLE)/ct_labels_btcv13.nii.gz --overwrite

egl:
	@dpkg -s $(EGL_PACKAGES) >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(EGL_PACKAGES); \
		else \
			echo "EGL/Mesa packages missing ($(EGL_PACKAGES)): the rendering tests will be skipped"; \
		fi; }

# Triton for the interpreter test's child process only (Testing/ops/test_selective_scan_triton.py): installed in
# the test venv, torch would import it in every process, and its LLVM crashes beside Mesa's (rendering tests).
TRITON_SITE ?= .triton-site
triton-site: venv
	@[ -d $(TRITON_SITE)/triton ] || $(BIN)/python -m pip install -q --no-deps --target $(TRITON_SITE) "triton>=3.0"

# One intra-op thread per process: the suite runs many tiny models and child processes at once, where
# OpenMP threads only wait on each other (the whole suite is several times faster this way).
test: venv lint egl triton-site
	MAMBAMIM_TRITON_SITE=$(abspath $(TRITON_SITE)) OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/python -m pytest -q
	$(MAKE) test312
	$(MAKE) test-web

# The inner loop: the main environment's tests without those marked slow (over 10 s each).
test-fast: venv triton-site
	MAMBAMIM_TRITON_SITE=$(abspath $(TRITON_SITE)) OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/python -m pytest -q -m "not slow"

# The browser front end lives in its own environment: trame-slicer 2 pins slicer-core 5.11 and vtk 9.6,
# while the test environment above tests the Slicer library on the newest slicer-core.
WEB_VENV ?= .venv-web
WEB_BIN := $(WEB_VENV)/bin
$(WEB_BIN)/python:
	$(PYTHON) -m venv $(WEB_VENV)
	$(WEB_BIN)/python -m pip install -q --upgrade pip

web-venv: $(WEB_BIN)/python
	$(WEB_BIN)/python -c "import torch" 2>/dev/null || $(WEB_BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(WEB_BIN)/python -m pip install -q -e ".[web,web-test]" "torch==$$($(WEB_BIN)/python -c 'import torch; print(torch.__version__)')"

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

# GPU check (Testing/gpu/check.sh). `make gpu-wheels` here, then carry .whl/ to the GPU machine (which has
# CUDA torch and Triton but reaches no package index) and run `make gpu-check` there; GPU_CHECK_DIR sets the
# report folder. The wheels are the versions of this venv, for the GPU machine's Python (GPU_PYTHON);
# numpy and scipy come with CUDA PyTorch images (add them to GPU_WHEELS if not). About 60 MB.
GPU_PYTHON ?= 3.12
GPU_WHEELS ?= monai einops safetensors psutil tqdm nibabel pydicom SimpleITK packaging \
	jsonschema jsonschema-specifications referencing rpds-py attrs typing-extensions
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
	rm -rf $(VENV) $(VENV312) $(WEB_VENV) $(TRITON_SITE) .pytest_cache .ruff_cache
