"""
The provider on a production-shaped Airflow (see ``conftest.py``): PostgreSQL, the CeleryExecutor with Redis, one
Celery worker, two triggerers, the simulator as a process. The scenarios run in this order on one deployment; each
asserts the exact number of creates the simulator saw per prompt and reports its figures (``-rP``, and the
session's summary).

1. Many mapped deferred predictions; the triggerer holding most of them is SIGKILLed: all succeed, one create each.
2. A deferred batch is watched when its triggerer is SIGKILLed: one create per prompt, every image stored.
3. A Celery pool process is SIGKILLed while an inline task waits (``retries=1``): the retry reattaches, one create.
4. A user marks a deferred task failed: its prediction is cancelled; a triggerer stalled past its health check
   (SIGSTOP, then SIGCONT) loses its triggers to the other one and cancels nothing.
5. The canary key of the connection is in none of: a ``pg_dump`` of the database, every log file, the broker.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from tests.compat import AIRFLOW_VERSION
from tests.reliability.secret_search import variants
from tests.system.conftest import FIGURES, TRIGGERER_HEALTH_THRESHOLD, Deployment
from tests.system.processes import wait_for

pytestmark = [pytest.mark.system, pytest.mark.timeout(1500)]

MAPPED = int(os.environ.get("COMETFLUX_SYSTEM_MAPPED", "60"))
BATCH = int(os.environ.get("COMETFLUX_SYSTEM_BATCH", "40"))
#: The task state store (a retry reattaches) and a trigger's ``on_kill`` (a user kill cancels) are Airflow 3.3+.
AIRFLOW_33 = AIRFLOW_VERSION.release[:2] >= (3, 3)


def held_most(system: Deployment, dag_id: str, run_id: str) -> tuple[str, dict[str, int]]:
    """The triggerer holding most of the run's deferred tasks, and what each one holds."""
    holders = system.holders(dag_id, run_id)
    live = {c.name for c in system.triggerers()}
    name, _ = max(((h, n) for h, n in holders.items() if h in live), key=lambda item: item[1])
    return name, dict(holders)


def test_mapped_deferred_survive_a_triggerer_kill(deployment: Deployment) -> None:
    system, sim = deployment, deployment.simulator
    began = time.monotonic()
    run_id = system.trigger("system_mapped")
    prefix = "system mapped "

    def deferred() -> int:
        return list(system.states("system_mapped", run_id).values()).count("deferred")

    created_in = wait_for(
        f"{MAPPED} predictions created", lambda: len(sim.with_prefix(prefix)) >= MAPPED, 600, system.alive()
    )
    # every deferred task's trigger is held by a triggerer
    wait_for(
        "every deferred task's trigger to be picked up",
        lambda: deferred() > 0 and "(unassigned)" not in system.holders("system_mapped", run_id),
        120,
        system.alive(),
    )
    victim_name, holding = held_most(system, "system_mapped", run_id)
    victim = system.components[victim_name]
    held = holding[victim_name]
    assert held >= MAPPED // 4, f"too few tasks deferred at the kill to prove anything: {holding}"
    victim.kill()
    killed_at = time.monotonic()
    system.start_triggerer()  # the lost machine comes back (the survivor takes over before it is up)
    takeover = wait_for(
        f"{victim_name}'s triggers to move to a live triggerer",
        lambda: victim_name not in system.holders("system_mapped", run_id),
        180,
        system.alive(),
    )
    wait_for(
        "every mapped task to succeed",
        lambda: list(system.states("system_mapped", run_id).values()) == ["success"] * MAPPED,
        900,
        system.alive(),
    )
    creates = sim.creates_per_prompt(prefix)
    assert len(creates) == MAPPED and set(creates.values()) == {1}, creates  # exactly one create per prompt
    pushed = system.xcom("system_mapped", run_id, "prediction_id")
    assert sorted(pushed.values()) == sorted(sim.with_prefix(prefix)), "each task pushed its own prediction"
    assert all(p["status"] == "succeeded" for p in sim.with_prefix(prefix).values())
    FIGURES["1 mapped deferred, triggerer SIGKILL"] = {
        "tasks": MAPPED,
        "held by the killed triggerer": held,
        "holders at the kill": json.dumps(holding, sort_keys=True),
        "creates": sum(creates.values()),
        "all created after (s)": round(created_in, 1),
        "takeover after the kill (s)": round(takeover, 1),
        "kill to all succeeded (s)": round(time.monotonic() - killed_at, 1),
        "scenario (s)": round(time.monotonic() - began, 1),
    }
    print(FIGURES["1 mapped deferred, triggerer SIGKILL"])


