"""A real triggerer dies mid-flight, and nothing is lost or paid for twice; a user kill cancels, nothing else does.

A real Airflow (API server, scheduler with the LocalExecutor, DAG processor, triggerer; SQLite) runs the
``triggerer_kill`` DAG against the simulator: every task creates a prediction and defers. Once the triggerer is
polling them all, the test kills it with SIGKILL (its whole process group, as an OOM kill or a lost node would),
ends half of the predictions while no triggerer is alive, starts a new triggerer, waits until it polls, then
ends the rest. In between, the new triggerer's event loop hangs (its trigger runner gets SIGSTOP) until Airflow's
watchdog stops its heartbeat and a third triggerer takes its triggers over; woken, it drops them, and Airflow 3.3
calls ``on_kill`` on each: that must not cancel them.
Every task must succeed, every prediction must have been created exactly once, and nothing may have been
cancelled.

Then the ``user_kill`` DAG waits on two predictions, one in the worker and one in the triggerer, and the test
marks both tasks failed through the REST API, as a user would: both predictions must be cancelled.

The run uses a canary key, searched for afterwards in every log, output and the database.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.airflow_db import migrated
from tests.compat import AIRFLOW_VERSION
from tests.integration.conftest import AIRFLOW, airflow_env
from tests.reliability.conftest import RELIABILITY_DAGS, REPO_ROOT, connection_env, free_port
from tests.reliability.secret_search import provider_hits, search_run
from tests.system.processes import Component, stop_all, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.integration]

TASKS = 24
DAG_ID = "triggerer_kill"
#: Seconds after which a triggerer that stopped heartbeating is considered dead and its triggers move on.
HEALTH_THRESHOLD = 5
#: A trigger's ``on_kill`` (and so a user kill reaching the service from the triggerer) and the watchdog that
#: hands a hung triggerer's triggers over arrived in Airflow 3.3 and 3.2.2: before, those phases are skipped.
TRIGGER_ON_KILL = AIRFLOW_VERSION.release[:2] >= (3, 3)


def trigger_runner(triggerer: Component) -> int:
    """The pid of a triggerer's trigger runner: its child that is not the log server."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
            if int(fields[1]) == triggerer.proc.pid and b"serve-logs" not in cmdline:
                return int(stat.parent.name)
    raise AssertionError(f"{triggerer.name} has no trigger runner")


def trigger_logs(home: Path) -> dict[str, set[str]]:
    """For each task, the triggerers (by job id) that ran its trigger: ``attempt=1.log.trigger.<job id>.log``."""
    seen: dict[str, set[str]] = {}
    for path in (home / "logs" / f"dag_id={DAG_ID}").glob("run_id=*/task_id=*/attempt=1.log.trigger.*.log"):
        seen.setdefault(path.parent.name.removeprefix("task_id="), set()).add(path.name.split(".")[-2])
    return seen


def mentions(home: Path, component: Component, text: str) -> int:
    """How often ``text`` occurs in a component's output and the task logs."""
    task_logs = (home / "logs" / f"dag_id={DAG_ID}").rglob("*.log")
    return component.output().count(text) + sum(path.read_text(errors="replace").count(text) for path in task_logs)


def api_answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).status_code == 200
    except requests.RequestException:
        return False


def states(db: Path) -> dict[str, str | None]:
    if not db.exists():
        return {}
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return dict(conn.execute("SELECT task_id, state FROM task_instance WHERE dag_id = ?", (DAG_ID,)))
    except sqlite3.OperationalError:  # not migrated yet, or busy: ask again later
        return {}


