"""
A real Airflow deployment for the tests in this folder, on loopback only.

It migrates a SQLite metadata database in a temporary AIRFLOW_HOME and starts ``airflow api-server``,
``scheduler`` (LocalExecutor), ``dag-processor`` and ``triggerer`` as separate processes, each in its own process
group, with the simple auth manager and one admin whose password the tests know. The CometAPI simulator runs in
the test process. At the end every process group is stopped, and the tests fail if any process is left.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_cometflux.testing.simulator import CometAPISimulator
from tests.airflow_db import migrated
from tests.system.processes import Component, free_port, stop_all

ROOT = Path(__file__).parents[2]
EXAMPLE_DAGS = ROOT / "example_dags"
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
ADMIN = "admin"
#: The key the simulator accepts; the connection created through the REST API carries it.
API_KEY = "sk-services-" + secrets.token_hex(8)
#: Seconds each simulated prediction takes: long enough that deferred tasks really wait in the triggerer, and
#: longer than the LocalExecutor may take to report a deferring run's end (6 s seen on 2 loaded cores): when the
#: trigger fires first, the scheduler takes that late report for the resumed task's and fails it (an Airflow race).
RUN_SECONDS = 10.0

#: REST answers worth quoting, printed at the end of the session (see ``pytest_terminal_summary``).
REST_ANSWERS: dict[str, Any] = {}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "services: starts Airflow's api-server, scheduler, dag-processor and triggerer (slow)"
    )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not REST_ANSWERS:
        return
    terminalreporter.section("Airflow REST API answers (services test)")
    for name, answer in REST_ANSWERS.items():
        terminalreporter.write_line(f"{name}:")
        terminalreporter.write_line(json.dumps(answer, indent=2, sort_keys=True, default=str))


@dataclass
class AirflowServices:
    """The running deployment: where it listens, how to log in, where its logs are."""

    home: Path
    base_url: str
    password: str
    simulator: CometAPISimulator
    env: dict[str, str]
    procs: dict[str, Component] = field(default_factory=dict)
    session: requests.Session = field(default_factory=requests.Session)

    def logs(self) -> str:
        return "\n".join(f"----- {name} -----\n{proc.output(3000)}" for name, proc in self.procs.items())

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def login(self) -> str:
        """``POST /auth/token`` with the admin's password; the token is then sent with every request."""
        resp = requests.post(self.url("/auth/token"), json={"username": ADMIN, "password": self.password}, timeout=30)
        assert resp.status_code == 201, resp.text
        token = resp.json()["access_token"]
        self.session.headers["Authorization"] = f"Bearer {token}"
        return str(token)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.get(self.url(path), timeout=60, **kwargs)

    def post(self, path: str, body: Any) -> requests.Response:
        return self.session.post(self.url(path), json=body, timeout=60)

    def patch(self, path: str, body: Any) -> requests.Response:
        return self.session.patch(self.url(path), json=body, timeout=60)

    def check_alive(self) -> None:
        dead = {name: proc.proc.returncode for name, proc in self.procs.items() if not proc.alive()}
        assert not dead, f"Airflow components exited: {dead}\n{self.logs()}"


def airflow_env(home: Path, port: int, passwords: Path) -> dict[str, str]:
    from cryptography.fernet import Fernet

    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    base_url = f"http://127.0.0.1:{port}"
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLE_DAGS),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW__API__BASE_URL": base_url,
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            # The worker's and the triggerer's log servers: free ports, not the fixed defaults (8793, 8794).
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "PYTHONUNBUFFERED": "1",
            "NO_COLOR": "1",
        }
    )
    return env


def wait_healthy(services: AirflowServices, timeout: float = 180.0) -> dict[str, Any]:
    """Wait until ``/api/v2/monitor/health`` reports every component healthy; returns that answer."""
    deadline = time.monotonic() + timeout
    answer: dict[str, Any] = {}
    while time.monotonic() < deadline:
        services.check_alive()
        with contextlib.suppress(requests.RequestException, ValueError):
            answer = requests.get(services.url("/api/v2/monitor/health"), timeout=10).json()
            statuses = {k: (v or {}).get("status") for k, v in answer.items() if isinstance(v, dict) or v is None}
            if statuses and all(s == "healthy" for s in statuses.values()):
                return answer
        time.sleep(1)
    raise AssertionError(f"Airflow did not become healthy: {answer}\n{services.logs()}")


@pytest.fixture(scope="session")
def airflow_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowServices]:
    """Airflow's four services, migrated and healthy, with an admin logged in through ``POST /auth/token``."""
    home = tmp_path_factory.mktemp("airflow-services")
    password = secrets.token_urlsafe(16)
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps({ADMIN: password}))
    port = free_port()
    env = airflow_env(home, port, passwords)
    migrated(home)

    with CometAPISimulator("127.0.0.1", 0, run_seconds=RUN_SECONDS, api_key=API_KEY) as simulator:
        services = AirflowServices(home, f"http://127.0.0.1:{port}", password, simulator, env)
        commands = {
            "api-server": [AIRFLOW, "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            "scheduler": [AIRFLOW, "scheduler"],
            "dag-processor": [AIRFLOW, "dag-processor"],
            "triggerer": [AIRFLOW, "triggerer"],
        }
        try:
            for name in COMPONENTS:
                services.procs[name] = Component(name, commands[name], env, home, cwd=home)
            REST_ANSWERS["GET /api/v2/monitor/health"] = wait_healthy(services)
            services.login()
            yield services
        finally:
            left = stop_all(services.procs.values())
            services.session.close()
    assert not left, f"processes left running: {left}"
