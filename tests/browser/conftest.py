"""
A real Airflow API server with the provider's UI plugin, on loopback, and a DAG run that stored images.

The metadata database is SQLite in a temporary AIRFLOW_HOME; ``airflow dags test`` runs ``cometflux_browser``
against the CometAPI simulator (which keeps running, serving the delivery URLs); then ``airflow api-server`` starts
with the simple auth manager and one configured **viewer** (not all-admins). Every process this starts is stopped
by its PID (its process group) however the tests end.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from airflow_provider_cometflux.testing.simulator import CometAPISimulator
from tests.airflow_db import migrated
from tests.hitl_run import free_port, stop

HERE = Path(__file__).parent
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
DAG_ID = "cometflux_browser"
VIEWER = "vera"


@dataclass
class UIServer:
    """The running API server, its viewer's password, and the run the DAG made."""

    base_url: str
    password: str
    run_id: str
    images: Path
    home: Path
    log: Path

    def url(self, path: str) -> str:
        return self.base_url + path

    def token(self) -> str:
        """``POST /auth/token`` with the viewer's password, as the UI's login does."""
        resp = requests.post(self.url("/auth/token"), json={"username": VIEWER, "password": self.password}, timeout=30)
        assert resp.status_code == 201, resp.text
        return str(resp.json()["access_token"])


def base_env(home: Path, port: int, passwords: Path, images: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(HERE / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager."
            "SimpleAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{VIEWER}:viewer",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "COMETFLUX_OUTPUT_PATH": images.as_uri(),
            "PYTHONUNBUFFERED": "1",
            "NO_COLOR": "1",
        }
    )
    return env


@pytest.fixture(scope="session")
def ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UIServer]:
    home = tmp_path_factory.mktemp("browser-home")
    images = home / "images"
    password = secrets.token_urlsafe(12)
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps({VIEWER: password}))
    port = free_port()
    env = base_env(home, port, passwords, images)
    logs = home / "logs-test"
    logs.mkdir()
    migrated(home)
    with CometAPISimulator(run_seconds=0.5, api_key="browser-key") as sim:
        conn = {"conn_type": "cometapi", "host": sim.base_url, "password": "browser-key"}
        run_env = {**env, "AIRFLOW_CONN_COMETAPI_DEFAULT": json.dumps(conn)}
        test = subprocess.run(
            [AIRFLOW, "dags", "test", DAG_ID], env=run_env, capture_output=True, text=True, timeout=300
        )
        (logs / "dags-test.log").write_text(test.stdout + test.stderr)
        with sqlite3.connect(home / "airflow.db") as db:
            (run_id,) = db.execute("SELECT run_id FROM dag_run WHERE dag_id = ?", (DAG_ID,)).fetchone()
            states = dict(db.execute("SELECT task_id || ':' || map_index, state FROM task_instance"))
        assert set(states.values()) == {"success"}, (states, (test.stdout + test.stderr)[-4000:])
        log = logs / "api-server.log"
        with log.open("wb") as out:
            server = subprocess.Popen(
                [AIRFLOW, "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            ui = UIServer(f"http://127.0.0.1:{port}", password, run_id, images, home, log)
            deadline = time.monotonic() + 180
            while True:
                assert server.poll() is None, log.read_text()[-4000:]
                with contextlib.suppress(requests.RequestException):
                    if requests.get(ui.url("/api/v2/monitor/health"), timeout=5).status_code == 200:
                        break
                assert time.monotonic() < deadline, log.read_text()[-4000:]
                time.sleep(1)
            yield ui
        finally:
            stop(server)