def test_deferred_batch_survives_a_triggerer_kill(deployment: Deployment) -> None:
    system, sim = deployment, deployment.simulator
    began = time.monotonic()
    run_id = system.trigger("system_batch")
    prefix = "system batch "
    wait_for(
        "the batch to defer with its trigger picked up",
        lambda: sum(n for h, n in system.holders("system_batch", run_id).items() if h != "(unassigned)") == 1,
        600,
        system.alive(),
    )
    time.sleep(3)  # the trigger is polling now
    victim_name, holding = held_most(system, "system_batch", run_id)
    assert holding[victim_name] == 1
    created_before_kill = len(sim.with_prefix(prefix))
    system.components[victim_name].kill()
    system.start_triggerer()
    takeover = wait_for(
        f"the batch trigger to move from {victim_name}",
        lambda: victim_name not in system.holders("system_batch", run_id),
        180,
        system.alive(),
    )
    done = wait_for(
        "the batch to succeed",
        lambda: list(system.states("system_batch", run_id).values()) == ["success"],
        900,
        system.alive(),
    )
    creates = sim.creates_per_prompt(prefix)
    assert len(creates) == BATCH and set(creates.values()) == {1}, creates
    stored = sorted((system.output / "batch").rglob("*.png"))
    assert len(stored) == BATCH, stored
    result = system.xcom("system_batch", run_id, "return_value")[("batch", -1)]
    assert len(result) == BATCH and all(len(uris) == 1 for uris in result)
    assert {Path(uris[0].removeprefix("file://")).name for uris in result} == {p.name for p in stored}
    FIGURES["2 deferred batch, triggerer SIGKILL"] = {
        "prompts": BATCH,
        "created before the kill": created_before_kill,
        "creates": sum(creates.values()),
        "images stored": len(stored),
        "takeover after the kill (s)": round(takeover, 1),
        "kill to success (s)": round(takeover + done, 1),
        "scenario (s)": round(time.monotonic() - began, 1),
    }
    print(FIGURES["2 deferred batch, triggerer SIGKILL"])


def test_inline_wait_survives_a_celery_pool_kill(deployment: Deployment) -> None:
    system, sim = deployment, deployment.simulator
    began = time.monotonic()
    run_id = system.trigger("system_inline_retry")
    prefix = "system inline retry"

    def task() -> tuple[str | None, int, int | None]:
        rows = system.postgres.query(
            "SELECT state, try_number, pid FROM task_instance WHERE dag_id = 'system_inline_retry' AND run_id = %s",
            run_id,
        )
        return rows[0] if rows else (None, 0, None)

    wait_for(
        "the inline task to wait on its prediction",
        lambda: len(sim.with_prefix(prefix)) == 1 and task()[0] == "running" and task()[2] is not None,
        300,
        system.alive(),
    )
    time.sleep(3)  # it is polling now
    worker = system.components["celery-worker"]
    task_process = psutil.Process(int(task()[2]))
    pool = task_process.parent()
    assert pool is not None and pool.pid in {c.pid for c in worker.children()}, "the task runs under the worker"
    pool.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    retried = wait_for("the retry to start", lambda: task()[1] == 2 and task()[0] == "running", 300, system.alive())
    done = wait_for("the retry to succeed", lambda: task()[0] == "success", 300, system.alive())
    if task_process.is_running():  # orphaned by its pool process; it belongs to the worker's group, ended here
        task_process.kill()
    creates = sim.creates_per_prompt(prefix)
    attempt_2 = next((system.home / "logs" / "dag_id=system_inline_retry").rglob("attempt=2.log")).read_text()
    if AIRFLOW_33:
        assert sum(creates.values()) == 1, creates
        assert "1 reconnected" in attempt_2, attempt_2[-3000:]
    FIGURES["3 inline wait, Celery pool process SIGKILL"] = {
        "creates": sum(creates.values()),
        "retry reattached": "1 reconnected" in attempt_2,
        "kill to retry running (s)": round(retried, 1),
        "kill to success (s)": round(time.monotonic() - killed_at, 1),
        "scenario (s)": round(time.monotonic() - began, 1),
    }
    assert done >= 0
    print(FIGURES["3 inline wait, Celery pool process SIGKILL"])


