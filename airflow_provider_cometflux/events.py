"""The one event vocabulary: what a wait (trigger, inline, sensor poke) reports, and what each event means for a task.

A prediction event is ``{"status", "prediction_id", "prediction", "message", "error_kind"}``:

* ``status``: a terminal prediction status (``succeeded``, ``failed``, ``canceled``, ``aborted``), :data:`TIMEOUT`
  (the deadline passed first) or :data:`ERROR` (the prediction could not be watched);
* ``prediction``: the final prediction's summary (nothing secret) when one was read;
* ``error_kind`` (on :data:`ERROR`): :data:`CONFIG` (the connection is missing or unusable: fails without retries,
  wherever it was read), :data:`AUTH` (the key was refused) or :data:`SERVICE` (anything else).

A batch event is ``{"status": "complete", "results": [prediction event or None, ...], "message"}`` (``None`` for a
prompt the trigger did not watch), or a prediction-less :data:`ERROR` event with an ``error_kind`` when the batch
could not be watched at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow_provider_cometflux.exceptions import (
    CometAPIAuthError,
    CometAPIConnectionConfigError,
    CometAPIError,
    PredictionFailedError,
    PredictionTimeoutError,
)
from airflow_provider_cometflux.models import Prediction, safe_text

#: Event statuses besides the prediction's own terminal ones.
TIMEOUT = "timeout"
ERROR = "error"
#: The status of a batch event whose ``results`` hold every watched prediction's event.
COMPLETE = "complete"

#: ``error_kind`` values of an :data:`ERROR` event.
CONFIG = "config"
AUTH = "auth"
SERVICE = "service"


def make_event(
    status: str, prediction_id: str, *, prediction: Prediction | None = None, message: str | None = None
) -> dict[str, Any]:
    """
    Build a prediction event.

    :param status: a terminal prediction status, :data:`TIMEOUT` or :data:`ERROR`.
    :param prediction_id: the prediction the event is about.
    :param prediction: the final prediction, if one was read (kept as its secret-free summary).
    :param message: what happened; by default derived from the prediction.
    """
    if message is None:
        if prediction is not None and not prediction.succeeded:
            message = prediction.failure_message()
        else:
            message = f"Prediction {prediction_id} {status}."
    return {
        "status": status,
        "prediction_id": prediction_id,
        "prediction": prediction.summary() if prediction is not None else None,
        "message": message,
    }


def prediction_event(prediction: Prediction) -> dict[str, Any]:
    """The event of a prediction seen in a terminal status."""
    return make_event(prediction.status, prediction.id, prediction=prediction)


def error_event(prediction_id: str, exc: BaseException, *, polls: int = 1) -> dict[str, Any]:
    """
    The event of a wait that failed with ``exc``, saying what kind of failure it was.

    :param prediction_id: the prediction watched (``""`` for a batch).
    :param exc: what went wrong.
    :param polls: how many polls in a row failed.
    """
    if isinstance(exc, CometAPIConnectionConfigError):
        kind = CONFIG
    elif isinstance(exc, CometAPIAuthError):
        kind = AUTH
    else:
        kind = SERVICE
    if isinstance(exc, CometAPIError):
        where = [f"HTTP {exc.http_status}"] if exc.http_status is not None else []
        where += [f"code {exc.error_code}"] if exc.error_code else []
        text = f"{exc.message} ({', '.join(where)})" if where else exc.message
    else:
        text = safe_text(f"{type(exc).__name__}: {exc}")
    if polls > 1 and "in a row failed" not in text:
        text += f" ({polls} polls in a row failed)"
    event = make_event(ERROR, prediction_id, message=text)
    event["error_kind"] = kind
    return event


def timeout_event(prediction_id: str, message: str) -> dict[str, Any]:
    """The event of a wait that reached its deadline."""
    return make_event(TIMEOUT, prediction_id, message=message)


def batch_event(results: Sequence[dict[str, Any] | None], *, message: str = "") -> dict[str, Any]:
    """
    Build a batch event: every watched prediction's event, in prompt order.

    :param results: per prompt, its prediction event, or ``None`` where the trigger watched nothing.
    :param message: what happened.
    """
    done = sum(result is not None for result in results)
    return {
        "status": COMPLETE,
        "results": list(results),
        "message": message or f"{done} of {len(results)} predictions have a final status.",
    }


def raise_for_event(event: Any) -> Prediction:
    """
    The succeeded prediction an event carries, with its outputs; any other event raises.

    :param event: a prediction event.
    :raises PredictionTimeoutError: on :data:`TIMEOUT`.
    :raises CometAPIConnectionConfigError: on an :data:`ERROR` of kind :data:`CONFIG` (not retried).
    :raises CometAPIAuthError: on an :data:`ERROR` of kind :data:`AUTH`.
    :raises PredictionFailedError: on ``failed``, ``canceled``, ``aborted``, another :data:`ERROR`, an event this
        provider does not understand, or a success without outputs
        (:class:`~airflow_provider_cometflux.exceptions.OutputsRemovedError`, not retried, when they were removed).
    """
    if not isinstance(event, dict) or "status" not in event:
        raise PredictionFailedError(
            f"the trigger sent an event this provider does not understand: {safe_text(repr(event), limit=300)}"
        )
    status, pid, message = event["status"], event.get("prediction_id") or None, str(event.get("message") or "")
    if status == TIMEOUT:
        raise PredictionTimeoutError(message, prediction_id=pid)
    if status == ERROR:
        kind = event.get("error_kind")
        if kind == CONFIG:
            raise CometAPIConnectionConfigError(message)
        if kind == AUTH:
            raise CometAPIAuthError(message, prediction_id=pid)
        raise PredictionFailedError(message or "the prediction could not be watched", prediction_id=pid)
    summary = event.get("prediction")
    if status != "succeeded" or not isinstance(summary, dict):
        raise PredictionFailedError(message or f"prediction ended with status '{safe_text(status)}'", prediction_id=pid)
    prediction = Prediction(summary)
    prediction.require_outputs()
    return prediction


def batch_results(event: Any, count: int) -> list[dict[str, Any] | None]:
    """
    The per-prompt events of a batch event; a batch that could not be watched raises like a prediction event.

    :param event: a batch event.
    :param count: how many prompts the batch has.
    """
    if isinstance(event, dict) and event.get("status") == ERROR:
        raise_for_event(event)
    results = event.get("results") if isinstance(event, dict) else None
    if not isinstance(results, list) or len(results) != count or event.get("status") != COMPLETE:
        raise PredictionFailedError(
            f"the batch trigger sent an event this provider does not understand: {safe_text(repr(event), limit=300)}"
        )
    return results
