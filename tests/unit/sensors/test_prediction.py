"""The sensor's face, fast: one timeout outcome in every mode, failures and successes as the operator has them."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import requests

from airflow_provider_cometflux._compat import AirflowSensorTimeout
from airflow_provider_cometflux.exceptions import CometFluxInputError, PredictionFailedError
from airflow_provider_cometflux.sensors.prediction import CometFluxPredictionSensor
from airflow_provider_cometflux.testing.pytest_plugin import SIMULATOR_API_KEY
from airflow_provider_cometflux.triggers.prediction import CometFluxPredictionTrigger
from tests.unit.fakes import context, first_event, task_deferred

AUTH = {"Authorization": f"Bearer {SIMULATOR_API_KEY}"}


def create(sim, prompt: str) -> str:
    url = f"{sim.base_url}/replicate/v1/models/black-forest-labs/flux-schnell/predictions"
    resp = requests.post(
        url, json={"input": {"prompt": prompt}}, headers={"Authorization": f"Bearer {SIMULATOR_API_KEY}"}
    )
    resp.raise_for_status()
    return resp.json()["id"]


def sensor(pid: str, **kwargs: Any) -> CometFluxPredictionSensor:
    options: dict[str, Any] = {"task_id": "wait", "prediction_id": pid, "poke_interval": 0.1, "deferrable": False}
    options.update(kwargs)
    return CometFluxPredictionSensor(**options)


def test_a_bad_prediction_id_fails_before_any_request(cometapi_connection):
    with pytest.raises(CometFluxInputError, match="prediction_id"):
        sensor("../etc/passwd").execute(context())
    assert cometapi_connection.stats["gets"] == 0


@pytest.mark.cometapi_simulator(run_seconds=0.1)
def test_a_finished_prediction_is_returned_by_the_first_poke(cometapi_connection):
    pid = create(cometapi_connection, "a fox")
    time.sleep(0.2)
    ctx = context()
    assert len(sensor(pid, deferrable=True).execute(ctx)) == 1  # no trip to the triggerer
    assert ctx["ti"].xcoms["prediction"]["input"] == {"prompt": "a fox"}


@pytest.mark.cometapi_simulator(run_seconds=0.1)
def test_a_failed_prediction_fails_with_the_service_error(cometapi_connection):
    pid = create(cometapi_connection, "a fox [sim:failed=no foxes]")
    time.sleep(0.2)
    with pytest.raises(PredictionFailedError, match="no foxes"):
        sensor(pid).execute(context())


@pytest.mark.cometapi_simulator(run_seconds=0.3)
def test_the_deferred_sensor_completes_through_the_trigger(cometapi_connection):
    pid = create(cometapi_connection, "a fox")
    ctx = context()
    op = sensor(pid, deferrable=True)
    with pytest.raises(task_deferred()) as deferred:
        op.execute(ctx)
    assert isinstance(deferred.value.trigger, CometFluxPredictionTrigger)
    event = asyncio.run(first_event(deferred.value.trigger))
    assert len(op.execute_complete(ctx, event)) == 1


@pytest.mark.cometapi_simulator(run_seconds=60)
def test_a_deferred_timeout_is_a_sensor_timeout_as_in_poke_mode(cometapi_connection):
    """Defect: the deferrable sensor's timeout raised an ordinary (retried) exception."""
    sim = cometapi_connection
    pid = create(sim, "a slow fox")
    trigger = CometFluxPredictionTrigger(pid, poll_interval=0.1, end_time=time.time() + 0.5)
    event = asyncio.run(first_event(trigger))
    assert event["status"] == "timeout"
    with pytest.raises(AirflowSensorTimeout, match="cancelled"):  # poke and reschedule: tests/integration
        sensor(pid, deferrable=True, timeout=0.5).execute_complete(context(), event)
    assert sim.cancel_requests == [pid] and sim.predictions[pid]["status"] == "canceled"
