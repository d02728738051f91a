# Two commands do everything on a fresh machine: `make demo` and `make test`.
#
# Virtual environments, each created on first use and refreshed (newest versions the ranges allow)
# when pyproject.toml changes:
#   .venv            the newest stack: Python 3.11, every extra but [citylearn] (demo, bench, the whole suite)
#   .venv-py313      the base package alone on Python 3.13 (the base-only tests)
#   .venv-citylearn  CityLearn 3.0.2 with its own pins (gymnasium 0.28.1, numpy < 2) and the floors of the
#                    base dependencies: battery equivalence with CityLearn, re-derivation of the embedded data
PYTHON    ?= python3.11
VENV      ?= .venv
BIN       := $(VENV)/bin
STAMP     := $(VENV)/.installed
# The tested torch of the [learn] range; pip picks the local CPU build of it where there is one.
TORCH     ?= torch==2.13.0

# The first Python 3.13 found (PATH, then pyenv); override with PYTHON313=/path/to/python3.13.
PYTHON313 ?= $(shell for p in python3.13 $(HOME)/.pyenv/versions/3.13*/bin/python3.13 /usr/local/bin/python3.13 /usr/bin/python3.13; do \
	$$p -c 'import sys; assert sys.version_info[:2] == (3, 13)' >/dev/null 2>&1 && { command -v $$p; break; }; done)
PY313_VENV  ?= .venv-py313
PY313_STAMP := $(PY313_VENV)/.installed

CL_VENV   ?= .venv-citylearn
CL_BIN    := $(CL_VENV)/bin
CL_STAMP  := $(CL_VENV)/.installed
# Lowest versions of the base dependencies that the ranges in pyproject.toml allow (numpy 1.26,
# gymnasium 0.28.1 and pettingzoo 1.24.3 come from CityLearn's own pins).
OLDEST    ?= numba==0.59.1 scipy==1.11.4 networkx==3.0

# Tests that need nothing beyond the base package (and pytest, hypothesis).
BASE_TESTS := tests/test_config.py tests/test_core.py tests/test_data.py tests/test_graphs.py \
	tests/test_parallel_env.py tests/test_step_kernel.py tests/test_views.py tests/test_conventions.py \
	tests/test_install.py tests/test_observation_bounds.py tests/test_ev_charging.py
CITYLEARN_TESTS := $(BASE_TESTS) tests/test_battery.py

.PHONY: demo test test-main test-py313 test-citylearn test-slow bench install-size venv venvs clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --upgrade --upgrade-strategy eager -e ".[all]" "$(TORCH)"
	@# CityLearn lives in its own environment; drop it from an environment made before the split.
	$(BIN)/python -m pip uninstall --quiet --yes citylearn 2>/dev/null || true
	touch $(STAMP)

$(PY313_STAMP): pyproject.toml
	@test -n "$(PYTHON313)" || { echo "no Python 3.13 interpreter found; set PYTHON313=/path/to/python3.13"; exit 1; }
	test -x $(PY313_VENV)/bin/python || $(PYTHON313) -m venv $(PY313_VENV)
	$(PY313_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(PY313_VENV)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager -e ".[test-base]"
	touch $(PY313_STAMP)

$(CL_STAMP): pyproject.toml
	test -x $(CL_BIN)/python || $(PYTHON) -m venv $(CL_VENV)
	$(CL_BIN)/python -m pip install --quiet --upgrade pip
	$(CL_BIN)/python -m pip install --quiet -e ".[citylearn,test-base]" "$(TORCH)" $(OLDEST)
	touch $(CL_STAMP)

venv: $(STAMP)

venvs: $(STAMP) $(PY313_STAMP) $(CL_STAMP)

demo: $(STAMP)
	$(BIN)/cmarl bench quick --readme README.md

# CI (.ci/run) runs this: the three jobs one after the other.
test: test-main test-py313 test-citylearn

# The whole suite (slow tests aside) on the newest stack.
test-main: $(STAMP)
	$(BIN)/python -m pytest -q

# The base-only tests on Python 3.13; skipped with a message when there is no 3.13 interpreter,
# unless REQUIRE_PY313=1 (CI sets it).
test-py313:
	@if [ -z "$(PYTHON313)" ]; then \
		if [ -n "$(REQUIRE_PY313)" ]; then echo "no Python 3.13 interpreter found; set PYTHON313=/path/to/python3.13"; exit 1; fi; \
		echo "SKIPPED: the base-only tests on Python 3.13 (no python3.13 found; set PYTHON313=/path/to/python3.13)"; \
	else \
		$(MAKE) --no-print-directory $(PY313_STAMP) && $(PY313_VENV)/bin/python -m pytest -q $(BASE_TESTS); \
	fi

# The CityLearn stack; numba's cache goes inside the venv (its numba differs from .venv's on the same Python).
test-citylearn: $(CL_STAMP)
	NUMBA_CACHE_DIR=$(CL_VENV)/numba-cache $(CL_BIN)/python -m pytest -q $(CITYLEARN_TESTS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	$(BIN)/python -m benchmarks.env_throughput

# Install size and time of the base package and of [all] into clean virtual environments,
# and the first reset() offline (several minutes; prints the figures the README quotes).
install-size: $(STAMP)
	$(BIN)/python -m benchmarks.install_size

clean:
	rm -rf $(VENV) $(PY313_VENV) $(CL_VENV) *.egg-info
