# make demo:      run the example DAG end to end on the built-in CometAPI simulator (no key needed).
# make test:      everything CI runs, installing what it needs itself: Debian packages (scripts/apt-ensure), one
#                 virtualenv per supported Airflow minor (built on first use, updated in place when pyproject.toml or
#                 a constraints file changes), lint and type checks, the suite on every release of the matrix, the
#                 browser test and the system suite (PostgreSQL, CeleryExecutor with Redis, two triggerers) on the
#                 newest. It goes on after a failing part, prints how long each part took, and fails if any part failed.
# make test-fast: unit tests only (tests/unit), in parallel, on the newest Airflow: the edit loop.
# make test-3.1 (any minor of MATRIX), test-3.1-parallel, test-3.1-serial, test-browser, test-system: one part.
#                 PYTEST_ARGS="-k trigger" and the like pass through to pytest.
# make bench:     the performance benchmarks (they print figures; nothing is asserted).

PYTHON ?= python3
# The newest patch of each supported minor. The newest minor's virtualenv is .venv (demo, lint, benchmarks, the
# browser test and the system suite run there); each older one has .venv-afXY.
MATRIX := 3.0 3.1 3.2 3.3
AIRFLOW_3.0 ?= 3.0.6
AIRFLOW_3.1 ?= 3.1.8
AIRFLOW_3.2 ?= 3.2.2
AIRFLOW_3.3 ?= 3.3.2
NEWEST := 3.3
AIRFLOW_VERSION := $(AIRFLOW_$(NEWEST))
VENV ?= .venv
venv_of = $(if $(filter $(NEWEST),$(1)),$(VENV),.venv-af$(subst .,,$(1)))
# Library pins for releases whose open-ended ranges admit later libraries that break them (see each file).
CONSTRAINTS_3.0 := .ci/constraints-airflow-3.0.txt
CONSTRAINTS_3.2 := .ci/constraints-airflow-3.2.txt
# wtforms: Airflow 3.0 and 3.1 build connection forms from the hook only when it is installed (the FAB provider
# brings it); with it the suite checks the form those releases show.
EXTRA_3.0 := wtforms
EXTRA_3.1 := wtforms
# The newest also gets the system suite's Celery and PostgreSQL providers.
EXTRAS_3.3 := dev,system
PYTEST_ARGS ?=
# pytest-xdist workers for the tests that may run side by side.
WORKERS ?= 2
# Debian packages the suites need: the system suite's database and broker, the browser test's browser and driver.
APT_PACKAGES := postgresql redis-server chromium chromium-driver

PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(AIRFLOW_VERSION)
TIMES := .ci-times
TIMED := .ci/timed $(TIMES)
# Tests that start Airflow's services or other long-lived processes: never side by side with each other.
SERIAL_MARKERS := slow or services or system or browser
# What each release runs in its serial step (the SQLite triggerer-kill test, "slow", is what the system suite
# proves on PostgreSQL and Celery: it runs on the releases the system suite does not).
SERIAL_3.0 := slow or services
SERIAL_3.1 := services
SERIAL_3.2 := services
SERIAL_3.3 := services
# The fault matrix (every simulator fault through both paths, two long airflow dags test runs) tests the provider's
# own logic, not the release's: it runs on the lowest and the newest release, to keep make test under 40 minutes.
SKIP_3.1 := --ignore=tests/reliability/test_fault_matrix.py
SKIP_3.2 := --ignore=tests/reliability/test_fault_matrix.py
REPORT := -q -rs --durations=5

.PHONY: demo test test-fast lint deps test-system test-browser bench clean venvs test-highest test-lowest \
	$(foreach m,$(MATRIX),test-$(m) test-$(m)-parallel test-$(m)-serial)

