"""What a finished prediction becomes in a task: XComs, durable copies of the images, the return value.

Shared by the operator and the sensor, whether they waited inline, in poke mode or through the trigger.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_cometflux.events import prediction_from_event
from airflow_provider_cometflux.exceptions import PredictionTimeoutError

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath

    from airflow_provider_cometflux.hooks.cometapi import CometAPIHook

#: XCom keys this provider writes besides ``return_value``.
XCOM_PREDICTION_ID = "prediction_id"
XCOM_PREDICTION = "prediction"
XCOM_IMAGES = "images"


def complete(
    context: Context,
    event: dict[str, Any] | None,
    *,
    hook: CometAPIHook,
    output_path: str | ObjectStoragePath | None = None,
    output_format: str | None = None,
) -> list[str]:
    """
    Turn a wait's final event into the task's result, or raise.

    On success it pushes XCom ``prediction`` (the final prediction, nothing secret), copies the images when
    ``output_path`` is set (pushing XCom ``images``), and returns the stored URIs or the delivery URLs.
    On a timeout it cancels the prediction (best effort) before failing.

    :param context: the task's context.
    :param event: ``{"status", "prediction_id", "prediction", "message"}``.
    :param hook: the hook to cancel or download with.
    :param output_path: where to keep durable copies, if anywhere.
    :param output_format: the requested ``output_format``, which delivered files must match.
    """
    try:
        prediction = prediction_from_event(event)
    except PredictionTimeoutError as exc:
        if exc.prediction_id:
            hook.cancel_prediction(exc.prediction_id)
        raise
    ti = context["ti"]
    ti.xcom_push(key=XCOM_PREDICTION, value=prediction.summary())
    urls = prediction.output_urls
    if output_path is None or output_path == "":
        return urls
    from airflow_provider_cometflux.storage import images_metadata, store_outputs

    images = store_outputs(hook, urls, output_path, prediction.id, output_format=output_format)
    ti.xcom_push(key=XCOM_IMAGES, value=images_metadata(images))
    uris = [image.uri for image in images]
    _describe_outlets(context, prediction.id, uris)
    return uris


def _describe_outlets(context: Context, prediction_id: str, uris: list[str]) -> None:
    """Put the stored URIs on the events of the task's outlet assets, for DAGs scheduled on them."""
    task = context.get("task")
    outlets = getattr(task, "outlets", None) or []
    if not outlets:
        return
    from airflow.sdk import Asset

    extra: dict[str, Any] = {"images": list(uris), "prediction_id": prediction_id}
    for outlet in outlets:
        if isinstance(outlet, Asset):
            context["outlet_events"][outlet].extra.update(extra)
