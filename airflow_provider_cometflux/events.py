"""The one event shape shared by the trigger, the inline wait and the sensor, and what it means for a task."""

from __future__ import annotations

from typing import Any

from airflow_provider_cometflux.exceptions import PredictionFailedError, PredictionTimeoutError
from airflow_provider_cometflux.models import Prediction

#: Event statuses besides the prediction's own terminal ones.
TIMEOUT = "timeout"
ERROR = "error"


def make_event(
    status: str, prediction_id: str, *, prediction: Prediction | None = None, message: str | None = None
) -> dict[str, Any]:
    """
    Build ``{"status", "prediction_id", "prediction", "message"}``.

    :param status: a terminal prediction status, ``timeout`` or ``error``.
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


def prediction_from_event(event: dict[str, Any] | None) -> Prediction:
    """
    The succeeded prediction an event carries; any other event raises with its message and the prediction id.

    :param event: an event from :func:`make_event`.
    :raises PredictionTimeoutError: on a ``timeout`` event.
    :raises PredictionFailedError: on ``failed``, ``canceled``, ``aborted``, ``error`` or a malformed event.
    """
    if not isinstance(event, dict) or "status" not in event:
        raise PredictionFailedError(f"the trigger sent an event this provider does not understand: {event!r}")
    status, pid, message = event["status"], event.get("prediction_id"), str(event.get("message") or "")
    if status == TIMEOUT:
        raise PredictionTimeoutError(message, prediction_id=pid)
    if status != "succeeded" or not isinstance(event.get("prediction"), dict):
        raise PredictionFailedError(message or f"prediction ended with status '{status}'", prediction_id=pid)
    return Prediction(event["prediction"])
