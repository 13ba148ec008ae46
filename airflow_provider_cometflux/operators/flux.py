"""The operator: create a FLUX prediction on CometAPI, then wait for it inline or through the triggerer."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_provider_cometflux.completion import XCOM_PREDICTION_ID, complete
from airflow_provider_cometflux.events import TIMEOUT, make_event
from airflow_provider_cometflux.exceptions import CometFluxInputError, PredictionTimeoutError
from airflow_provider_cometflux.links import CometAPIPredictionLink
from airflow_provider_cometflux.models import (
    DEFAULT_MODEL,
    Prediction,
    build_input,
    check_prediction_id,
    split_model,
    validate_input,
)

try:
    from airflow.sdk import BaseOperator, conf
except ImportError:  # Airflow 3.0
    from airflow.configuration import conf  # type: ignore[no-redef,assignment]
    from airflow.sdk import BaseOperator

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath

    from airflow_provider_cometflux.hooks.cometapi import CometAPIHook

#: Extra time the triggerer gets past ``timeout`` before Airflow itself fails the deferred task; the trigger
#: fires its own ``timeout`` event at ``timeout``, so this only matters if the triggerer is overloaded.
DEFER_GRACE = 60


def check_wait_args(poll_interval: object, timeout: object) -> None:
    """
    :raises CometFluxInputError: when ``poll_interval`` or ``timeout`` is not a positive number.
    """
    for name, value in (("poll_interval", poll_interval), ("timeout", timeout)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise CometFluxInputError(f"{name}: {value!r} is not allowed; expected a number of seconds above 0.")


class CometFluxPredictionOperator(BaseOperator):
    """
    Generates images with a FLUX model through CometAPI and returns their URLs (or durable copies).

    The task creates a prediction, pushes XCom ``prediction_id`` at once, then waits for it: by polling in the
    worker (``deferrable=False``) or in the triggerer (``deferrable=True``), freeing the worker slot meanwhile.
    It returns (XCom ``return_value``) a ``list[str]``: the stored image URIs when ``output_path`` is set, else
    the delivery URLs, which expire after about an hour. XCom ``prediction`` holds the final prediction.

    :param prompt: the text prompt; merged into ``input`` as ``input["prompt"]`` (templated).
    :param input: the model's other inputs, e.g. ``{"aspect_ratio": "16:9", "num_outputs": 2}`` (templated).
        Inputs of the known FLUX models are validated before any request.
    :param model: the model id ``owner/name`` (templated).
    :param cometapi_conn_id: the Airflow connection of type ``cometapi`` holding the API key.
    :param deferrable: wait in the triggerer instead of the worker. Defaults to the
        ``[operators] default_deferrable`` setting.
    :param wait_for_completion: wait for the prediction to finish; when ``False`` the task returns right after
        the create (an empty list, unless the service already answered a finished prediction) and a
        :class:`~airflow_provider_cometflux.sensors.prediction.CometFluxPredictionSensor` can wait later.
    :param poll_interval: seconds between status polls once the first quick polls are done.
    :param timeout: seconds to wait for the prediction, counted from the create; at the deadline the
        prediction is cancelled (best effort) and the task fails.
    :param output_path: a folder URI or ``ObjectStoragePath`` (``file://``, ``s3://``, ...) to copy the images
        into, as ``<output_path>/<prediction_id>-<index>.<ext>`` (templated).
    :param prefer_wait: if set (1..60), ask the service to hold the create's answer up to that many seconds
        (``Prefer: wait``) so that a fast model may finish without any polling; harmless if ignored.
    """

    template_fields: Sequence[str] = ("prompt", "input", "model", "output_path")
    template_fields_renderers = {"input": "json"}
    operator_extra_links = (CometAPIPredictionLink(),)
    ui_color = "#f3e8ff"

    def __init__(
        self,
        *,
        prompt: str | None = None,
        input: Mapping[str, Any] | None = None,
        model: str = DEFAULT_MODEL,
        cometapi_conn_id: str = "cometapi_default",
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        wait_for_completion: bool = True,
        poll_interval: float = 2.0,
        timeout: float = 600,
        output_path: str | ObjectStoragePath | None = None,
        prefer_wait: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_wait_args(poll_interval, timeout)
        if prefer_wait is not None and (isinstance(prefer_wait, bool) or prefer_wait not in range(1, 61)):
            raise CometFluxInputError(f"prefer_wait: {prefer_wait!r} is not allowed; expected an integer 1..60.")
        self.prompt = prompt
        self.input = input
        self.model = model
        self.cometapi_conn_id = cometapi_conn_id
        self.deferrable = deferrable
        self.wait_for_completion = wait_for_completion
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.output_path = output_path
        self.prefer_wait = prefer_wait
        self._prediction_id: str | None = None

    @cached_property
    def hook(self) -> CometAPIHook:
        from airflow_provider_cometflux.hooks.cometapi import CometAPIHook

        return CometAPIHook(self.cometapi_conn_id)

    def _model_input(self) -> dict[str, Any]:
        """The rendered, validated model input: every check runs before any request is made."""
        split_model(self.model)
        payload = build_input(self.prompt, self.input)
        validate_input(self.model, payload)
        return payload

    def execute(self, context: Context) -> list[str]:
        payload = self._model_input()
        started = time.monotonic()
        prediction = Prediction(self.hook.create_prediction(self.model, payload, wait=self.prefer_wait))
        pid = check_prediction_id(prediction.id)
        self._prediction_id = pid
        context["ti"].xcom_push(key=XCOM_PREDICTION_ID, value=pid)
        CometAPIPredictionLink.persist(context, prediction.web_url)
        self.log.info("Prediction %s is %s.", pid, prediction.status)
        if not self.wait_for_completion:
            return prediction.output_urls if prediction.succeeded else []
        if prediction.is_terminal:
            return self.execute_complete(context, make_event(prediction.status, pid, prediction=prediction))
        remaining = max(0.0, self.timeout - (time.monotonic() - started))
        if self.deferrable:
            from airflow_provider_cometflux.triggers.prediction import CometFluxPredictionTrigger

            self.defer(
                trigger=CometFluxPredictionTrigger(
                    prediction_id=pid,
                    cometapi_conn_id=self.cometapi_conn_id,
                    poll_interval=self.poll_interval,
                    end_time=time.time() + remaining,
                ),
                method_name="execute_complete",
                timeout=timedelta(seconds=remaining + DEFER_GRACE),
            )
        return self.execute_complete(context, self._wait_inline(pid, remaining))

    def _wait_inline(self, prediction_id: str, timeout: float) -> dict[str, Any]:
        try:
            raw = self.hook.wait_for_prediction(prediction_id, poll_interval=self.poll_interval, timeout=timeout)
        except PredictionTimeoutError as exc:
            return make_event(TIMEOUT, prediction_id, message=f"Prediction {prediction_id}: {exc.message}")
        prediction = Prediction(raw)
        return make_event(prediction.status, prediction_id, prediction=prediction)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> list[str]:
        """
        Finish after the wait: raise on every event but success, else return the image URLs or stored URIs.

        :param context: the task's context.
        :param event: ``{"status", "prediction_id", "prediction", "message"}`` from the trigger or inline wait.
        """
        input_format = (self.input or {}).get("output_format") if isinstance(self.input, Mapping) else None
        result = complete(context, event, hook=self.hook, output_path=self.output_path, output_format=input_format)
        self._prediction_id = None
        self.log.info("Prediction done: %d image(s): %s", len(result), result)
        return result

    def on_kill(self) -> None:
        """Cancel the prediction (best effort) when the task is killed while waiting in the worker."""
        if self._prediction_id:
            self.log.info("Task killed: cancelling prediction %s.", self._prediction_id)
            self.hook.cancel_prediction(self._prediction_id)
