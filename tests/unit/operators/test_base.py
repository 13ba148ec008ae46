"""The sequence both operators share (create, record, wait or defer, complete), run through the real operators."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from airflow_provider_cometflux.completion import XCOM_PREDICTION_ID, XCOM_PREDICTION_IDS
from airflow_provider_cometflux.exceptions import CometFluxInputError, PredictionTimeoutError
from airflow_provider_cometflux.lineage import PREDICTION_FACET
from airflow_provider_cometflux.operators.base import CometFluxBaseOperator
from airflow_provider_cometflux.operators.batch import CometFluxBatchOperator
from airflow_provider_cometflux.operators.flux import CometFluxPredictionOperator
from tests.unit.fakes import FakeStore, context, first_event, task_deferred


def single(**kwargs: Any) -> CometFluxPredictionOperator:
    return CometFluxPredictionOperator(task_id="generate", prompt="a fox", **{"poll_interval": 0.1, **kwargs})


def batch(**kwargs: Any) -> CometFluxBatchOperator:
    return CometFluxBatchOperator(task_id="generate", prompts=["a fox", "a kite"], **{"poll_interval": 0.1, **kwargs})


def recorded_ids(ctx: dict[str, Any]) -> list[str]:
    """The ids the task recorded as soon as its predictions existed."""
    xcoms = ctx["ti"].xcoms
    return [xcoms[XCOM_PREDICTION_ID]] if XCOM_PREDICTION_ID in xcoms else list(xcoms[XCOM_PREDICTION_IDS])


OPERATORS = pytest.mark.parametrize("make", [single, batch], ids=["operator", "batch"])


@OPERATORS
def test_both_operators_are_the_base(make):
    assert isinstance(make(), CometFluxBaseOperator)


@OPERATORS
@pytest.mark.parametrize(
    "bad", [{"poll_interval": 0}, {"timeout": "1"}, {"defer_after": -1}, {"download_timeout": 0}], ids=str
)
def test_the_shared_arguments_are_checked_by_the_base(make, bad):
    with pytest.raises(CometFluxInputError, match=next(iter(bad))):
        make(**bad)


def test_creates_per_minute_is_checked_as_a_rate():
    with pytest.raises(CometFluxInputError, match="creates_per_minute: 0 is not allowed; expected a number per minute"):
        batch(creates_per_minute=0)


@OPERATORS
@pytest.mark.cometapi_simulator(run_seconds=0.3)
def test_the_ids_are_recorded_before_deferring_and_the_trigger_completes_a_fresh_task(cometapi_connection, make):
    ctx = context()
    with pytest.raises(task_deferred()) as deferred:
        make(deferrable=True, defer_after=0).execute(ctx)
    ids = recorded_ids(ctx)
    assert all(ids) and cometapi_connection.stats["created"] == len(ids)
    assert deferred.value.method_name == "execute_complete"
    assert deferred.value.timeout.total_seconds() > 600  # the task's own deadline, plus a grace
    resumed = make(deferrable=True)  # Airflow resumes a new instance of the task
    event = asyncio.run(first_event(deferred.value.trigger))
    assert all(resumed.execute_complete(ctx, event))
    lineage = resumed.get_openlineage_facets_on_complete(None)
    assert lineage.run_facets[PREDICTION_FACET].predictionIds == ids


@OPERATORS
@pytest.mark.cometapi_simulator(run_seconds=0.1)
def test_inline_the_same_sequence_ends_in_the_worker(cometapi_connection, make):
    ctx = context()
    op = make(deferrable=True, defer_after=5)  # a fast model finishes within defer_after: no deferral
    assert all(op.execute(ctx))
    assert op.get_openlineage_facets_on_failure(None).run_facets[PREDICTION_FACET].predictionIds == recorded_ids(ctx)
    op.on_kill()  # after completion a kill has nothing to cancel
    assert cometapi_connection.cancel_requests == []


@OPERATORS
@pytest.mark.cometapi_simulator(run_seconds=0.1)
def test_a_retry_resumes_through_the_same_sequence(cometapi_connection, make):
    store = FakeStore()
    first = make(deferrable=False).execute(context(store))
    again = context(store, try_number=2)
    assert make(deferrable=False).execute(again) == first
    assert cometapi_connection.stats["created"] == len(recorded_ids(again))


@OPERATORS
@pytest.mark.cometapi_simulator(run_seconds=60)
def test_a_kill_while_waiting_in_the_worker_cancels_the_running_predictions(cometapi_connection, make):
    sim = cometapi_connection
    ctx = context()
    op = make(deferrable=False, timeout=20)
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            op.execute(ctx)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 10
    while not (ctx["ti"].xcoms.get(XCOM_PREDICTION_ID) or ctx["ti"].xcoms.get(XCOM_PREDICTION_IDS)):
        assert time.monotonic() < deadline, "the task never recorded its predictions"
        time.sleep(0.05)
    op.on_kill()
    worker.join(30)
    ids = recorded_ids(ctx)
    assert sorted(sim.cancel_requests) == sorted(ids)
    assert all(sim.predictions[pid]["status"] == "canceled" for pid in ids)
    assert outcome and outcome[0] is not None  # the task ends failed, not with images


@OPERATORS
@pytest.mark.cometapi_simulator(run_seconds=30)
def test_at_the_deadline_the_running_predictions_are_cancelled(cometapi_connection, make):
    ctx = context()
    op = make(deferrable=False, timeout=0.5)
    if make is single:
        with pytest.raises(PredictionTimeoutError):
            op.execute(ctx)
    else:
        op.fail_on_error = False
        assert op.execute(ctx) == [[], []]
    assert sorted(cometapi_connection.cancel_requests) == sorted(recorded_ids(ctx))
