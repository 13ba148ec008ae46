"""The batch trigger: ids and numbers only, watches every prediction, never creates, cancels only on a user's kill."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import requests

from airflow_provider_cometflux.hooks.cometapi import close_async_session
from airflow_provider_cometflux.testing.pytest_plugin import SIMULATOR_API_KEY
from airflow_provider_cometflux.triggers.batch import CometFluxBatchTrigger
from tests.unit.fakes import first_event

AUTH = {"Authorization": f"Bearer {SIMULATOR_API_KEY}"}


@pytest.fixture(autouse=True)
async def _close_shared_session():
    yield
    await close_async_session()


def create(sim, prompt: str) -> str:
    url = f"{sim.base_url}/replicate/v1/models/black-forest-labs/flux-schnell/predictions"
    resp = requests.post(
        url, json={"input": {"prompt": prompt}}, headers={"Authorization": f"Bearer {SIMULATOR_API_KEY}"}
    )
    resp.raise_for_status()
    return resp.json()["id"]


def test_it_serialises_ids_and_numbers_only():
    trigger = CometFluxBatchTrigger(["p1", None, "p3"], poll_interval=3, end_time=1234.5)
    path, kwargs = trigger.serialize()
    assert path == "airflow_provider_cometflux.triggers.batch.CometFluxBatchTrigger"
    assert kwargs == {
        "prediction_ids": ["p1", None, "p3"],
        "cometapi_conn_id": "cometapi_default",
        "poll_interval": 3.0,
        "end_time": 1234.5,
        "max_consecutive_errors": 5,
    }
    assert CometFluxBatchTrigger(**kwargs).serialize() == (path, kwargs)
    assert all(isinstance(v, (str, int, float, list, type(None))) for v in kwargs.values())


@pytest.mark.cometapi_simulator(run_seconds=0.2)
async def test_it_watches_every_prediction_and_reports_them_in_order(cometapi_connection):
    sim = cometapi_connection
    ids = [create(sim, "a"), None, create(sim, "b [sim:failed=no kites]"), create(sim, "c [sim:canceled]")]
    event = await asyncio.wait_for(first_event(CometFluxBatchTrigger(ids, poll_interval=0.1)), 20)
    assert event["status"] == "complete"
    statuses = [r["status"] if r else None for r in event["results"]]
    assert statuses == ["succeeded", None, "failed", "canceled"]
    assert "no kites" in event["results"][2]["message"]
    assert [r["prediction_id"] for r in event["results"] if r] == [ids[0], ids[2], ids[3]]


@pytest.mark.cometapi_simulator(run_seconds=0.2)
async def test_running_it_twice_creates_nothing(cometapi_connection):
    """A trigger handed to another triggerer runs again: that costs polls, never a create."""
    sim = cometapi_connection
    ids = [create(sim, f"kite {i}") for i in range(5)]
    created = sim.stats["created"]
    for _ in range(2):
        event = await asyncio.wait_for(first_event(CometFluxBatchTrigger(ids, poll_interval=0.1)), 20)
        assert [r["status"] for r in event["results"]] == ["succeeded"] * 5
    assert sim.stats["created"] == created and sim.stats["creates"] == created


@pytest.mark.cometapi_simulator(run_seconds=0.1)
async def test_the_deadline_gives_timeout_events_and_cancels_nothing_itself(cometapi_connection):
    sim = cometapi_connection
    ids = [create(sim, "quick"), create(sim, "forever [sim:stuck]")]
    trigger = CometFluxBatchTrigger(ids, poll_interval=0.1, end_time=time.time() + 1.0)
    event = await asyncio.wait_for(first_event(trigger), 20)
    assert [r["status"] for r in event["results"]] == ["succeeded", "timeout"]
    assert sim.predictions[ids[1]]["status"] == "processing"  # the worker cancels, once, in execute_complete


async def test_a_missing_connection_is_one_error_for_the_batch(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_COMETAPI_NOWHERE", raising=False)
    trigger = CometFluxBatchTrigger(["p1", "p2"], cometapi_conn_id="cometapi_nowhere", poll_interval=0.1)
    event = await asyncio.wait_for(first_event(trigger), 20)
    assert event["status"] == "error" and event["error_kind"] == "config" and "not found" in event["message"]


@pytest.mark.cometapi_simulator(run_seconds=0.1)
async def test_on_kill_cancels_every_running_prediction_but_not_finished_ones(cometapi_connection):
    sim = cometapi_connection
    ids = [create(sim, "x [sim:stuck]"), create(sim, "y [sim:stuck]"), create(sim, "z")]
    await asyncio.sleep(0.3)
    await CometFluxBatchTrigger(ids).on_kill()
    assert [sim.predictions[pid]["status"] for pid in ids] == ["canceled", "canceled", "succeeded"]
    assert sorted(sim.cancel_requests) == sorted(ids[:2])


@pytest.mark.cometapi_simulator(run_seconds=0.1)
async def test_on_kill_after_a_handover_cancels_nothing(cometapi_connection, monkeypatch):
    """A stalled triggerer wakes up to find its triggers handed on: the task is still deferred, the batch lives."""
    sim = cometapi_connection
    ids = [create(sim, "x [sim:stuck]"), create(sim, "y [sim:stuck]")]

    async def still_deferred(self) -> bool:
        return True

    monkeypatch.setattr(CometFluxBatchTrigger, "_task_still_deferred", still_deferred)
    await CometFluxBatchTrigger(ids).on_kill()
    assert sim.cancel_requests == [] and "canceled" not in {sim.predictions[pid]["status"] for pid in ids}
    assert "password" not in json.dumps(CometFluxBatchTrigger(ids).serialize()[1])
