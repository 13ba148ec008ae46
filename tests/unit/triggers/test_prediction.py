"""The trigger driven with asyncio against the real simulator on loopback."""

from __future__ import annotations

import asyncio
import time

import pytest
import requests

from airflow_provider_cometflux.hooks.cometapi import close_async_session
from airflow_provider_cometflux.testing.pytest_plugin import SIMULATOR_API_KEY
from airflow_provider_cometflux.triggers.prediction import CometFluxPredictionTrigger
from tests.conftest import TEST_KEY

AUTH = {"Authorization": f"Bearer {SIMULATOR_API_KEY}"}


@pytest.fixture(autouse=True)
async def _close_shared_session():
    yield
    await close_async_session()


def create(sim, prompt: str, model: str = "black-forest-labs/flux-schnell", **inputs) -> str:
    url = f"{sim.base_url}/replicate/v1/models/{model}/predictions"
    resp = requests.post(
        url, json={"input": {"prompt": prompt, **inputs}}, headers={"Authorization": f"Bearer {SIMULATOR_API_KEY}"}
    )
    resp.raise_for_status()
    return resp.json()["id"]


async def first_event(trigger: CometFluxPredictionTrigger, limit: float = 15) -> dict:
    async def take() -> dict:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("the trigger ended without an event")

    return await asyncio.wait_for(take(), limit)


def test_serialize_holds_ids_and_numbers_only():
    trigger = CometFluxPredictionTrigger("p1", "cometapi_default", poll_interval=3, end_time=1234.5)
    path, kwargs = trigger.serialize()
    assert path == "airflow_provider_cometflux.triggers.prediction.CometFluxPredictionTrigger"
    assert kwargs == {
        "prediction_id": "p1",
        "cometapi_conn_id": "cometapi_default",
        "poll_interval": 3.0,
        "end_time": 1234.5,
        "max_consecutive_errors": 5,
    }
    assert CometFluxPredictionTrigger(**kwargs).serialize() == (path, kwargs)


async def test_succeeded_event_with_list_output(cometapi_connection):
    sim = cometapi_connection
    pid = create(sim, "a red fox", num_outputs=2)
    event = await first_event(CometFluxPredictionTrigger(pid, poll_interval=0.1, end_time=time.time() + 30))
    assert event["status"] == "succeeded" and event["prediction_id"] == pid
    output = event["prediction"]["output"]
    assert isinstance(output, list) and len(output) == 2
    assert TEST_KEY not in str(event) and SIMULATOR_API_KEY not in str(event)


async def test_string_output_model(cometapi_connection):
    pid = create(cometapi_connection, "a mug", model="black-forest-labs/flux-1.1-pro")
    event = await first_event(CometFluxPredictionTrigger(pid, poll_interval=0.1, end_time=time.time() + 30))
    assert event["status"] == "succeeded" and isinstance(event["prediction"]["output"], str)


@pytest.mark.parametrize("outcome", ["failed", "canceled", "aborted"])
async def test_unsuccessful_predictions(cometapi_connection, outcome):
    pid = create(cometapi_connection, f"a cat [sim:{outcome}]")
    event = await first_event(CometFluxPredictionTrigger(pid, poll_interval=0.1, end_time=time.time() + 30))
    assert event["status"] == outcome
    assert pid in event["message"] and outcome in event["message"]


async def test_failed_event_carries_the_service_error(cometapi_connection):
    pid = create(cometapi_connection, "a cat [sim:failed]")
    event = await first_event(CometFluxPredictionTrigger(pid, poll_interval=0.1))
    assert event["prediction"]["error"] and event["prediction"]["error"] in event["message"]


async def test_timeout_event_past_end_time(cometapi_connection):
    pid = create(cometapi_connection, "a cat [sim:stuck]")
    started = time.monotonic()
    event = await first_event(CometFluxPredictionTrigger(pid, poll_interval=0.1, end_time=time.time() + 0.8))
    assert event["status"] == "timeout"
    assert "last status 'processing'" in event["message"] and pid in event["message"]
    assert time.monotonic() - started < 3


async def test_unknown_prediction_is_an_error_event_at_once(cometapi_connection):
    event = await first_event(CometFluxPredictionTrigger("doesnotexist", poll_interval=0.1), limit=5)
    assert event["status"] == "error" and "404" in event["message"]


async def test_transient_errors_are_tolerated(cometapi_connection):
    sim = cometapi_connection
    pid = create(sim, "a cat")
    sim.add_fault("get", "status", status=503, times=2)
    sim.add_fault("get", "malformed", times=1)
    event = await first_event(CometFluxPredictionTrigger(pid, poll_interval=0.1))
    assert event["status"] == "succeeded"


async def test_a_run_of_errors_ends_in_an_error_event(cometapi_connection):
    sim = cometapi_connection
    pid = create(sim, "a cat")
    sim.add_fault("get", "status", status=503, times=1000)
    trigger = CometFluxPredictionTrigger(pid, poll_interval=0.05, max_consecutive_errors=2)
    event = await first_event(trigger)
    assert event["status"] == "error" and "503" in event["message"] and "2 polls in a row" in event["message"]


async def test_a_slow_poll_does_not_block_the_event_loop(cometapi_connection):
    sim = cometapi_connection
    pid = create(sim, "a cat")
    sim.add_fault("get", "slow", delay=1.0, times=1)
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    event = await first_event(CometFluxPredictionTrigger(pid, poll_interval=0.1))
    tick.cancel()
    assert event["status"] == "succeeded"
    assert max(gaps) < 0.2, f"the event loop stalled for {max(gaps):.3f}s"


async def test_on_kill_cancels_the_prediction(cometapi_connection):
    sim = cometapi_connection
    pid = create(sim, "a cat [sim:stuck]")
    await CometFluxPredictionTrigger(pid).on_kill()
    assert sim.predictions[pid]["status"] == "canceled"
