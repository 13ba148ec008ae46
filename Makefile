# make demo: run the example DAG end to end on the built-in CometAPI simulator (no key needed).
# make test: quality gates, then the whole test suite on the lowest and on the highest supported Airflow, each in
#            its own virtualenv. Virtualenvs are created on first use (only Python 3.10+ is needed on the machine).
# make test-highest / make test-lowest: the suite on one of them; PYTEST_ARGS="-m 'not slow'" and the like pass
#            through to pytest.
# make bench: the performance benchmarks (they print figures; nothing is asserted).

PYTHON ?= python3
# The newest Airflow 3 release: the default virtualenv (demo, lint, benchmarks) runs it.
AIRFLOW_VERSION ?= 3.3.2
VENV ?= .venv
# The oldest supported Airflow, with the library pins its own constraints file had (see the file's comment).
AIRFLOW_LOWEST ?= 3.0.6
VENV_LOWEST ?= .venv-af30
LOWEST_CONSTRAINTS := .ci/constraints-airflow-3.0.txt
PYTEST_ARGS ?=

PY := $(VENV)/bin/python
PY_LOWEST := $(VENV_LOWEST)/bin/python
STAMP := $(VENV)/.installed-$(AIRFLOW_VERSION)
STAMP_LOWEST := $(VENV_LOWEST)/.installed-$(AIRFLOW_LOWEST)

.PHONY: demo test lint unit test-highest test-lowest bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "apache-airflow==$(AIRFLOW_VERSION)" -e ".[dev]"
	touch $(STAMP)

# wtforms: Airflow 3.0 and 3.1 build connection forms from the hook only when it is installed (the FAB provider
# brings it); with it the suite checks the form those releases show.
$(STAMP_LOWEST): pyproject.toml $(LOWEST_CONSTRAINTS)
	$(PYTHON) -m venv $(VENV_LOWEST)
	$(PY_LOWEST) -m pip install --quiet --upgrade pip
	$(PY_LOWEST) -m pip install --quiet -c $(LOWEST_CONSTRAINTS) "apache-airflow==$(AIRFLOW_LOWEST)" wtforms -e ".[dev]"
	touch $(STAMP_LOWEST)

demo: $(STAMP)
	$(PY) scripts/demo.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test-highest: $(STAMP)
	@echo "== test suite on Airflow $(AIRFLOW_VERSION) ($(VENV))"
	$(PY) -m pytest -q -rs $(PYTEST_ARGS)

test-lowest: $(STAMP_LOWEST)
	@echo "== test suite on Airflow $(AIRFLOW_LOWEST) ($(VENV_LOWEST))"
	$(PY_LOWEST) -m pytest -q -rs $(PYTEST_ARGS)

unit: test-highest

test: lint test-lowest test-highest

bench: $(STAMP)
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) $(VENV_LOWEST) .demo .pytest_cache .mypy_cache .ruff_cache
