"""A DAG run with a review task, answered as people answer it: ``airflow dags test`` and ``airflow api-server``
sharing one SQLite metadata database on loopback.

On Airflow 3.3 ``dags test`` leaves a Human-in-the-loop task parked in ``awaiting_input`` and waits for a response
recorded from outside (the Required Actions page or the HITL REST API of an API server sharing its database); on
3.1-3.2 the task defers to Airflow's HITL trigger, which ``dags test`` runs in-process. Either way the answer goes
through Airflow's own ``PATCH .../hitlDetails`` (the page calls it too). Every process started here is stopped by
its PID (its process group).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from tests.airflow_db import migrated

AIRFLOW = str(Path(sys.executable).with_name("airflow"))
#: Why the runs here need Airflow 3.3+.
DAGS_TEST_HITL = (
    "`airflow dags test` answers HITL tasks from outside on Airflow 3.3+ only: 3.1-3.2 run Airflow's HITL trigger "
    "inline, which fails there ('Unhandled request GetHITLDetailResponse'); the unit tests cover 3.1"
)


def dags_test_answers_hitl() -> bool:
    """:return: whether this Airflow's ``dags test`` waits for a HITL answer given from outside (3.3+)."""
    import airflow
    from packaging.version import Version

    return Version(airflow.__version__).release[:2] >= (3, 3)


#: Who answers (role ``user``: may answer HITL tasks) and who may only look (role ``viewer``).
REVIEWER, VIEWER = "rita", "vera"
#: the states of a task waiting for its reviewer
PARKED = ("awaiting_input", "deferred")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process started in its own session: its group by PID, TERM then KILL."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@dataclass
class ReviewRun:
    """The running API server and ``dags test``, and how to read and answer the run's review."""

    home: Path
    dag_id: str
    base_url: str
    passwords: dict[str, str]
    test: subprocess.Popen[bytes]
    logs: Path
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def db(self) -> Path:
        return self.home / "airflow.db"

    def url(self, path: str) -> str:
        return self.base_url + path

    def token(self, user: str) -> str:
        """``POST /auth/token``, as the UI's login does."""
        if user not in self.tokens:
            resp = requests.post(
                self.url("/auth/token"), json={"username": user, "password": self.passwords[user]}, timeout=30
            )
            assert resp.status_code == 201, resp.text
            self.tokens[user] = str(resp.json()["access_token"])
        return self.tokens[user]

    def headers(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user)}"}

    def run_id(self) -> str | None:
        with contextlib.closing(sqlite3.connect(self.db, timeout=30)) as db:
            row = db.execute("SELECT run_id FROM dag_run WHERE dag_id = ?", (self.dag_id,)).fetchone()
        return None if row is None else str(row[0])

    def detail_path(self, task_id: str, map_index: int = -1) -> str:
        run_id = quote(self.run_id() or "", safe="")
        return f"/api/v2/dags/{self.dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/hitlDetails"

    def task_state(self, task_id: str) -> str | None:
        with contextlib.closing(sqlite3.connect(self.db, timeout=30)) as db:
            row = db.execute(
                "SELECT state FROM task_instance WHERE dag_id = ? AND run_id = ? AND task_id = ?",
                (self.dag_id, self.run_id(), task_id),
            ).fetchone()
        return None if row is None else row[0]

    def wait_for_request(self, task_id: str, *, timeout: float = 240) -> dict[str, Any]:
        """
        The task's HITL request once it waits for an answer: no response recorded yet, and the task parked
        (``awaiting_input`` or ``deferred``). Airflow writes the request before the task leaves its worker, and a
        response recorded in between is kept but does not resume the task (the API server resumes parked tasks
        only: apache-airflow 3.3's ``PATCH .../hitlDetails``), so the test answers only once both are true.
        """
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            assert self.test.poll() is None, f"dags test ended ({self.test.returncode}):\n{self.output()[-4000:]}"
            if self.run_id() is not None:
                resp = requests.get(self.url(self.detail_path(task_id)), headers=self.headers(REVIEWER), timeout=30)
                last = resp.text
                waiting = resp.status_code == 200 and not resp.json().get("response_received")
                if waiting and self.task_state(task_id) in PARKED:
                    return dict(resp.json())
            time.sleep(1)
        raise AssertionError(f"no request of {task_id} waited for an answer: {last}\n{self.output()[-4000:]}")

    def responded(self, task_id: str) -> bool:
        """Whether the task's HITL request has its response."""
        resp = requests.get(self.url(self.detail_path(task_id)), headers=self.headers(REVIEWER), timeout=30)
        return resp.status_code == 200 and bool(resp.json().get("response_received"))

    def answer(self, task_id: str, user: str, chosen: list[str], params: dict[str, Any] | None = None) -> Any:
        """``PATCH .../hitlDetails`` as ``user``: the REST call the Required Actions page makes."""
        return requests.patch(
            self.url(self.detail_path(task_id)),
            json={"chosen_options": chosen, "params_input": params or {}},
            headers=self.headers(user),
            timeout=30,
        )

    def finish(self, timeout: float = 240) -> dict[str, str]:
        """Wait for ``dags test`` to end; the task states."""
        try:
            self.test.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"dags test did not end:\n{self.output()[-4000:]}") from None
        with contextlib.closing(sqlite3.connect(self.db, timeout=30)) as db:
            return dict(db.execute("SELECT task_id, state FROM task_instance WHERE dag_id = ?", (self.dag_id,)))

    def xcom(self, task_id: str, key: str = "return_value") -> Any:
        with contextlib.closing(sqlite3.connect(self.db, timeout=30)) as db:
            row = db.execute(
                "SELECT value FROM xcom WHERE dag_id = ? AND task_id = ? AND key = ?", (self.dag_id, task_id, key)
            ).fetchone()
        return None if row is None else json.loads(row[0])

    def output(self) -> str:
        return (self.logs / "dags-test.log").read_text(errors="replace")


