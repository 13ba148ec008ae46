"""The event vocabulary: every event shape, and what each means for a task."""

from __future__ import annotations

import pytest

from airflow_provider_cometflux.events import (
    AUTH,
    CONFIG,
    SERVICE,
    batch_event,
    batch_results,
    error_event,
    make_event,
    prediction_event,
    raise_for_event,
    timeout_event,
)
from airflow_provider_cometflux.exceptions import (
    AirflowFailException,
    CometAPIAuthError,
    CometAPIConnectionConfigError,
    CometAPIError,
    OutputsRemovedError,
    PredictionFailedError,
    PredictionTimeoutError,
)
from airflow_provider_cometflux.models import Prediction
from tests.conftest import prediction_json


def succeeded(**extra: object) -> dict:
    return prediction_event(Prediction(prediction_json(status="succeeded", output="https://a/b.png", **extra)))


def test_a_success_with_outputs_gives_its_prediction():
    event = succeeded()
    assert set(event) == {"status", "prediction_id", "prediction", "message"}
    assert raise_for_event(event).output_urls == ["https://a/b.png"]


def test_failed_statuses_carry_the_service_error_and_the_id():
    failed = make_event("failed", "p1abc", prediction=Prediction(prediction_json(status="failed", error="boom")))
    with pytest.raises(PredictionFailedError, match="boom") as info:
        raise_for_event(failed)
    assert info.value.prediction_id == "p1abc"


def test_timeout_and_malformed_events():
    with pytest.raises(PredictionTimeoutError, match="gave up"):
        raise_for_event(timeout_event("p1abc", "gave up"))
    with pytest.raises(PredictionFailedError, match="does not understand"):
        raise_for_event(None)


@pytest.mark.parametrize("output", [None, []])
def test_a_success_without_outputs_is_a_failure_naming_the_prediction(output):
    event = prediction_event(Prediction(prediction_json(status="succeeded", output=output)))
    with pytest.raises(PredictionFailedError, match="p1abc succeeded without any output") as info:
        raise_for_event(event)
    assert not isinstance(info.value, AirflowFailException)  # may be retried: a retry creates anew


def test_removed_outputs_fail_without_retries():
    event = prediction_event(Prediction(prediction_json(status="succeeded", output=None, data_removed=True)))
    with pytest.raises(OutputsRemovedError, match="removed its outputs") as info:
        raise_for_event(event)
    assert isinstance(info.value, AirflowFailException)
    assert info.value.prediction_id == "p1abc"


def test_error_kinds_decide_the_exception():
    config = error_event("p1abc", CometAPIConnectionConfigError("Connection 'x' was not found"))
    assert config["error_kind"] == CONFIG
    with pytest.raises(CometAPIConnectionConfigError, match="not found"):  # not retried, as in the worker
        raise_for_event(config)
    auth = error_event("p1abc", CometAPIAuthError("bad key", http_status=401))
    assert auth["error_kind"] == AUTH and "HTTP 401" in auth["message"]
    with pytest.raises(CometAPIAuthError):
        raise_for_event(auth)
    service = error_event("p1abc", CometAPIError("busy", http_status=503), polls=5)
    assert service["error_kind"] == SERVICE and "5 polls in a row failed" in service["message"]
    with pytest.raises(PredictionFailedError, match="busy"):
        raise_for_event(service)


def test_unexpected_exceptions_become_escaped_error_events():
    event = error_event("p1abc", ValueError("bad\nINFO - Task succeeded"))
    assert "\n" not in event["message"] and "\\n" in event["message"]


def test_batch_events():
    ok = succeeded()
    event = batch_event([ok, None])
    assert event["status"] == "complete" and event["results"] == [ok, None]
    assert batch_results(event, 2) == [ok, None]
    with pytest.raises(PredictionFailedError, match="does not understand"):
        batch_results(event, 3)
    with pytest.raises(CometAPIConnectionConfigError):
        batch_results(error_event("", CometAPIConnectionConfigError("no connection")), 2)
