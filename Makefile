# make demo:      run the example DAG end to end on the built-in CometAPI simulator (no key needed).
# make test:      everything CI runs, installing what it needs itself: Debian packages (scripts/apt-ensure), one
#                 virtualenv per supported Airflow minor (built on first use, reused while pyproject.toml and the
#                 constraints are unchanged), lint and type checks, the suite on every release in the matrix, then
#                 the system suite (PostgreSQL, CeleryExecutor with Redis, two triggerers) on the newest. It goes on
#                 after a failing part, prints how long each part took, and fails if any part failed.
# make test-fast: unit tests only (tests/unit), in parallel, on the newest Airflow: the edit loop.
# make test-3.1 (any minor in MATRIX), make test-system, make test-serial: one part; PYTEST_ARGS="-k trigger" and
#                 the like pass through to pytest.
# make bench:     the performance benchmarks (they print figures; nothing is asserted).

PYTHON ?= python3
# The newest Airflow 3 release: the default virtualenv (demo, lint, benchmarks, the system suite) runs it.
AIRFLOW_VERSION ?= 3.3.2
VENV ?= .venv
# The newest patch of each older supported minor, each in a virtualenv of its own.
AIRFLOW_3.0 ?= 3.0.6
AIRFLOW_3.1 ?= 3.1.8
AIRFLOW_3.2 ?= 3.2.2
MATRIX := 3.0 3.1 3.2
# Airflow 3.0 and 3.2 declare open-ended ranges whose later releases broke them: pins (see each file's comment).
CONSTRAINTS_3.0 := .ci/constraints-airflow-3.0.txt
CONSTRAINTS_3.2 := .ci/constraints-airflow-3.2.txt
# wtforms: Airflow 3.0 and 3.1 build connection forms from the hook only when it is installed (the FAB provider
# brings it); with it the suite checks the form those releases show.
EXTRA_3.0 := wtforms
EXTRA_3.1 := wtforms
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
PARALLEL := $(PYTEST_ARGS) -q -rs -n $(WORKERS) --dist loadgroup -m "not ($(SERIAL_MARKERS))"

.PHONY: demo test test-fast lint deps test-system test-serial bench clean $(addprefix test-,$(MATRIX)) \
	test-$(AIRFLOW_VERSION) test-highest test-lowest venvs

# A virtualenv is created once and updated in place when its inputs change (never removed under a running user).
$(STAMP): pyproject.toml
	@$(TIMED) "venv Airflow $(AIRFLOW_VERSION)" -- sh -c '\
		set -e; test -x $(PY) || $(PYTHON) -m venv $(VENV); \
		$(PY) -m pip install --quiet --upgrade pip; \
		$(PY) -m pip install --quiet "apache-airflow==$(AIRFLOW_VERSION)" -e ".[dev,system]"'
	@touch $@

define release_venv
.venv-af$(subst .,,$(1))/.installed-$(AIRFLOW_$(1)): pyproject.toml $(CONSTRAINTS_$(1))
	@$$(TIMED) "venv Airflow $(AIRFLOW_$(1))" -- sh -c '\
		set -e; test -x .venv-af$(subst .,,$(1))/bin/python || $$(PYTHON) -m venv .venv-af$(subst .,,$(1)); \
		.venv-af$(subst .,,$(1))/bin/python -m pip install --quiet --upgrade pip; \
		.venv-af$(subst .,,$(1))/bin/python -m pip install --quiet $(if $(CONSTRAINTS_$(1)),-c $(CONSTRAINTS_$(1))) \
			"apache-airflow==$(AIRFLOW_$(1))" $(EXTRA_$(1)) -e ".[dev]"'
	@touch $$@

# The suite on Airflow $(1): what may run side by side in parallel, then the tests that start services, one by one.
test-$(1): .venv-af$(subst .,,$(1))/.installed-$(AIRFLOW_$(1))
	@$$(TIMED) "suite Airflow $(AIRFLOW_$(1)) (parallel)" -- .venv-af$(subst .,,$(1))/bin/python -m pytest $$(PARALLEL)
	@$$(TIMED) "suite Airflow $(AIRFLOW_$(1)) (serial)" -- .venv-af$(subst .,,$(1))/bin/python -m pytest $(PYTEST_ARGS) \
		-q -rs -p no:xdist -m "slow or services"
endef
$(foreach minor,$(MATRIX),$(eval $(call release_venv,$(minor))))

venvs: $(STAMP) $(foreach minor,$(MATRIX),.venv-af$(subst .,,$(minor))/.installed-$(AIRFLOW_$(minor)))

deps:
	@$(TIMED) "apt packages" -- scripts/apt-ensure $(APT_PACKAGES)

demo: $(STAMP)
	$(PY) scripts/demo.py

lint: $(STAMP)
	@$(TIMED) "lint and types" -- sh -c '$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/mypy'

test-fast: $(STAMP)
	@$(TIMED) "unit tests" -- $(PY) -m pytest $(PYTEST_ARGS) -q -rs -n $(WORKERS) tests/unit

# The suite on the newest Airflow, in parallel then serially (the browser test included), without the system suite.
test-$(AIRFLOW_VERSION): $(STAMP)
	@$(TIMED) "suite Airflow $(AIRFLOW_VERSION) (parallel)" -- $(PY) -m pytest $(PARALLEL)
	@$(TIMED) "suite Airflow $(AIRFLOW_VERSION) (serial)" -- $(PY) -m pytest $(PYTEST_ARGS) -q -rs -p no:xdist \
		-m "slow or services"
	@$(TIMED) --allow-empty "browser tests Airflow $(AIRFLOW_VERSION)" -- $(PY) -m pytest $(PYTEST_ARGS) -q -rs \
		-p no:xdist -m browser

test-serial: test-$(AIRFLOW_VERSION)

# PostgreSQL, the CeleryExecutor with Redis, two triggerers and the simulator as processes; -rP prints each
# scenario's figures.
test-system: $(STAMP)
	@$(TIMED) "system suite Airflow $(AIRFLOW_VERSION)" -- $(PY) -m pytest $(PYTEST_ARGS) -q -rs -rP -p no:xdist \
		-m system tests/system

test-highest: test-$(AIRFLOW_VERSION)
test-lowest: test-3.0

# Every part runs even when an earlier one failed; the table of times comes last, and any failure fails the run.
test:
	@rm -f $(TIMES)
	@status=0; \
	for part in deps lint $(addprefix test-,$(MATRIX)) test-$(AIRFLOW_VERSION) test-system; do \
		$(MAKE) --no-print-directory $$part || status=1; \
	done; \
	.ci/timed --summary $(TIMES); \
	exit $$status

bench: $(STAMP)
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) .venv-af* .demo .pytest_cache .mypy_cache .ruff_cache $(TIMES)
