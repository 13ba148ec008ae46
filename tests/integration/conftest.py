"""Real Airflow runs: ``airflow dags test`` (:mod:`tests.airflow_cli`), against the simulator on loopback."""

from __future__ import annotations

import json
import os
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import airflow_cli
from tests.airflow_cli import AIRFLOW  # noqa: F401  (the suites import it from here)
from tests.airflow_db import migrated
from tests.compat import plain

TEST_DAGS = Path(__file__).parent / "dags"
EXAMPLE_DAGS = Path(__file__).parents[2] / "example_dags"


def airflow_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__"))}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(TEST_DAGS),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        }
    )
    env.update(extra)
    return env


def migrated_home(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A throwaway AIRFLOW_HOME with a migrated SQLite metadata database."""
    home = tmp_path_factory.mktemp(name)
    migrated(home)
    return home


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The AIRFLOW_HOME shared by this session's ``dags_test`` runs."""
    return migrated_home(tmp_path_factory, "airflow-home")


@dataclass
class DagRunResult:
    """What one ``airflow dags test`` left behind: exit code, output, task states and XComs."""

    returncode: int
    output: str
    states: dict[str, str]
    db: Path
    run_id: str

    def logs(self) -> str:
        """
        The run's output with every run of white space as one space, to search for a message: Airflow 3.0 prints a
        task's exception through rich, wrapped at 80 columns.
        """
        return re.sub(r"\s+", " ", self.output)

    def xcom(self, task_id: str, key: str = "return_value") -> Any:
        with sqlite3.connect(self.db) as conn:
            row = conn.execute(
                "SELECT value FROM xcom WHERE run_id = ? AND task_id = ? AND key = ?", (self.run_id, task_id, key)
            ).fetchone()
        if row is None:
            return None
        value = row[0]
        return json.loads(value) if isinstance(value, (str, bytes)) else value


@pytest.fixture
def dags_test(airflow_home: Path, cometapi_simulator: Any, tmp_path: Path):
    """Run ``airflow dags test DAG_ID`` against the test's simulator; returns a :class:`DagRunResult`."""

    def run(
        dag_id: str, *, folder: Path = TEST_DAGS, timeout: float = 240, reserialize: bool = False, **extra_env: str
    ) -> DagRunResult:
        key = cometapi_simulator.api_key or "it-secret-key"  # the fixture's simulator checks its own key
        conn = {"conn_type": "cometapi", "host": cometapi_simulator.base_url, "password": key}
        env = airflow_env(
            airflow_home,
            AIRFLOW__CORE__DAGS_FOLDER=str(folder),
            AIRFLOW_CONN_COMETAPI_DEFAULT=json.dumps(conn),
            COMETFLUX_IT_OUTPUT=(tmp_path / "images").as_uri(),
            COMETFLUX_IT_RESULTS=str(tmp_path / "results"),
            COMETFLUX_OUTPUT_PATH=(tmp_path / "images").as_uri(),
            **extra_env,
        )
        if reserialize:  # Airflow 3.0's `dags test` leaves the DAG's assets inactive until the DAG is serialized
            done = airflow_cli.run(["dags", "reserialize"], env=env, timeout=timeout)
            assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
        proc = airflow_cli.run(["dags", "test", dag_id], env=env, timeout=timeout)
        db = airflow_home / "airflow.db"
        with sqlite3.connect(db) as conn_db:
            row = conn_db.execute(
                "SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (dag_id,)
            ).fetchone()
            assert row is not None, f"no run of {dag_id} was created:\n{(proc.stdout + proc.stderr)[-4000:]}"
            run_id = row[0]
            states = dict(
                conn_db.execute(
                    "SELECT task_id, state FROM task_instance WHERE run_id = ? AND dag_id = ?", (run_id, dag_id)
                )
            )
        return DagRunResult(proc.returncode, plain(proc.stdout + proc.stderr), states, db, run_id)

    return run


def recorded(tmp_path: Path, dag_id: str) -> dict[str, Any]:
    """What the DAG's downstream ``record`` task read from XCom."""
    return json.loads((tmp_path / "results" / f"{dag_id}.json").read_text())
