# Two commands on a fresh machine with Python 3.11 and pip:  make demo  /  make test
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
# The CPU build of torch first: otherwise pip resolves torch to a multi-GB CUDA build.
TORCH  ?= torch==2.13.0

.PHONY: demo test dev bench db-start db-stop clean

$(BIN)/lvm-pipeline: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[demo,dev]'
	# numba compiles ranx's metrics and fusion on first use (about a minute): once, here, into its on-disk cache
	$(BIN)/python -c "from lvm_pipeline.evaluation.retrieval_benchmark import warm_up_ranx; warm_up_ranx()"
	touch $@

demo: $(BIN)/lvm-pipeline  ## embedded Postgres + demo landing batches + ingest them all
	$(BIN)/lvm-pipeline demo

test: $(BIN)/lvm-pipeline  ## lint (ruff) + unit and integration tests (starts its own PostgreSQL)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

dev: $(BIN)/lvm-pipeline  ## Dagster UI on http://127.0.0.1:3000
	$(BIN)/lvm-pipeline dev

bench: $(BIN)/lvm-pipeline  ## ingest throughput benchmark (see docs/BENCHMARKS.md)
	$(BIN)/python benchmarks/ingest.py

db-start: $(BIN)/lvm-pipeline
	$(BIN)/lvm-pipeline db start

db-stop: $(BIN)/lvm-pipeline
	$(BIN)/lvm-pipeline db stop

clean:  ## stop the server and remove the venv (keeps data/)
	-$(BIN)/lvm-pipeline db stop
	rm -rf $(VENV) *.egg-info
