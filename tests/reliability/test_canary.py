"""The API key stays secret: plant canary keys, run the canary DAG through success and failure paths in a real
``airflow dags test``, then search everything the run left behind for them.

One key is accepted; the other is refused with a 401 that quotes it back (as some services do). The paths:
inline and deferred success (with durable copies), a failed prediction, a timeout (with its cancel), a 401 on
the polls, the wrong key on the create, and the sensor in poke, reschedule and deferrable mode.
"""

from __future__ import annotations

import secrets
import sqlite3
from pathlib import Path

import pytest

from tests.reliability.conftest import RunDag
from tests.reliability.secret_search import found, provider_hits, search_run

pytestmark = pytest.mark.integration

EXPECTED_STATES = {
    "inline_success": "success",
    "deferred_success": "success",
    "submit": "success",
    "sensor_poke": "success",
    "sensor_reschedule": "success",
    "sensor_deferrable": "success",
    **{f"{path}_{case}": "failed" for path in ("inline", "deferred") for case in ("failed", "timeout", "poll_refused")},
    "inline_wrong_key": "failed",
    "deferred_wrong_key": "failed",
}


def test_canary_key_never_leaks(
    run_dag: RunDag, simulator_factory, reliability_home: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    accepted = f"sk-canary-{secrets.token_hex(16)}"
    refused = f"sk-canary-refused-{secrets.token_hex(16)}"
    sim = simulator_factory(run_seconds=0.3, api_key=accepted, echo_key=True)
    run = run_dag(
        "canary",
        connections={"cometapi_default": (sim.base_url, accepted), "cometapi_refused": (sim.base_url, refused)},
        COMETFLUX_CANARY_OUTPUT=(tmp_path / "images").as_uri(),
    )
    assert run.states == EXPECTED_STATES, run.output[-4000:]
    # the paths really ran: failures for the reasons meant, a refusal that quoted the key (masked), a deferral
    assert "ended with status 'failed'" in run.output  # the failure's text (3.1 prints it outside the task's slice)
    assert "last status 'processing'" in run.output
    assert "Incorrect API key provided: ***" in run.output
    assert "HTTP 401" in run.output
    assert "[DAG TEST] running trigger in line" in run.output
    assert sim.stats["responses"]["401"] >= 4

    report = search_run(reliability_home, {"airflow dags test": run.output}, [accepted, refused])
    image_names = "\n".join(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert accepted not in image_names and refused not in image_names

    # positive controls: the same search finds what is known to be there, in each kind of source
    with sqlite3.connect(run.db) as db:
        (submitted,) = db.execute(
            "SELECT value FROM xcom WHERE run_id = ? AND task_id = 'submit' AND key = 'prediction_id'", (run.run_id,)
        ).fetchone()
        (deferred,) = db.execute(
            "SELECT value FROM xcom WHERE run_id = ? AND task_id = 'deferred_success' AND key = 'prediction_id'",
            (run.run_id,),
        ).fetchone()
    submitted, deferred = str(submitted).strip('"'), str(deferred).strip('"')
    control = search_run(reliability_home, {"airflow dags test": run.output}, [submitted, deferred])
    assert {
        "output of airflow dags test",
        "file airflow.db",
        "db xcom rows",
        "db rendered_task_instance_fields rows",
    } <= found(control, submitted)
    assert "db trigger kwargs (decoded)" in found(control, deferred)

    text = f"\nCanary search ({len(EXPECTED_STATES)} tasks, 2 canary keys)\n{report.summary()}\n"
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(text)
    assert not provider_hits(report), report.summary()
