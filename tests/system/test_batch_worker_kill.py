"""A worker killed while creating a batch: the retry resumes from the saved ids and pays once per prompt (3.3+).

The batch creates one prediction a second from a Celery worker; once a few are made, the test SIGKILLs the pool
process running it (between two creates, when none is in flight), as an OOM kill would. The scheduler retries the
task; the retry reads the ids the first attempt saved to the task state store, watches those predictions and
creates only the prompts that have none.
"""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from tests.compat import AIRFLOW_VERSION
from tests.system.conftest import FIGURES, Deployment
from tests.system.processes import wait_for

pytestmark = [pytest.mark.system, pytest.mark.timeout(900)]

PROMPTS = int(os.environ.get("COMETFLUX_SYSTEM_KILL_PROMPTS", "12"))
KILL_AFTER = 4


@pytest.mark.skipif(AIRFLOW_VERSION.release[:2] < (3, 3), reason="the task state store arrived in Airflow 3.3")
def test_a_batch_resumes_after_its_worker_died_mid_creation(deployment: Deployment) -> None:
    system, sim = deployment, deployment.simulator
    began = time.monotonic()
    prefix = "system create kill"
    run_id = system.trigger("system_batch_create_kill")

    def task() -> tuple[str | None, int, int | None]:
        rows = system.postgres.query(
            "SELECT state, try_number, pid FROM task_instance WHERE dag_id = 'system_batch_create_kill' "
            "AND run_id = %s",
            run_id,
        )
        return rows[0] if rows else (None, 0, None)

    wait_for(
        f"the batch to create {KILL_AFTER} predictions",
        lambda: len(sim.with_prefix(prefix)) >= KILL_AFTER and task()[2] is not None,
        300,
        system.alive(),
    )
    made = len(sim.with_prefix(prefix))
    wait_for("the next create", lambda: len(sim.with_prefix(prefix)) > made, 30, system.alive())
    time.sleep(0.3)  # that create is answered and saved; the next one is a second away
    created_before_kill = len(sim.with_prefix(prefix))
    task_process = psutil.Process(int(task()[2]))
    pool = task_process.parent()
    assert pool is not None and pool.pid in {c.pid for c in system.components["celery-worker"].children()}
    pool.send_signal(signal.SIGKILL)
    if task_process.is_running():
        task_process.kill()
    killed_at = time.monotonic()
    wait_for("the retry to start", lambda: task()[1] == 2, 300, system.alive())
    wait_for("the retry to succeed", lambda: task()[0] == "success", 300, system.alive())
    creates = sim.creates_per_prompt(prefix)
    assert len(creates) == PROMPTS and set(creates.values()) == {1}, creates  # nothing paid twice
    result = system.xcom("system_batch_create_kill", run_id, "return_value")[("batch", -1)]
    assert len(result) == PROMPTS and all(len(urls) == 1 for urls in result)
    attempt_2 = next((system.home / "logs" / "dag_id=system_batch_create_kill").rglob("attempt=2.log")).read_text()
    assert "Predictions of an earlier attempt:" in attempt_2, attempt_2[-3000:]
    FIGURES["3b batch, worker SIGKILL mid-creation"] = {
        "prompts": PROMPTS,
        "created before the kill": created_before_kill,
        "creates": sum(creates.values()),
        "kill to success (s)": round(time.monotonic() - killed_at, 1),
        "scenario (s)": round(time.monotonic() - began, 1),
    }
    print(FIGURES["3b batch, worker SIGKILL mid-creation"])
