"""The worker's part of a task, against the simulator: create and save, then wait to the end or decide to defer."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from airflow_provider_cometflux.hooks.cometapi import CometAPIHook
from airflow_provider_cometflux.job import PredictionJob, Waited
from tests.unit.fakes import FakeStore, context

SCHNELL = "black-forest-labs/flux-schnell"
LOG = logging.getLogger("cometflux.test")


def job(*prompts: str, seconds: float = 30, **kwargs: Any) -> PredictionJob:
    return PredictionJob(
        CometAPIHook(),
        SCHNELL,
        [{"prompt": prompt} for prompt in prompts],
        "cometflux_test",
        poll_interval=0.1,
        end_time=time.time() + seconds,
        **kwargs,
    )


def started(*prompts: str, store: FakeStore | None = None, **kwargs: Any) -> PredictionJob:
    made = job(*prompts, **kwargs)
    made.start(context(store), LOG)
    return made


def statuses(waited: Waited) -> list[str | None]:
    return [event["status"] if event else None for event in waited.events]


def test_before_start_there_are_no_ids_and_nothing_runs():
    fresh = job("a", "b")
    assert fresh.ids == [None, None] and fresh.running() == []


@pytest.mark.cometapi_simulator(run_seconds=0.1)
def test_start_creates_once_and_saves_the_ids_for_this_request(cometapi_connection):
    store = FakeStore()
    made = started("a", "b", store=store)
    assert all(made.ids) and cometapi_connection.stats["created"] == 2
    saved = store.values["cometflux_test"]
    assert saved == {"request": made.request, "prediction_ids": made.ids}


@pytest.mark.cometapi_simulator(run_seconds=0.2)
def test_not_deferrable_waits_in_the_worker_to_the_end(cometapi_connection):
    waited = started("a", "b").wait_or_defer("cometapi_default", deferrable=False, defer_after=0)
    assert waited == Waited(waited.events, defer=False) and statuses(waited) == ["succeeded", "succeeded"]


@pytest.mark.cometapi_simulator(run_seconds=30)
def test_deferrable_with_defer_after_zero_defers_at_once(cometapi_connection):
    began = time.monotonic()
    waited = started("a").wait_or_defer("cometapi_default", deferrable=True, defer_after=0)
    assert waited.defer and statuses(waited) == [None]
    assert time.monotonic() - began < 5


@pytest.mark.cometapi_simulator(run_seconds=0.1)
def test_a_fast_prediction_finishes_within_defer_after_without_deferring(cometapi_connection):
    waited = started("a").wait_or_defer("cometapi_default", deferrable=True, defer_after=5)
    assert not waited.defer and statuses(waited) == ["succeeded"]


@pytest.mark.cometapi_simulator(run_seconds=30)
def test_a_slow_prediction_is_deferred_after_defer_after(cometapi_connection):
    began = time.monotonic()
    waited = started("a").wait_or_defer("cometapi_default", deferrable=True, defer_after=0.3)
    assert waited.defer and statuses(waited) == [None]
    assert 0.3 <= time.monotonic() - began < 5


@pytest.mark.cometapi_simulator(run_seconds=30)
def test_a_deadline_nearer_than_defer_after_is_waited_for_in_the_worker(cometapi_connection):
    waited = started("a", seconds=0.5).wait_or_defer("cometapi_default", deferrable=True, defer_after=5)
    assert not waited.defer and statuses(waited) == ["timeout"]


@pytest.mark.cometapi_simulator(run_seconds=0.1)
def test_known_finished_predictions_need_no_wait_and_no_cancel(cometapi_connection):
    store = FakeStore()
    first = started("a", store=store)
    first.wait_or_defer("cometapi_default", deferrable=False, defer_after=0)
    resumed = job("a")
    resumed.start(context(store, try_number=2), LOG)  # reads the saved, finished prediction
    assert resumed.ids == first.ids and resumed.running() == []
    waited = resumed.wait_or_defer("cometapi_default", deferrable=True, defer_after=0)
    assert not waited.defer and statuses(waited) == ["succeeded"]
    assert cometapi_connection.stats["created"] == 1


@pytest.mark.cometapi_simulator(run_seconds=30)
def test_running_predictions_are_what_a_kill_cancels(cometapi_connection):
    made = started("a", "b")
    assert made.running() == made.ids
    made.cancel(made.running())
    assert sorted(cometapi_connection.cancel_requests) == sorted(made.ids)
