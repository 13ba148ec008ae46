"""The suites' way of running ``airflow`` (tests/airflow_cli.py): a warm fork gives what the executable gives, a
run past its timeout is stopped with everything it started, and the server goes on serving its configuration."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests import airflow_cli
from tests.integration.conftest import airflow_env, migrated_home

pytestmark = pytest.mark.integration

SLOW_DAG = """
# a dag file for airflow (both words, or safe mode skips it) whose parsing outlasts any timeout given here
import time
time.sleep(120)
"""


@pytest.fixture
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return migrated_home(tmp_path_factory, "airflow-home-cli")


def test_a_warm_run_answers_as_the_executable_does(home: Path) -> None:
    env = airflow_env(home)
    cold = airflow_cli.run(["version"], env=env, timeout=120, cold=True)  # the executable
    assert airflow_cli._config(env) not in airflow_cli._servers
    warm = airflow_cli.run(["version"], env=env, timeout=120)  # the configuration's server
    server = airflow_cli._servers[airflow_cli._config(env)]
    again = airflow_cli.run(["version"], env=env, timeout=120)
    assert airflow_cli._servers[airflow_cli._config(env)] is server  # one server for the configuration
    assert cold.returncode == warm.returncode == again.returncode == 0, warm.stderr
    assert cold.stdout.strip() == warm.stdout.strip() == again.stdout.strip()
    assert warm.args == [airflow_cli.AIRFLOW, "version"]

    failed = airflow_cli.run(["dags", "test", "no_such_dag"], env=env, timeout=120)  # a failing command's exit code
    assert failed.returncode != 0 and "no_such_dag" in failed.stdout + failed.stderr


def test_a_run_past_its_timeout_is_stopped(home: Path, tmp_path: Path) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "slow.py").write_text(SLOW_DAG)
    env = airflow_env(home, AIRFLOW__CORE__DAGS_FOLDER=str(dags))
    with pytest.raises(subprocess.TimeoutExpired):
        airflow_cli.run(["dags", "test", "slow"], env=env, timeout=3)
    server = airflow_cli._servers[airflow_cli._config(env)]
    assert server.last_pid is not None
    with pytest.raises(ProcessLookupError):  # stopped and reaped
        os.kill(server.last_pid, 0)
    # the server goes on serving, with its own configuration (runs of another one get another server)
    folder = airflow_cli.run(["config", "get-value", "core", "dags_folder"], env=env, timeout=120)
    assert folder.returncode == 0 and folder.stdout.strip() == str(dags)
    assert airflow_cli._servers[airflow_cli._config(env)] is server