def test_user_kill_cancels_and_a_triggerer_stall_does_not(deployment: Deployment) -> None:
    system, sim = deployment, deployment.simulator
    began = time.monotonic()
    figures: dict[str, object] = {}

    # a triggerer stalled past its health check: its triggers move, and on waking it drops them, cancelling nothing
    stall_run = system.trigger("system_stall")
    wait_for(
        "four stalled-scenario tasks deferred and picked up",
        lambda: sum(n for h, n in system.holders("system_stall", stall_run).items() if h != "(unassigned)") == 4,
        300,
        system.alive(),
    )
    time.sleep(3)
    cancels_before = sim.stats()["cancels"]
    victim_name, holding = held_most(system, "system_stall", stall_run)
    victim = system.components[victim_name]
    victim.signal(signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        moved = wait_for(
            f"the stalled {victim_name}'s triggers to move",
            lambda: victim_name not in system.holders("system_stall", stall_run),
            TRIGGERER_HEALTH_THRESHOLD + 120,
            [c for c in system.alive() if c is not victim],
        )
    finally:
        victim.signal(signal.SIGCONT)
        stopped_for = time.monotonic() - stopped_at
    time.sleep(10)  # awake: it sees its triggers gone and drops them; a cancel, if any, would be sent now
    wait_for(
        "the stalled run to succeed",
        lambda: list(system.states("system_stall", stall_run).values()) == ["success"] * 4,
        300,
        [c for c in system.alive() if c is not victim],
    )
    stall_creates = sim.creates_per_prompt("system stall ")
    assert len(stall_creates) == 4 and set(stall_creates.values()) == {1}, stall_creates
    assert sim.stats()["cancels"] == cancels_before, "a stalled triggerer must cancel nothing"
    assert all(p["status"] == "succeeded" for p in sim.with_prefix("system stall ").values())
    figures.update(
        {
            "stall: held by the stalled triggerer": holding[victim_name],
            "stall: moved after (s)": round(moved, 1),
            "stall: stopped for (s)": round(stopped_for, 1),
            "stall: trigger logs saying 'moved to another triggerer'": sum(
                path.read_text(errors="replace").count("moved to another triggerer")
                for path in (system.home / "logs" / "dag_id=system_stall").rglob("*.log.trigger.*")
            ),
            "stall: stalled triggerer afterwards": "running" if victim.alive() else f"exited {victim.proc.returncode}",
            "stall: cancels": sim.stats()["cancels"] - cancels_before,
            "stall: creates": sum(stall_creates.values()),
        }
    )
    if not victim.alive():
        victim.killed = True  # Airflow may make it exit on waking; either way it must cancel nothing

    # a user marks a deferred task failed: the trigger's on_kill cancels its prediction (Airflow 3.3+)
    run_id = system.trigger("system_user_fail")
    wait_for(
        "the task to defer and its trigger to poll",
        lambda: (
            sum(n for h, n in system.holders("system_user_fail", run_id).items() if h != "(unassigned)") == 1
            and len(sim.with_prefix("system marked failed")) == 1
        ),
        300,
        system.alive(),
    )
    time.sleep(3)
    (pid,) = sim.with_prefix("system marked failed")
    answer = system.rest(
        "PATCH", f"/dags/system_user_fail/dagRuns/{run_id}/taskInstances/marked_failed", {"new_state": "failed"}
    )
    assert answer.status_code == 200, answer.text
    marked_at = time.monotonic()
    if AIRFLOW_33:
        cancelled = wait_for(
            "the prediction to be cancelled",
            lambda: sim.predictions()[pid]["status"] == "canceled",
            120,
            system.alive(),
        )
        figures["user kill: cancelled after (s)"] = round(cancelled, 1)
    assert system.states("system_user_fail", run_id) == {("marked_failed", -1): "failed"}
    assert sum(sim.creates_per_prompt("system marked failed").values()) == 1
    figures["user kill: cancels"] = sim.stats()["cancels"] - cancels_before
    figures["user kill: waited (s)"] = round(time.monotonic() - marked_at, 1)
    figures["scenario (s)"] = round(time.monotonic() - began, 1)
    FIGURES["4 user kill cancels, triggerer stall does not"] = figures
    print(figures)
    if AIRFLOW_33:
        assert figures["user kill: cancels"] == 1


def kombu_bodies(value: bytes) -> bytes:
    """Broker messages hold their body base64-encoded: the decoded bodies, to be searched as well."""
    decoded: list[bytes] = []
    for line in value.splitlines():
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if isinstance(message, dict) and isinstance(message.get("body"), str):
            try:
                decoded.append(base64.b64decode(message["body"]))
            except ValueError:
                continue
    return b"\n".join(decoded)


@pytest.mark.ends_deployment  # it stops every component to read their logs whole
def test_canary_key_is_nowhere(deployment: Deployment) -> None:
    system = deployment
    needles = [form.encode() for form in variants(system.canary)]
    searched: dict[str, int] = {}
    hits: list[str] = []

    def scan(source: str, data: bytes) -> None:
        searched[source] = len(data)
        hits.extend(f"{source}: {needle[:14]!r}" for needle in needles if needle in data)

    # the broker first, while the system still runs
    broker = system.redis.everything()
    for key, value in broker.items():
        scan(f"redis {key}", value + b"\n" + kombu_bodies(value))
    dump = system.postgres.dump()
    scan("pg_dump", dump)
    stopped = [c for c in system.started if c.alive()]
    for component in reversed(stopped):
        component.stop()
    log_files = [p for root in (system.home, system.logs) for p in root.rglob("*") if p.is_file()]
    for path in log_files:
        scan(str(path), path.read_bytes())
    task_logs = [p for p in log_files if "task_id=" in str(p)]
    trigger_logs = [p for p in task_logs if ".log.trigger." in p.name]
    # positive controls: the searched places hold what they should, so an empty search proves something
    assert system.simulator.base_url.encode() in dump, "the connection row is in the dump"
    assert b"system_mapped" in dump and len(task_logs) >= MAPPED and trigger_logs
    assert any(name.startswith("redis _kombu") or name.startswith("redis celery") for name in searched), searched
    FIGURES["5 canary key"] = {
        "places with the key": len(hits),
        "pg_dump bytes": len(dump),
        "log files": len(log_files),
        "task and trigger log files": len(task_logs),
        "redis keys": len(broker),
    }
    print(FIGURES["5 canary key"])
    assert not hits, hits
