# make demo:      run the example DAG end to end on the built-in CometAPI simulator (no key needed).
# make test:      everything CI runs, installing what it needs itself: Debian packages (scripts/apt-ensure), one
#                 virtualenv per environment, each built from its lock in locks/ and checked against it, lint and
#                 type checks, the suite on every release of the matrix, the unit tests on the lowest and highest
#                 Python, the browser test and the system suite (PostgreSQL, CeleryExecutor with Redis, two
#                 triggerers) on the newest. It goes on after a failing part, prints how long each part took, and
#                 fails if any part failed.
# make lock:      resolve every lock in locks/ again (after a change to pyproject.toml's dependencies); commit them.
# make test-fast: unit tests only (tests/unit), in parallel, on the newest Airflow: the edit loop.
# make test-3.1 (any minor of MATRIX), test-3.1-parallel, test-3.1-serial, test-py3.13, test-browser, test-system:
#                 one part. PYTEST_ARGS="-k trigger" and the like pass through to pytest.
# make bench:     the performance benchmarks (they print figures; nothing is asserted).

PYTHON ?= python3
# Where PYTHONDONTWRITEBYTECODE is set (some CI machines set it), Python keeps no bytecode, and every `airflow`
# process compiles Airflow's sources again: about 11 of its 28 s of CPU for one `airflow dags test` (measured on
# 3.2.2). The virtualenvs and the checkout keep their bytecode (ignored by git); the first process writes it.
unexport PYTHONDONTWRITEBYTECODE
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
# The Python of the matrix, and the lowest and highest ones Airflow's newest release supports (unit tests only).
MATRIX_PYTHON := 3.11
PYTHONS := 3.10 3.13
# Every virtualenv is its lock (locks/airflow-<release>-py<python>.txt, made by `make lock`), plus this project.
# The locks' inputs (which extras, which day each release is resolved as of) are in scripts/lock.
lock_of = locks/airflow-$(AIRFLOW_$(1))-py$(MATRIX_PYTHON).txt
lock_py = locks/airflow-$(AIRFLOW_VERSION)-py$(1).txt
venv_py = .venv-py$(subst .,,$(1))
# uv builds the virtualenvs (pinned here; installed with pip into its own virtualenv).
UV_VERSION := 0.13.9
TOOLS := .venv-tools
UV := $(TOOLS)/bin/uv
PYTEST_ARGS ?=
# pytest-xdist workers for the tests that may run side by side.
WORKERS ?= 2
# The newest release's parallel part also runs the fault matrix and the other runs that mostly wait (timeouts,
# slow downloads) while the CPU idles: a third worker fills it (the part took 839 s with 2 workers and cold runs,
# 378 s with 3 and warm runs, on 2 cores).
WORKERS_NEWEST ?= 3
# Debian packages the suites need: the system suite's database and broker, the browser test's browser and driver.
APT_PACKAGES := postgresql redis-server chromium chromium-driver

PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
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
REPORT := -q -rs --durations=5

.PHONY: demo test test-fast lint deps lock check-locks test-system test-browser bench clean venvs test-highest \
	test-lowest $(foreach m,$(MATRIX),test-$(m) test-$(m)-parallel test-$(m)-serial) $(foreach p,$(PYTHONS),test-py$(p))

$(UV):
	@$(PYTHON) -m venv $(TOOLS)
	@$(TOOLS)/bin/python -m pip install --quiet "uv==$(UV_VERSION)"

define release
$(call venv_of,$(1))/.installed: $(call lock_of,$(1)) pyproject.toml | $(UV)
	@$$(TIMED) "venv Airflow $(AIRFLOW_$(1))" -- scripts/venv $(UV) $(call venv_of,$(1)) $(MATRIX_PYTHON) $(call lock_of,$(1))
	@touch $$@

test-$(1)-parallel: $(call venv_of,$(1))/.installed
	@$$(TIMED) "suite Airflow $(AIRFLOW_$(1)), in parallel" -- $(call venv_of,$(1))/bin/python -m pytest \
		$$(PYTEST_ARGS) $$(REPORT) -n $(if $(filter $(NEWEST),$(1)),$$(WORKERS_NEWEST),$$(WORKERS)) --dist loadgroup \
		-m "not ($$(SERIAL_MARKERS))$(if $(filter $(NEWEST),$(1)),, and not any_release)"

