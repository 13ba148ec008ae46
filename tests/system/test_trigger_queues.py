"""
The README's trigger-queue recipe on the production-shaped deployment (Airflow 3.2+): one triggerer dedicated to
CometFlux triggers, so that one request budget is the account's.

A Celery worker serving the queue ``cometflux_work`` and a triggerer started with ``--queues cometflux`` join the
deployment, both with ``[triggerer] queues_enabled``. The DAG ``system_trigger_queue`` defers a mapped operator, a
batch and ``@task.cometflux`` tasks with ``trigger_queue="cometflux"``: every one of their triggers must carry the
queue ``cometflux`` and be held by the dedicated triggerer only (the trigger table's ``queue`` and
``triggerer_id``), never by the deployment's two other triggerers, and every task must succeed with one create per
prompt.
"""

from __future__ import annotations

import time

import pytest

from tests.compat import AIRFLOW_VERSION
from tests.system.conftest import FIGURES, Deployment
from tests.system.processes import free_port, wait_for

pytestmark = [
    pytest.mark.system,
    pytest.mark.timeout(900),
    pytest.mark.skipif(AIRFLOW_VERSION.release[:2] < (3, 2), reason="trigger queues are Airflow 3.2+"),
]

DAG_ID = "system_trigger_queue"
TASKS = 4 + 1 + 2  # mapped operator, batch, decorated
PROMPTS = 4 + 3 + 2
DEDICATED = "cometflux-triggerer"


def trigger_rows(system: Deployment, run_id: str) -> list[tuple[str, int, str | None, str | None]]:
    """Each deferred task of the run: its id, map index, its trigger's queue and the holder's hostname."""
    rows = system.postgres.query(
        """
        SELECT ti.task_id, ti.map_index, t.queue, j.hostname
        FROM task_instance ti JOIN trigger t ON t.id = ti.trigger_id LEFT JOIN job j ON j.id = t.triggerer_id
        WHERE ti.dag_id = %s AND ti.run_id = %s AND ti.state = 'deferred'
        """,
        DAG_ID,
        run_id,
    )
    return [(task, index, queue, host) for task, index, queue, host in rows]


def test_cometflux_triggers_run_on_the_dedicated_triggerer(deployment: Deployment) -> None:
    system, sim = deployment, deployment.simulator
    began = time.monotonic()
    queues = {"AIRFLOW__TRIGGERER__QUEUES_ENABLED": "True"}
    system.start(
        "cometflux-worker",
        *("celery", "worker", "--queues", "cometflux_work", "--concurrency", "4"),
        *("--celery-hostname", "cometflux-worker@%h"),
        AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(free_port()),
        **queues,
    )
    system.start(
        DEDICATED,
        *("triggerer", "--queues", "cometflux"),
        AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=str(free_port()),
        **queues,
    )

    def dedicated_up() -> bool:
        rows = system.postgres.query(
            "SELECT 1 FROM job WHERE job_type = 'TriggererJob' AND state = 'running' AND hostname = %s", DEDICATED
        )
        return bool(rows)

    wait_for("the dedicated triggerer heartbeating", dedicated_up, 180, system.alive())
    worker = system.components["cometflux-worker"]
    wait_for("the cometflux_work worker to be ready", lambda: "ready." in worker.output(), 180, system.alive())

    run_id = system.trigger(DAG_ID)
    #: every deferred task seen with its trigger held, and when first; any trigger seen elsewhere
    seen: dict[tuple[str, int], float] = {}
    elsewhere: list[tuple[str, int, str | None, str | None]] = []

    def finished() -> bool:
        for task, index, queue, host in trigger_rows(system, run_id):  # sampled every half second to the end
            if host is not None:
                seen.setdefault((task, index), time.monotonic() - began)
            if queue != "cometflux" or host not in (None, DEDICATED):
                elsewhere.append((task, index, queue, host))
        states = system.states(DAG_ID, run_id)
        assert "failed" not in states.values(), states
        return list(states.values()) == ["success"] * TASKS

    wait_for("the run to succeed", finished, 600, system.alive())
    assert not elsewhere, f"triggers off the dedicated triggerer or its queue: {elsewhere}"
    assert len(seen) == TASKS, f"tasks seen deferred with their trigger held: {sorted(seen)}"
    creates = sim.creates_per_prompt("system queue ")
    assert len(creates) == PROMPTS and set(creates.values()) == {1}, creates
    FIGURES["6 trigger queue recipe"] = {
        "tasks deferred": TASKS,
        "held by the dedicated triggerer": len(seen),
        "held elsewhere": len(elsewhere),
        "last one held after (s)": round(max(seen.values()), 1),
        "scenario (s)": round(time.monotonic() - began, 1),
    }
    print(FIGURES["6 trigger queue recipe"])
