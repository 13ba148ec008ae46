"""
A production-shaped Airflow for the system suite, on loopback only.

PostgreSQL (a fresh cluster) holds the metadata database, Redis is the Celery broker and PostgreSQL the result
backend; ``airflow db migrate``, then the API server, scheduler, DAG processor, one ``airflow celery worker`` and
two triggerers run as separate processes, each in its own process group and with its own log server port, and each
naming itself (``[core] hostname_callable``) as a component on its own machine would. The CometAPI simulator runs as
a process too; the tests count its creates and cancels through its ``/_sim`` control routes. The connection is
created in the metadata database through the REST API, with a canary key no file, log or message may hold.

Everything is stopped by PID (process group) at the end of the session, however it ends; the session fails if a
process is left.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.system.backends import Postgres, Redis, start_postgres, start_redis
from tests.system.processes import Component, free_port, stop_all, wait_for

ROOT = Path(__file__).parents[2]
SYSTEM_DAGS = Path(__file__).parent / "dags"
BIN = Path(sys.executable).parent
AIRFLOW = str(BIN / "airflow")
ADMIN = "admin"
#: Seconds without a heartbeat after which a triggerer's triggers go to another one (Airflow's default is 30).
TRIGGERER_HEALTH_THRESHOLD = 15
#: Figures each scenario reports, printed at the end of the session and written to ``system-figures.json``.
FIGURES: dict[str, dict[str, Any]] = {}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "system: PostgreSQL, CeleryExecutor with Redis, two triggerers and the simulator as processes"
    )
    config.addinivalue_line(
        "markers", "ends_deployment: stops the session's deployment; runs after every other system scenario"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The scenario that stops the deployment (the canary: it reads every log whole) runs last, whatever its file."""
    items.sort(key=lambda item: item.get_closest_marker("ends_deployment") is not None)  # stable: the rest in order


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    terminalreporter.section("system suite figures")
    for scenario, figures in FIGURES.items():
        text = ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items())
        terminalreporter.write_line(f"{scenario}: {text}")
    out = Path(os.environ.get("COMETFLUX_SYSTEM_FIGURES", ROOT / ".pytest_cache" / "system-figures.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(FIGURES, indent=2, sort_keys=True))
    terminalreporter.write_line(f"(written to {out})")


class Simulator:
    """The simulator process, read through its control routes."""

    def __init__(self, component: Component, base_url: str) -> None:
        self.component = component
        self.base_url = base_url

    def stats(self) -> dict[str, Any]:
        return dict(requests.get(f"{self.base_url}/_sim/stats", timeout=30).json())

    def predictions(self) -> dict[str, dict[str, Any]]:
        return dict(requests.get(f"{self.base_url}/_sim/predictions", timeout=60).json())

    def with_prefix(self, prefix: str) -> dict[str, dict[str, Any]]:
        """The predictions whose prompt starts with ``prefix``."""
        return {
            pid: p
            for pid, p in self.predictions().items()
            if str((p.get("input") or {}).get("prompt", "")).startswith(prefix)
        }

    def creates_per_prompt(self, prefix: str) -> Counter[str]:
        return Counter(str(p["input"]["prompt"]) for p in self.with_prefix(prefix).values())


@dataclass
class Deployment:
    """The running system: its components, backends, REST session and simulator."""

    home: Path
    logs: Path
    output: Path
    env: dict[str, str]
    api_port: int
    postgres: Postgres
    redis: Redis
    simulator: Simulator
    canary: str
    password: str
    components: dict[str, Component] = field(default_factory=dict)
    #: every component started, in order (a restarted triggerer keeps its predecessor here, to be stopped too)
    started: list[Component] = field(default_factory=list)
    session: requests.Session = field(default_factory=requests.Session)
    _triggerers: int = 0

    # -- processes ---------------------------------------------------------------------------------------------

    def start(self, name: str, *args: str, **env: str) -> Component:
        component_env = {**self.env, "COMETFLUX_HOSTNAME": name, **env}
        component = Component(name, [AIRFLOW, *args], component_env, self.logs, cwd=self.home)
        self.components[name] = component
        self.started.append(component)
        return component

    def start_triggerer(self) -> Component:
        """A new triggerer, named ``triggerer-N``, with a trigger log server port of its own."""
        self._triggerers += 1
        return self.start(
            f"triggerer-{self._triggerers}",
            "triggerer",
            AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=str(free_port()),
        )

    def triggerers(self) -> list[Component]:
        return [c for name, c in self.components.items() if name.startswith("triggerer-") and not c.killed]

    def alive(self) -> list[Component]:
        return [c for c in self.components.values() if not c.killed]

    # -- REST --------------------------------------------------------------------------------------------------

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}/api/v2"

    def login(self) -> None:
        resp = requests.post(
            f"http://127.0.0.1:{self.api_port}/auth/token",
            json={"username": ADMIN, "password": self.password},
            timeout=60,
        )
        assert resp.status_code == 201, resp.text
        self.session.headers["Authorization"] = f"Bearer {resp.json()['access_token']}"

    def rest(self, method: str, path: str, body: Any = None) -> requests.Response:
        return self.session.request(method, f"{self.api}{path}", json=body, timeout=60)

    def trigger(self, dag_id: str) -> str:
        """Wait until ``dag_id`` is parsed, start a run of it and return its run id."""
        wait_for(f"DAG {dag_id} to be parsed", lambda: self.rest("GET", f"/dags/{dag_id}").status_code == 200, 180)
        answer = self.rest("POST", f"/dags/{dag_id}/dagRuns", {"logical_date": None})
        assert answer.status_code == 200, answer.text
        return str(answer.json()["dag_run_id"])

    # -- the metadata database ---------------------------------------------------------------------------------

    def states(self, dag_id: str, run_id: str) -> dict[tuple[str, int], str | None]:
        rows = self.postgres.query(
            "SELECT task_id, map_index, state FROM task_instance WHERE dag_id = %s AND run_id = %s", dag_id, run_id
        )
        return {(task, index): state for task, index, state in rows}

    def holders(self, dag_id: str, run_id: str) -> Counter[str]:
        """How many of the run's deferred tasks each triggerer (by component name) holds the trigger of."""
        rows = self.postgres.query(
            """
            SELECT coalesce(j.hostname, '(unassigned)'), count(*)
            FROM task_instance ti JOIN trigger t ON t.id = ti.trigger_id LEFT JOIN job j ON j.id = t.triggerer_id
            WHERE ti.dag_id = %s AND ti.run_id = %s AND ti.state = 'deferred'
            GROUP BY 1
            """,
            dag_id,
            run_id,
        )
        return Counter({host: int(count) for host, count in rows})

    def xcom(self, dag_id: str, run_id: str, key: str) -> dict[tuple[str, int], Any]:
        rows = self.postgres.query(
            "SELECT task_id, map_index, value FROM xcom WHERE dag_id = %s AND run_id = %s AND key = %s",
            dag_id,
            run_id,
            key,
        )
        return {(task, index): value for task, index, value in rows}  # JSON columns come back decoded

    def check_alive(self) -> None:
        dead = {c.name: c.proc.returncode for c in self.alive() if c.proc.poll() is not None}
        assert not dead, f"components exited: {dead}\n" + "\n".join(
            f"--- {c.name} ---\n{c.output(2000)}" for c in self.alive()
        )


def system_env(
    home: Path, api_port: int, postgres: Postgres, redis: Redis, passwords: Path, output: Path
) -> dict[str, str]:
    """The environment every Airflow component of the deployment shares."""
    from cryptography.fernet import Fernet

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__", "COMETAPI"))}
    base_url = f"http://127.0.0.1:{api_port}"
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
            "NO_COLOR": "1",
            "AIRFLOW__CORE__DAGS_FOLDER": str(SYSTEM_DAGS),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__PARALLELISM": "128",
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "128",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.system.hostname.component_hostname",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": postgres.url,
            "AIRFLOW__CELERY__BROKER_URL": redis.url,
            "AIRFLOW__CELERY__RESULT_BACKEND": postgres.result_backend,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "8",
            "AIRFLOW__API__BASE_URL": base_url,
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "60",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
            "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": str(TRIGGERER_HEALTH_THRESHOLD),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "COMETFLUX_SYSTEM_OUTPUT": str(output),
        }
    )
    return env