test-$(1)-serial: $(call venv_of,$(1))/.installed
	@$$(TIMED) "suite Airflow $(AIRFLOW_$(1)), serial ($(SERIAL_$(1)))" -- $(call venv_of,$(1))/bin/python -m pytest \
		$$(PYTEST_ARGS) $$(REPORT) -p no:xdist -m "$(SERIAL_$(1))"

# Both steps; the serial one runs even when the parallel one failed.
test-$(1):
	@status=0; $$(MAKE) --no-print-directory test-$(1)-parallel || status=1; \
		$$(MAKE) --no-print-directory test-$(1)-serial || status=1; exit $$$$status
endef
$(foreach minor,$(MATRIX),$(eval $(call release,$(minor))))

# The unit tests on another Python, against the newest release.
define python
$(call venv_py,$(1))/.installed: $(call lock_py,$(1)) pyproject.toml | $(UV)
	@$$(TIMED) "venv Python $(1)" -- scripts/venv $(UV) $(call venv_py,$(1)) $(1) $(call lock_py,$(1))
	@touch $$@

test-py$(1): $(call venv_py,$(1))/.installed
	@$$(TIMED) "unit tests Python $(1), Airflow $(AIRFLOW_VERSION)" -- $(call venv_py,$(1))/bin/python -m pytest \
		$$(PYTEST_ARGS) $$(REPORT) -n $$(WORKERS) tests/unit
endef
$(foreach p,$(PYTHONS),$(eval $(call python,$(p))))

venvs: $(foreach m,$(MATRIX),$(call venv_of,$(m))/.installed) $(foreach p,$(PYTHONS),$(call venv_py,$(p))/.installed)

# Resolve every lock again (scripts/lock says how); commit what changes.
lock: | $(UV)
	scripts/lock $(UV)

# The locks are what pyproject.toml resolves to, and every virtualenv built holds exactly its lock.
check-locks: venvs
	@$(TIMED) "locks" -- sh -c 'set -e; scripts/lock $(UV) --check; \
		$(foreach m,$(MATRIX),$(call venv_of,$(m))/bin/python scripts/lock_check.py $(call lock_of,$(m));) \
		$(foreach p,$(PYTHONS),$(call venv_py,$(p))/bin/python scripts/lock_check.py $(call lock_py,$(p));)'

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

# The parts of `make test`: first what everything needs, then two lanes side by side. The parts that start
# Airflow's services (the system suite, the serial parts, the browser test) mostly wait for them (heartbeats, a
# triggerer's takeover): about half of one core. They run one after another beside the matrix's parallel parts,
# and the unit tests on the other Pythons and lint after them, so that both lanes end about together (the table
# of times says how busy the cores were in each part: CPU seconds against its wall time).
SETUP_PARTS := deps check-locks
MATRIX_PARTS := $(foreach m,$(MATRIX),test-$(m)-parallel)
BESIDE_PARTS := test-system $(foreach m,$(MATRIX),test-$(m)-serial) test-browser \
	$(foreach p,$(PYTHONS),test-py$(p)) lint
PARTS := $(SETUP_PARTS) $(MATRIX_PARTS) $(BESIDE_PARTS)
# Where the parts run beside the others write their output (printed whole when the run ends).
LOGS := .ci-logs

# Every part runs even when an earlier one failed; the output of the parts run beside and the table of times come
# last, and
# any failure fails the run.
test:
	@rm -rf $(TIMES) $(LOGS) && mkdir -p $(LOGS)
	@started=$$(date +%s); status=0; \
	for part in $(SETUP_PARTS); do \
		$(MAKE) --no-print-directory $$part || status=1; \
	done; \
	( lane=0; for part in $(BESIDE_PARTS); do \
		echo "== beside: $$part started (output in $(LOGS)/$$part.log)"; \
		$(MAKE) --no-print-directory $$part >$(LOGS)/$$part.log 2>&1 || lane=1; \
		echo "== beside: $$part ended ($$(tail -n 1 $(LOGS)/$$part.log))"; \
	done; exit $$lane ) & beside=$$!; \
	for part in $(MATRIX_PARTS); do \
		$(MAKE) --no-print-directory $$part || status=1; \
	done; \
	wait $$beside || status=1; \
	for part in $(BESIDE_PARTS); do \
		echo; echo "======== output of $$part (ran beside the others)"; cat $(LOGS)/$$part.log; \
	done; \
	.ci/timed --summary $(TIMES) $$(($$(date +%s) - started)); \
	exit $$status

bench: $(STAMP)
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) .venv-af* .venv-py* $(TOOLS) .demo .pytest_cache .mypy_cache .ruff_cache $(TIMES) $(LOGS)