def user_kill(sim, home: Path, api: str, components: list[Component]) -> float:
    """Mark a task waiting inline and one waiting deferred failed, as a user would: both predictions are cancelled."""
    began = time.monotonic()
    run = requests.post(f"{api}/dags/user_kill/dagRuns", json={"logical_date": None}, timeout=30)
    assert run.status_code == 200, run.text
    run_id = run.json()["dag_run_id"]

    def made(path: str) -> str | None:
        return next(
            (e["prediction_id"] for e in sim.create_requests if e["prompt"] == f"user kill {path} [sim:stuck]"), None
        )

    def task_state(task_id: str) -> str | None:
        answer = requests.get(f"{api}/dags/user_kill/dagRuns/{run_id}/taskInstances/{task_id}", timeout=30)
        return answer.json().get("state") if answer.status_code == 200 else None

    trigger_started = (home / "logs" / "dag_id=user_kill").glob
    wait_for(
        "one task waiting in the worker and one in the triggerer",
        lambda: (
            made("inline") is not None
            and made("deferred") is not None
            and task_state("inline") == "running"
            and task_state("deferred") == "deferred"
            and any(trigger_started("run_id=*/task_id=deferred/attempt=1.log.trigger.*.log"))
        ),
        90,
        components,
    )
    time.sleep(2)  # both are polling now
    assert sim.cancel_requests == []
    for task_id in ("inline", "deferred"):
        answer = requests.patch(
            f"{api}/dags/user_kill/dagRuns/{run_id}/taskInstances/{task_id}", json={"new_state": "failed"}, timeout=30
        )
        assert answer.status_code == 200, answer.text
    # before Airflow 3.3 a trigger has no on_kill: only the task waiting in the worker can cancel
    wanted = {made("inline"), made("deferred")} if TRIGGER_ON_KILL else {made("inline")}
    wait_for("both predictions to be cancelled", lambda: wanted <= set(sim.cancel_requests), 60, components)
    assert {task_state("inline"), task_state("deferred")} == {"failed"}
    assert all(sim.predictions[pid]["status"] == "canceled" for pid in wanted if pid)
    return time.monotonic() - began


@pytest.fixture
def components() -> Iterator[list[Component]]:
    started: list[Component] = []
    yield started
    left = stop_all(started)
    assert not left, f"processes left running: {left}"