def api_answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).status_code == 200
    except requests.RequestException:
        return False


@pytest.fixture(scope="session")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """The whole system, migrated, healthy, with the ``cometapi_default`` connection in the metadata database."""
    began = time.monotonic()
    base = tmp_path_factory.mktemp("system")
    home, logs, output = base / "airflow-home", base / "component-logs", base / "output"
    for path in (home, logs, output):
        path.mkdir()
    canary = f"sk-canary-{secrets.token_hex(16)}"
    password = secrets.token_urlsafe(16)
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps({ADMIN: password}))
    timings: dict[str, float] = {}
    postgres = start_postgres(logs)
    redis = None
    sim_component = None
    deployment_: Deployment | None = None
    try:
        redis = start_redis(logs)
        timings["postgres and redis up"] = time.monotonic() - began
        sim_port = free_port()
        sim_env = {**os.environ, "COMETAPI_SIMULATOR_API_KEY": canary}
        sim_component = Component(
            "simulator",
            [sys.executable, "-m", "airflow_provider_cometflux.testing.simulator", "--port", str(sim_port)],
            sim_env,
            logs,
        )
        simulator = Simulator(sim_component, f"http://127.0.0.1:{sim_port}")
        wait_for("the simulator", lambda: api_answers(f"{simulator.base_url}/_sim/stats"), 60, [sim_component])

        api_port = free_port()
        env = system_env(home, api_port, postgres, redis, passwords, output)
        deployment_ = Deployment(home, logs, output, env, api_port, postgres, redis, simulator, canary, password)
        migrate_began = time.monotonic()
        migrate = deployment_.start("db-migrate", "db", "migrate")
        wait_for("airflow db migrate", lambda: migrate.proc.poll() is not None, 600)
        assert migrate.proc.returncode == 0, migrate.output(4000)
        deployment_.components.pop("db-migrate")
        timings["db migrate"] = time.monotonic() - migrate_began

        up_began = time.monotonic()
        api = deployment_.start("api-server", "api-server", "--host", "127.0.0.1", "--port", str(api_port))
        wait_for("the API server", lambda: api_answers(f"{deployment_.api}/monitor/health"), 240, [api])
        deployment_.start("scheduler", "scheduler")
        deployment_.start("dag-processor", "dag-processor")
        deployment_.start("celery-worker", "celery", "worker", "--concurrency", "8")
        deployment_.start_triggerer()
        deployment_.start_triggerer()
        deployment_.login()
        conn = {
            "connection_id": "cometapi_default",
            "conn_type": "cometapi",
            "host": simulator.base_url,
            "password": canary,
        }
        answer = deployment_.rest("POST", "/connections", conn)
        assert answer.status_code == 201, answer.text

        def triggerers_up() -> bool:
            rows = postgres.query("SELECT hostname FROM job WHERE job_type = 'TriggererJob' AND state = 'running'")
            return {"triggerer-1", "triggerer-2"} <= {row[0] for row in rows}

        wait_for("two triggerers heartbeating", triggerers_up, 180, deployment_.alive())
        workers = deployment_.components["celery-worker"]
        wait_for("the Celery worker to be ready", lambda: "ready." in workers.output(), 180, deployment_.alive())
        timings["services up"] = time.monotonic() - up_began
        FIGURES["deployment"] = {f"{k} (s)": round(v, 1) for k, v in timings.items()}
        yield deployment_
    finally:
        left: list[str] = []
        if deployment_ is not None:
            deployment_.session.close()
            left += stop_all(deployment_.started)
        if sim_component is not None:
            left += sim_component.stop()
        if redis is not None:
            left += redis.stop()
        left += postgres.stop()
    assert not left, f"processes left running: {left}"
