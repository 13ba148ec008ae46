"""Real Airflow runs for the reliability tests: ``airflow dags test`` of the DAGs in ``tests/reliability/dags``
against a simulator on loopback, with per-task logs cut out of the run's output."""

from __future__ import annotations

import json
import re
import socket
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from airflow_provider_cometflux.testing.simulator import CometAPISimulator
from tests import airflow_cli
from tests.integration.conftest import DagRunResult, airflow_env, migrated_home

RELIABILITY_DAGS = Path(__file__).parent / "dags"
REPO_ROOT = Path(__file__).parents[2]

_TASK_START = re.compile(r"\[DAG TEST\] starting task_id=(\S+)")
_TASK_END = re.compile(r"\[DAG TEST\] end task task_id=(\S+)")


@dataclass
class MatrixRun(DagRunResult):
    """A :class:`DagRunResult` with each task's part of the output."""

    task_logs: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def split_task_logs(output: str) -> dict[str, str]:
    """
    Cut ``airflow dags test`` output into each task's lines: tasks run one at a time, between
    ``[DAG TEST] starting task_id=X`` and ``[DAG TEST] end task task_id=X`` (a deferred task's trigger included).
    """
    logs: dict[str, list[str]] = {}
    current: str | None = None
    for line in output.splitlines():
        start = _TASK_START.search(line)
        if start:
            current = start.group(1)
        if current is not None:
            logs.setdefault(current, []).append(line)
        if _TASK_END.search(line):
            current = None
    return {task: "\n".join(lines) for task, lines in logs.items()}


def free_port() -> int:
    """A loopback port nothing listens on (for a connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def connection_env(conn_id: str, base_url: str, key: str) -> dict[str, str]:
    conn = {"conn_type": "cometapi", "host": base_url, "password": key}
    return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(conn)}


@pytest.fixture(scope="session")
def reliability_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway AIRFLOW_HOME with a migrated SQLite metadata database for this package's runs."""
    return migrated_home(tmp_path_factory, "airflow-home-reliability")


RunDag = Callable[..., MatrixRun]


def dag_runner(home: Path) -> RunDag:
    """
    Run ``airflow dags test DAG_ID`` on the DAGs of ``tests/reliability/dags``, with ``home`` as AIRFLOW_HOME.

    ``connections`` maps a connection id to ``(base_url, key)``; other keyword arguments become environment
    variables of the run.
    """

    def run(
        dag_id: str, *, connections: dict[str, tuple[str, str]], timeout: float = 600, **extra_env: str
    ) -> MatrixRun:
        import time

        env = airflow_env(
            home,
            AIRFLOW__CORE__DAGS_FOLDER=str(RELIABILITY_DAGS),
            PYTHONPATH=str(REPO_ROOT),
            **extra_env,
        )
        for conn_id, (base_url, key) in connections.items():
            env.update(connection_env(conn_id, base_url, key))
        started = time.monotonic()
        proc = airflow_cli.run(["dags", "test", dag_id], env=env, timeout=timeout)
        seconds = time.monotonic() - started
        db = home / "airflow.db"
        with sqlite3.connect(db) as conn_db:
            row = conn_db.execute(
                "SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (dag_id,)
            ).fetchone()
            assert row is not None, proc.stdout[-3000:] + proc.stderr[-3000:]
            states = dict(
                conn_db.execute(
                    "SELECT task_id, state FROM task_instance WHERE run_id = ? AND dag_id = ?", (row[0], dag_id)
                )
            )
        output = proc.stdout + proc.stderr
        return MatrixRun(proc.returncode, output, states, db, row[0], split_task_logs(output), seconds)

    return run


@pytest.fixture
def run_dag(reliability_home: Path) -> RunDag:
    """:func:`dag_runner` on this session's shared AIRFLOW_HOME."""
    return dag_runner(reliability_home)


@pytest.fixture
def run_dag_in_fresh_home(tmp_path_factory: pytest.TempPathFactory) -> RunDag:
    """:func:`dag_runner` on an AIRFLOW_HOME of this test's own, so a rerun never inherits a damaged database."""
    return dag_runner(migrated_home(tmp_path_factory, "airflow-home-fresh"))


@pytest.fixture
def simulator_factory() -> Iterator[Callable[..., CometAPISimulator]]:
    """Start simulators with any options; they stop when the test ends."""
    started: list[CometAPISimulator] = []

    def start(**options: object) -> CometAPISimulator:
        sim = CometAPISimulator("127.0.0.1", 0, **options)  # type: ignore[arg-type]
        sim.start()
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: starts a real Airflow (scheduler, triggerer, ...); takes minutes")
