# Everything a fresh clone needs: `make run` and `make test` create .venv and install dlrun into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench clean gpu-wheels gpu-check

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,reference,tensorboard,onnx,mpi,sweep,cpu-kernels,text,images]'
	touch $@

run: $(BIN)/.installed
	$(BIN)/dlrun train configs/quickstart.yaml

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q

lint: $(BIN)/.installed
	$(BIN)/ruff check .

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/run.py

# The GPU machine is offline and lacks pydantic (and maybe scipy, ml_dtypes, pytest): download
# their wheels here (x86_64, CPython 3.11 and 3.12), then `make gpu-check` there installs the
# missing ones into .gpu-site (its own CuPy, PyTorch and numpy stay in charge) and runs the check.
GPU_WHEELS ?= .gpu-wheels
GPU_SITE ?= .gpu-site
GPU_PKGS := 'pydantic>=2.6' pydantic-core annotated-types typing-extensions typing-inspection \
	'ml_dtypes>=0.4' 'pytest>=8' iniconfig pluggy packaging pygments
# scipy (35 MB a wheel) for one Python only: the machine takes at most 64 MiB of ignored files
GPU_SCIPY_PY ?= 3.12

gpu-wheels:
	for v in 3.11 3.12; do \
	  $(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --implementation cp \
	    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
	    --platform manylinux_2_28_x86_64 --platform any --python-version $$v \
	    -d $(GPU_WHEELS) $(GPU_PKGS) || exit 1; \
	done
	rm -f $(GPU_WHEELS)/scipy-*.whl
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --implementation cp \
	  --platform manylinux_2_28_x86_64 --python-version $(GPU_SCIPY_PY) -d $(GPU_WHEELS) \
	  'scipy>=1.11'
	du -sh $(GPU_WHEELS)

gpu-check:
	python3 benchmarks/gpu_check.py --install $(GPU_WHEELS) $(GPU_SITE)
	PYTHONPATH=$(GPU_SITE):$(CURDIR) python3 benchmarks/gpu_check.py --out "$${OUT:-gpu-check-out}"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
