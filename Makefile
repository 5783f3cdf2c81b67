# adrank developer commands. `make demo` and `make test` are the README quick start.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SHARED_DATA := $(abspath ../shared/data)
ADRANK_DATA_DIR ?= $(if $(wildcard $(SHARED_DATA)/README.md),$(SHARED_DATA),)
export ADRANK_DATA_DIR
# Where torch comes from: pip's configured index by default. On plain PyPI under Linux the
# pinned torch is the CUDA build; TORCH_INDEX=https://download.pytorch.org/whl/cpu gets the
# CPU one.
TORCH_INDEX ?=

.PHONY: install test demo lint format bench clean

$(BIN)/adrank: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned: an unpinned resolve pulls a multi-GB CUDA build.
	$(BIN)/pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $(BIN)/adrank

install: $(BIN)/adrank

test: install
	$(BIN)/python -m pytest -q -p no:cacheprovider

demo: install
	$(BIN)/adrank benchmark --dataset frappe --models deepfm,dcnv2,finalmlp,finalnet --seeds 1 --output runs/demo

lint: install
	$(BIN)/ruff check adrank tests benchmarks
	$(BIN)/ruff format --check adrank tests benchmarks

format: install
	$(BIN)/ruff format adrank tests benchmarks
	$(BIN)/ruff check --fix adrank tests benchmarks

bench: install
	$(BIN)/python -m benchmarks data train preprocess inference load

clean:
	rm -rf $(VENV) runs .pytest_cache
