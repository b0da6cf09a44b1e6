# aeq: `make demo` for a first look, `make test` for the full check (what CI runs).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# This workplace keeps MNIST beside the checkout; elsewhere aeq uses the keras download/cache.
ifneq ($(wildcard ../shared/data/mnist),)
export AEQ_DATA_DIR ?= $(abspath ../shared/data/mnist)
endif

.PHONY: venv test unit lint demo bench bench-quick evaluate gpu-check compose-test clean

venv: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[train,eval,dev]'
	touch $@

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

unit: venv
	$(BIN)/pytest tests/unit

demo: venv
	$(BIN)/aeq demo

bench: venv
	$(BIN)/aeq bench

bench-quick: venv
	$(BIN)/aeq bench --quick

evaluate: venv
	$(BIN)/aeq evaluate all

# The GPU check (docs/DEPLOY.md, "GPU check"); no venv needed: on a GPU host it installs from wheels.
gpu-check:
	scripts/gpu-check.sh $(OUT) --python $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON)) $(GPU_CHECK_ARGS)

# The compose deployment built and run for real (docs/DEPLOY.md, section 8): as root, starts a
# Docker engine where none answers, builds stand-in bases from Debian, every image, then runs the
# container scenarios. COMPOSE_TEST_ARGS go to pytest.
compose-test: venv
	scripts/compose-test.sh $(COMPOSE_TEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache demo-output
