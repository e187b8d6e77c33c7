# Fresh machine: `make reproduce` (main job) or `make test` (the suite).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-stamp
export JAX_PLATFORMS ?= cpu
# Where `make reproduce` keeps its corpus and runs.
RUN_DIR ?= runs/reproduce
# pytest-xdist workers: the suite is mostly single-threaded compiles, so 2 workers on 2 cores
# take 17 min where one took 27 (each worker holds ~3 GB; test files stay whole on a worker).
TEST_WORKERS ?= 2

.PHONY: setup test test-fast lint reproduce analysis realtime bench clean

setup: $(STAMP)

# Re-installs only when the package metadata or the pins change.
$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,tpu-aot]'
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=30 tests

# The suite without the tests marked slow (they train models or run `chorus` processes).
test-fast: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not slow" tests

lint: setup
	$(VENV)/bin/ruff check .

reproduce: setup
	RUN_DIR=$(RUN_DIR) bash experiments/reproduce.sh

# Interaction analysis on the runs of `make reproduce` (adversarial fine-tune + experiment).
analysis: setup
	RUN_DIR=$(RUN_DIR) bash experiments/analysis.sh

# The realtime stages (dialogue SFT, judge, Bradley-Terry reward model, the GRPO reward
# ablation: judge vs checker vs reward model x 3 seeds) on the runs of `make reproduce`.
realtime: setup
	RUN_DIR=$(RUN_DIR) bash experiments/reproduce_realtime.sh

bench: setup
	$(VENV)/bin/chorus bench attention

clean:
	rm -rf $(VENV) runs .pytest_cache
