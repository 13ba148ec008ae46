"""The prediction operator's face, fast: arguments, create once, inline and deferred waits, the same outcomes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from airflow_provider_cometflux.completion import XCOM_PREDICTION, XCOM_PREDICTION_ID
from airflow_provider_cometflux.exceptions import (
    AirflowFailException,
    CometAPIConnectionConfigError,
    CometFluxInputError,
    PredictionFailedError,
    PredictionTimeoutError,
)
from airflow_provider_cometflux.operators.flux import CometFluxPredictionOperator
from airflow_provider_cometflux.triggers.prediction import CometFluxPredictionTrigger
from tests.unit.fakes import FakeStore, context, first_event, task_deferred


def operator(**kwargs: Any) -> CometFluxPredictionOperator:
    options: dict[str, Any] = {"task_id": "generate", "prompt": "a red fox", "poll_interval": 0.1, "deferrable": False}
    options.update(kwargs)
    return CometFluxPredictionOperator(**options)


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"poll_interval": 0}, "poll_interval"),
        ({"timeout": "10"}, "timeout"),
        ({"prefer_wait": 61}, "prefer_wait"),
        ({"defer_after": -1}, "defer_after"),
        ({"max_output_bytes": 0}, "max_output_bytes"),
        ({"download_timeout": 0}, "download_timeout"),
    ],
)
def test_bad_arguments_fail_at_parse_time_naming_the_field(bad, field):
    with pytest.raises(CometFluxInputError, match=field):
        operator(**bad)


def test_bad_input_fails_before_any_request(cometapi_connection):
    with pytest.raises(CometFluxInputError, match=r"input\.aspect_ratio: '7:5' is not allowed"):
        operator(input={"aspect_ratio": "7:5"}).execute(context())
    assert cometapi_connection.stats["creates"] == 0


@pytest.mark.cometapi_simulator(run_seconds=0.1)
def test_inline_returns_the_urls_and_records_the_prediction_with_its_input(cometapi_connection):
    ctx = context()
    urls = operator(input={"num_outputs": 2, "seed": 7}).execute(ctx)
    assert len(urls) == 2
    xcoms = ctx["ti"].xcoms
    record = xcoms[XCOM_PREDICTION]
    assert record["id"] == xcoms[XCOM_PREDICTION_ID] and record["status"] == "succeeded"
    assert record["input"] == {"num_outputs": 2, "seed": 7, "prompt": "a red fox"}
    assert cometapi_connection.stats["created"] == 1


@pytest.mark.cometapi_simulator(run_seconds=0.1)
def test_no_wait_returns_after_the_create(cometapi_connection):
    ctx = context()
    assert operator(wait_for_completion=False).execute(ctx) == []
    assert ctx["ti"].xcoms[XCOM_PREDICTION_ID]


@pytest.mark.cometapi_simulator(run_seconds=30)
def test_inline_timeout_cancels_and_fails(cometapi_connection):
    sim = cometapi_connection
    started = time.monotonic()
    with pytest.raises(PredictionTimeoutError, match="gave up"):
        operator(timeout=1).execute(context())
    assert time.monotonic() - started < 5
    (pid,) = sim.cancel_requests
    assert sim.predictions[pid]["status"] == "canceled"


@pytest.mark.cometapi_simulator(run_seconds=0.3)
def test_deferred_holds_the_id_only_then_completes(cometapi_connection):
    ctx = context()
    op = operator(deferrable=True, defer_after=0)
    with pytest.raises(task_deferred()) as deferred:
        op.execute(ctx)
    trigger = deferred.value.trigger
    assert isinstance(trigger, CometFluxPredictionTrigger)
    assert trigger.prediction_id == ctx["ti"].xcoms[XCOM_PREDICTION_ID]
    event = asyncio.run(first_event(trigger))
    assert len(op.execute_complete(ctx, event)) == 1
    assert cometapi_connection.stats["created"] == 1


@pytest.mark.cometapi_simulator(run_seconds=0.1)
def test_defer_after_finishes_a_fast_prediction_in_the_worker(cometapi_connection):
    assert len(operator(deferrable=True, defer_after=5).execute(context())) == 1


@pytest.mark.cometapi_simulator(run_seconds=0.1)
def test_a_retry_reattaches_instead_of_paying_again(cometapi_connection):
    store = FakeStore()
    first = operator().execute(context(store))
    again = operator().execute(context(store, try_number=2))
    assert again == first and cometapi_connection.stats["created"] == 1
    operator(prompt="another").execute(context(store, try_number=3))  # another request: a new prediction
    assert cometapi_connection.stats["created"] == 2


def test_a_missing_connection_fails_without_retries_inline_and_deferred(monkeypatch):
    """Defect: read in the triggerer, a missing connection became a retried failure."""
    monkeypatch.delenv("AIRFLOW_CONN_COMETAPI_NOWHERE", raising=False)
    with pytest.raises(CometAPIConnectionConfigError) as inline:
        operator(cometapi_conn_id="cometapi_nowhere").execute(context())
    trigger = CometFluxPredictionTrigger("p1abc", cometapi_conn_id="cometapi_nowhere", poll_interval=0.1)
    event = asyncio.run(first_event(trigger))
    with pytest.raises(CometAPIConnectionConfigError) as deferred:
        operator(cometapi_conn_id="cometapi_nowhere").execute_complete(context(), event)
    for caught in (inline.value, deferred.value):
        assert isinstance(caught, AirflowFailException) and "cometapi_nowhere" in str(caught)


@pytest.mark.cometapi_simulator(run_seconds=0.1)
@pytest.mark.parametrize("directive", ["[sim:output=empty]", "[sim:output=null]"])
def test_a_success_without_images_fails_naming_the_prediction(cometapi_connection, directive):
    ctx = context()
    with pytest.raises(PredictionFailedError, match="succeeded without any output") as caught:
        operator(prompt=f"a fox {directive}").execute(ctx)
    assert caught.value.prediction_id == ctx["ti"].xcoms[XCOM_PREDICTION_ID]


@pytest.mark.cometapi_simulator(run_seconds=0.1)
def test_a_failed_prediction_is_still_recorded_with_its_error_and_input(cometapi_connection):
    ctx = context()
    with pytest.raises(PredictionFailedError, match="no foxes"):
        operator(prompt="a fox [sim:failed=no foxes]").execute(ctx)
    record = ctx["ti"].xcoms[XCOM_PREDICTION]
    assert record["status"] == "failed" and "no foxes" in record["error"]
    assert record["input"]["prompt"] == "a fox [sim:failed=no foxes]"


@pytest.mark.cometapi_simulator(run_seconds=0.1, validate_input=False)
def test_unchecked_inputs_send_what_a_stale_schema_refuses(cometapi_connection, caplog):
    """The service changed after the schema was checked (its validation is off here): the input is sent, logged."""
    with pytest.raises(CometFluxInputError, match=r"input\.num_outputs: 6 is out of range"):
        operator(input={"num_outputs": 6}).execute(context())
    assert cometapi_connection.stats["created"] == 0
    with caplog.at_level("WARNING", logger="airflow_provider_cometflux.models"):
        urls = operator(input={"num_outputs": 6}, unchecked_inputs=["num_outputs"]).execute(context())
    assert "input.num_outputs: 6 is out of range" in caplog.text and "unchecked_inputs" in caplog.text
    (sent,) = cometapi_connection.predictions.values()
    assert sent["input"] == {"num_outputs": 6, "prompt": "a red fox"} and urls


@pytest.mark.cometapi_simulator(run_seconds=0.1)
def test_unchecked_inputs_still_meet_the_services_own_refusal(cometapi_connection):
    """Overridden locally, the input still reaches the service, whose 422 names the field."""
    with pytest.raises(Exception, match="num_outputs"):
        operator(input={"num_outputs": 6}, unchecked_inputs=["num_outputs"]).execute(context())
    assert cometapi_connection.stats["creates"] == 1


def test_unchecked_inputs_must_be_a_list_of_names():
    with pytest.raises(CometFluxInputError, match="unchecked_inputs"):
        operator(unchecked_inputs="num_outputs")


PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 24


@pytest.mark.cometapi_simulator(run_seconds=0.05)
def test_reference_images_from_paths_and_a_tasks_outputs_reach_the_service_inline(cometapi_connection, tmp_path):
    (tmp_path / "a.png").write_bytes(PNG)
    upstream_output = [f"file://{tmp_path}/a.png", "https://example.com/b.png"]  # an XComArg, resolved
    ctx = context()
    task = operator(
        model="black-forest-labs/flux-2-pro", input={"input_images": [str(tmp_path / "a.png"), *upstream_output]}
    )
    task.execute(ctx)
    (sent,) = cometapi_connection.predictions.values()
    assert [item[:22] for item in sent["input"]["input_images"]] == [
        "data:image/png;base64,",
        "data:image/png;base64,",
        "https://example.com/b.",
    ]
    record = ctx["ti"].xcoms[XCOM_PREDICTION]
    assert record["input"]["input_images"] == [str(tmp_path / "a.png"), *upstream_output]  # as given, no data


def test_a_bad_reference_image_fails_before_any_request_naming_its_index(cometapi_connection, tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    task = operator(
        model="black-forest-labs/flux-2-dev",
        input={"input_images": ["https://example.com/a.png", str(tmp_path / "notes.txt")]},
    )
    with pytest.raises(CometFluxInputError, match=r"^input\.input_images\.1: .*notes\.txt' is not allowed"):
        task.execute(context())
    too_many = operator(model="black-forest-labs/flux-2-dev", input={"input_images": ["https://x/a.png"] * 5})
    with pytest.raises(CometFluxInputError, match=r"^input\.input_images: 5 images are too many"):
        too_many.execute(context())
    assert cometapi_connection.stats["creates"] == 0


@pytest.mark.cometapi_simulator(run_seconds=0.05)
def test_fewer_images_than_asked_is_a_success_that_records_both_counts(cometapi_connection):
    ctx = context()
    urls = operator(prompt="a fox [sim:nsfw=1]", input={"num_outputs": 4}).execute(ctx)
    assert len(urls) == 3
    metrics = ctx["ti"].xcoms[XCOM_PREDICTION]["metrics"]
    assert (metrics["images_asked"], metrics["images_returned"]) == (4, 3)


@pytest.mark.cometapi_simulator(run_seconds=0.05)
def test_every_image_filtered_fails_with_the_services_words(cometapi_connection):
    with pytest.raises(PredictionFailedError, match="All generated images contained NSFW content"):
        operator(prompt="a fox [sim:nsfw]", input={"num_outputs": 2}).execute(context())


@pytest.mark.cometapi_simulator(run_seconds=0.05)
def test_a_spent_rate_limit_without_retry_after_does_not_fail_the_task(cometapi_connection):
    cometapi_connection.add_fault("create", "throttle", delay=1.5)
    cometapi_connection.add_fault("get", "throttle", delay=3)
    assert len(operator().execute(context())) == 1
    assert cometapi_connection.stats["responses"]["429"] >= 2
    assert cometapi_connection.stats["created"] == 1