define release
$(call venv_of,$(1))/.installed-$(AIRFLOW_$(1)): pyproject.toml $(CONSTRAINTS_$(1))
	@$$(TIMED) "venv Airflow $(AIRFLOW_$(1))" -- sh -c '\
		set -e; test -x $(call venv_of,$(1))/bin/python || $$(PYTHON) -m venv $(call venv_of,$(1)); \
		$(call venv_of,$(1))/bin/python -m pip install --quiet --upgrade pip; \
		$(call venv_of,$(1))/bin/python -m pip install --quiet $(if $(CONSTRAINTS_$(1)),-c $(CONSTRAINTS_$(1))) \
			"apache-airflow==$(AIRFLOW_$(1))" $(EXTRA_$(1)) -e ".[$(or $(EXTRAS_$(1)),dev)]"'
	@touch $$@

test-$(1)-parallel: $(call venv_of,$(1))/.installed-$(AIRFLOW_$(1))
	@$$(TIMED) "suite Airflow $(AIRFLOW_$(1)), in parallel" -- $(call venv_of,$(1))/bin/python -m pytest \
		$$(PYTEST_ARGS) $$(REPORT) -n $$(WORKERS) --dist loadgroup -m "not ($$(SERIAL_MARKERS))" $(SKIP_$(1))

test-$(1)-serial: $(call venv_of,$(1))/.installed-$(AIRFLOW_$(1))
	@$$(TIMED) "suite Airflow $(AIRFLOW_$(1)), serial ($(SERIAL_$(1)))" -- $(call venv_of,$(1))/bin/python -m pytest \
		$$(PYTEST_ARGS) $$(REPORT) -p no:xdist -m "$(SERIAL_$(1))"

# Both steps; the serial one runs even when the parallel one failed.
test-$(1):
	@status=0; $$(MAKE) --no-print-directory test-$(1)-parallel || status=1; \
		$$(MAKE) --no-print-directory test-$(1)-serial || status=1; exit $$$$status
endef
$(foreach minor,$(MATRIX),$(eval $(call release,$(minor))))

venvs: $(foreach m,$(MATRIX),$(call venv_of,$(m))/.installed-$(AIRFLOW_$(m)))

deps:
	@$(TIMED) "apt packages" -- scripts/apt-ensure $(APT_PACKAGES)

demo: $(STAMP)
	$(PY) scripts/demo.py

# The Airflow UI (API server on 127.0.0.1:8080, COMETFLUX_UI_PORT for another) on the demo's database: its images.
ui: $(STAMP)
	$(PY) scripts/demo.py --ui

lint: $(STAMP)
	@$(TIMED) "lint and types" -- sh -c '$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/mypy'

test-fast: $(STAMP)
	@$(TIMED) "unit tests" -- $(PY) -m pytest $(PYTEST_ARGS) $(REPORT) -n $(WORKERS) tests/unit

# The UI in headless Chromium (tests/browser). An empty selection passes, saying so in the table.
test-browser: $(STAMP)
	@$(TIMED) --allow-empty "browser test Airflow $(AIRFLOW_VERSION)" -- $(PY) -m pytest $(PYTEST_ARGS) $(REPORT) \
		-p no:xdist -m browser

# PostgreSQL, the CeleryExecutor with Redis, two triggerers and the simulator as processes; -rP prints each
# scenario's figures (also in .pytest_cache/system-figures.json).
test-system: $(STAMP)
	@$(TIMED) "system suite Airflow $(AIRFLOW_VERSION)" -- $(PY) -m pytest $(PYTEST_ARGS) -q -rs -rP -p no:xdist \
		-m system tests/system

test-highest: test-$(NEWEST)
test-lowest: test-3.0

PARTS := deps lint $(foreach m,$(MATRIX),test-$(m)-parallel test-$(m)-serial) test-browser test-system

# Every part runs even when an earlier one failed; the table of times comes last, and any failure fails the run.
test:
	@rm -f $(TIMES)
	@status=0; \
	for part in $(PARTS); do \
		$(MAKE) --no-print-directory $$part || status=1; \
	done; \
	.ci/timed --summary $(TIMES); \
	exit $$status

bench: $(STAMP)
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) .venv-af* .demo .pytest_cache .mypy_cache .ruff_cache $(TIMES)