@contextlib.contextmanager
def review_run(home: Path, dag_id: str, dags: Path, simulator: Any, **extra_env: str) -> Iterator[ReviewRun]:
    """
    Start ``airflow api-server`` and ``airflow dags test dag_id`` on one fresh metadata database; stop both.

    :param home: an empty folder for ``AIRFLOW_HOME``.
    :param dags: the DAG folder.
    :param simulator: the running CometAPI simulator (its ``base_url`` and ``api_key``).
    """
    migrated(home)
    passwords = {REVIEWER: secrets.token_urlsafe(12), VIEWER: secrets.token_urlsafe(12)}
    (home / "passwords.json").write_text(json.dumps(passwords))
    port = free_port()
    logs = home / "logs-test"
    logs.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    conn = {"conn_type": "cometapi", "host": simulator.base_url, "password": simulator.api_key or "review-key"}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager."
            "SimpleAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{REVIEWER}:user,{VIEWER}:viewer",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "AIRFLOW_CONN_COMETAPI_DEFAULT": json.dumps(conn),
            "COMETFLUX_OUTPUT_PATH": (home / "images").as_uri(),
            "COMETFLUX_IT_RESULTS": str(home / "results"),
            "COMETFLUX_THUMBNAIL_CACHE": str(home / "thumbnails"),
            "PYTHONUNBUFFERED": "1",
            "NO_COLOR": "1",
            **extra_env,
        }
    )
    started: list[subprocess.Popen[bytes]] = []
    try:
        with (logs / "api-server.log").open("wb") as out:
            server = subprocess.Popen(
                [AIRFLOW, "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        started.append(server)
        base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, (logs / "api-server.log").read_text()[-4000:]
            with contextlib.suppress(requests.RequestException):
                if requests.get(base_url + "/api/v2/monitor/health", timeout=5).status_code == 200:
                    break
            assert time.monotonic() < deadline, (logs / "api-server.log").read_text()[-4000:]
            time.sleep(1)
        with (logs / "dags-test.log").open("wb") as out:
            test = subprocess.Popen(
                [AIRFLOW, "dags", "test", dag_id],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        started.append(test)
        yield ReviewRun(home, dag_id, base_url, passwords, test, logs)
    finally:
        for proc in reversed(started):
            stop(proc)