@pytest.mark.timeout(1200)  # the sum of the waits below, so that a slow phase fails with its name and the logs
def test_triggerer_killed_mid_flight(tmp_path: Path, simulator_factory, components: list[Component]) -> None:
    began = time.monotonic()
    timings: dict[str, float] = {}
    key = f"sk-canary-{secrets.token_hex(16)}"
    sim = simulator_factory(run_seconds=1.0, api_key=key)
    home, logs = tmp_path / "airflow-home", tmp_path / "component-logs"
    home.mkdir()
    logs.mkdir()
    port = free_port()
    env = airflow_env(
        home,
        AIRFLOW__CORE__DAGS_FOLDER=str(RELIABILITY_DAGS),
        PYTHONPATH=str(REPO_ROOT),
        AIRFLOW__CORE__EXECUTOR="LocalExecutor",
        # SQLite serves five processes here: let a writer wait for the lock rather than fail at once
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}?timeout=60",
        AIRFLOW__CORE__PARALLELISM="8",
        AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG=str(TASKS),
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True",
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{port}/execution/",
        AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC="1",
        AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD=str(HEALTH_THRESHOLD),
        AIRFLOW__TRIGGERER__RUNNER_HEALTH_CHECK_THRESHOLD="2",
        AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="1",
        AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(free_port()),
        AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=str(free_port()),
        AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
        COMETFLUX_KILL_TASKS=str(TASKS),
        **connection_env("cometapi_default", sim.base_url, key),
    )
    migrated(home)
    timings["db migrate"] = time.monotonic() - began

    def start(name: str, *args: str) -> Component:
        component = Component(name, [AIRFLOW, *args], env, logs)
        components.append(component)
        return component

    # Tasks talk to the API server from their first instant: the scheduler starts only once it answers, or the
    # first tasks fail with "connection refused" (seen on Airflow 3.0.6, whose API server is slow to start).
    start("api-server", "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1")
    timings["api-server up"] = wait_for(
        "the API server to answer",
        lambda: api_answers(f"http://127.0.0.1:{port}/api/v2/monitor/health"),
        180,
        components,
    )
    start("scheduler", "scheduler")
    start("dag-processor", "dag-processor")
    first = start("triggerer-1", "triggerer")
    db = home / "airflow.db"

    # every task created its prediction and deferred, and the triggerer is polling them
    timings["all deferred"] = wait_for(
        f"{TASKS} deferred tasks",
        lambda: list(states(db).values()).count("deferred") == TASKS and sim.stats["created"] == TASKS,
        240,
        components,
    )
    polls_before = sim.stats["gets"]
    wait_for(
        "the triggerer to run every trigger and poll",
        lambda: len(trigger_logs(home)) == TASKS and sim.stats["gets"] >= polls_before + TASKS,
        60,
        components,
    )

    first.kill()
    killed_at = time.monotonic()
    ids = sorted(e["prediction_id"] for e in sim.create_requests if e["prediction_id"])
    assert len(ids) == TASKS
    sim.finish(ids[: TASKS // 2])  # these finish while no triggerer is alive

    second = start("triggerer-2", "triggerer")
    polls_at_restart = sim.stats["gets"]
    timings["new triggerer polling"] = wait_for(
        "the new triggerer to poll", lambda: sim.stats["gets"] >= polls_at_restart + TASKS // 2, 90, components
    )

    woke, dropped, running = "not tried (needs Airflow 3.3+)", 0, second
    if TRIGGER_ON_KILL:
        # a redistribution: the second triggerer's event loop hangs (a long stall, not a death) until the watchdog stops
        # its heartbeat and a third takes its triggers over; then it wakes up and drops them: nothing may be cancelled.
        # Only the runner is frozen: a frozen process holding a SQLite write lock would stall every other component.
        runner = trigger_runner(second)
        os.kill(runner, signal.SIGSTOP)
        running = start("triggerer-3", "triggerer")
        polls_at_freeze = sim.stats["gets"]
        wait_for(
            "the third triggerer to poll", lambda: sim.stats["gets"] >= polls_at_freeze + TASKS // 2, 90, components
        )
        second.killed = True  # on waking, Airflow may also make it exit: either way it must cancel nothing
        os.kill(runner, signal.SIGCONT)
        timings["redistributed"] = wait_for(
            "the second triggerer to drop its triggers",
            lambda: (
                mentions(home, second, "moved to another triggerer") >= TASKS // 2 or second.proc.poll() is not None
            ),
            60,
            components,
        )
        time.sleep(2)  # a cancel, if any were sent, would have arrived by now
        dropped = mentions(home, second, "moved to another triggerer")
        woke = f"exited ({second.proc.returncode})" if second.proc.poll() is not None else "kept running"
        assert sim.cancel_requests == [], "a redistribution must never cancel a prediction"
    sim.finish(ids[TASKS // 2 :])
    timings["all succeeded"] = wait_for(
        "every task to succeed",
        lambda: all(state == "success" for state in states(db).values()) and len(states(db)) == TASKS,
        120,
        components,
    )
    timings["kill to all succeeded"] = time.monotonic() - killed_at

    final = states(db)
    assert final == {f"predict_{i:02d}": "success" for i in range(TASKS)}
    stats = sim.stats
    assert stats["creates"] == TASKS and stats["created"] == TASKS, stats  # exactly once each
    assert sorted(e["prompt"] for e in sim.create_requests) == sorted(
        f"triggerer kill {i:02d} [sim:stuck]" for i in range(TASKS)
    )
    assert sim.cancel_requests == [], "a triggerer restart must never cancel a prediction"
    assert all(p["status"] == "succeeded" for p in sim.predictions.values())
    with sqlite3.connect(db, timeout=10) as conn:
        pushed = [
            str(row[0]).strip('"')
            for row in conn.execute("SELECT value FROM xcom WHERE dag_id = ? AND key = 'prediction_id'", (DAG_ID,))
        ]
    assert sorted(pushed) == ids
    assert running.proc.poll() is None
    runners = trigger_logs(home)
    assert all(len(runners[f"predict_{i:02d}"]) >= 2 for i in range(TASKS)), runners  # each moved to the new one

    timings["user kill"] = user_kill(sim, home, f"http://127.0.0.1:{port}/api/v2", components)

    for component in reversed(components):
        component.stop()
    report = search_run(home, {c.name: c.output() for c in components}, [key])
    task_logs = [p for p in (home / "logs").rglob("*") if p.is_file() and "task_id=" in str(p)]
    assert len(task_logs) >= TASKS, "the search must cover real task log files"
    timings["total"] = time.monotonic() - began
    print(
        f"\ntriggerer kill: {TASKS} tasks; "
        + ", ".join(f"{name} {seconds:.0f}s" for name, seconds in timings.items())
        + f"; polls {stats['gets']}, creates {stats['creates']}, cancels 0; "
        + f"frozen triggerer on waking: {woke}, dropped {dropped} triggers without cancelling\n"
        + f"user kill: {len(sim.cancel_requests)} of {2 if TRIGGER_ON_KILL else 1} predictions cancelled\n"
        + report.summary().splitlines()[0]
        + f" ({len(task_logs)} task log files); canary hits: {len(provider_hits(report))}"
    )
    assert not provider_hits(report), report.summary()
