"""The operator: create a FLUX prediction on CometAPI, then wait for it inline or through the triggerer."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_provider_cometflux.completion import XCOM_PREDICTION_ID, complete
from airflow_provider_cometflux.events import TIMEOUT, make_event
from airflow_provider_cometflux.exceptions import CometAPIError, CometFluxInputError, PredictionTimeoutError
from airflow_provider_cometflux.links import CometAPIPredictionLink
from airflow_provider_cometflux.models import (
    DEFAULT_MODEL,
    FAILED_STATUSES,
    IMAGE_INPUTS,
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
from airflow.triggers.base import BaseTrigger

#: Airflow 3.3+ calls a trigger's ``on_kill`` when a user kills a deferred task, which cancels the prediction.
TRIGGER_ON_KILL = hasattr(BaseTrigger, "on_kill")

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath

    from airflow_provider_cometflux.hooks.cometapi import CometAPIHook

#: Seconds a deferrable operator first polls in the worker before deferring (see ``defer_after``).
DEFAULT_DEFER_AFTER = 5.0
#: Largest file sent inline as a data URI for an image input (see ``max_input_image_bytes``).
MAX_INPUT_IMAGE_BYTES = 10 * 1024 * 1024
#: The task state store key holding this task's prediction across attempts (Airflow 3.3+).
STATE_KEY = "cometflux_prediction"

NO_TRIGGER_ON_KILL = (
    "This Airflow cannot cancel prediction %s if the deferred task is killed (a trigger's on_kill needs 3.3+); "
    "it runs on at CometAPI until it finishes."
)

#: Extra time the triggerer gets past ``timeout`` before Airflow itself fails the deferred task; the trigger
#: fires its own ``timeout`` event at ``timeout``, so this only matters if the triggerer is overloaded.
DEFER_GRACE = 60


def _fingerprint(model: str, payload: Mapping[str, Any]) -> str:
    """Identifies a request, so a retry reattaches only to a prediction made for the same model and input."""
    text = json.dumps({"model": model, "input": payload}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


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
    :param defer_after: with ``deferrable=True``, first poll in the worker for up to this many seconds and defer
        only a prediction still running then: a fast model finishes in one worker run, without the round trip
        through the triggerer. ``0`` defers at once.
    :param max_input_image_bytes: the largest local or object-storage file sent inline (as a data URI) for the
        ``image``, ``image_prompt`` and ``input_image`` inputs.

    On Airflow 3.3+ the prediction id is kept in the task's state store, so a retried attempt reattaches to a
    prediction that is still running or has succeeded instead of paying for a new one (one that failed is
    created anew). Airflow 3.0-3.2 have no task state store: there a retry creates a new prediction.
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
        defer_after: float = DEFAULT_DEFER_AFTER,
        max_input_image_bytes: int = MAX_INPUT_IMAGE_BYTES,
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
        if isinstance(defer_after, bool) or not isinstance(defer_after, (int, float)) or defer_after < 0:
            raise CometFluxInputError(f"defer_after: {defer_after!r} is not allowed; expected seconds >= 0.")
        self.prefer_wait = prefer_wait
        self.defer_after = defer_after
        self.max_input_image_bytes = max_input_image_bytes
        self._prediction_id: str | None = None

    @cached_property
    def hook(self) -> CometAPIHook:
        from airflow_provider_cometflux.hooks.cometapi import CometAPIHook

        return CometAPIHook(self.cometapi_conn_id)

    def _model_input(self) -> dict[str, Any]:
        """The rendered, validated model input: every check runs before any request is made."""
        split_model(self.model)
        model_input = self.input
        if isinstance(model_input, Mapping) and any(key in model_input for key in IMAGE_INPUTS):
            from airflow_provider_cometflux.storage import inline_input_images

            model_input = inline_input_images(model_input, max_bytes=self.max_input_image_bytes)
        payload = build_input(self.prompt, model_input)
        validate_input(self.model, payload)
        return payload

    def execute(self, context: Context) -> list[str]:
        payload = self._model_input()
        started = time.monotonic()
        request = _fingerprint(self.model, payload)
        prediction = self._reattach(context, request) or self._create(context, payload, request)
        pid = prediction.id
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
            if self.defer_after > 0:
                event = self._wait_inline(pid, min(self.defer_after, remaining), final=remaining <= self.defer_after)
                if event is not None:
                    return self.execute_complete(context, event)
                remaining = max(0.0, self.timeout - (time.monotonic() - started))
                self.log.info("Prediction %s still running after %gs; deferring.", pid, self.defer_after)
            from airflow_provider_cometflux.triggers.prediction import CometFluxPredictionTrigger

            if not TRIGGER_ON_KILL:
                self.log.info(NO_TRIGGER_ON_KILL, pid)
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
        event = self._wait_inline(pid, remaining, final=True)
        assert event is not None
        return self.execute_complete(context, event)

    def _create(self, context: Context, payload: dict[str, Any], request: str) -> Prediction:
        prediction = Prediction(self.hook.create_prediction(self.model, payload, wait=self.prefer_wait))
        pid = check_prediction_id(prediction.id)
        store = context.get("task_state_store")
        if store is not None:
            store.set(STATE_KEY, {"prediction_id": pid, "request": request})
        return prediction

    def _reattach(self, context: Context, request: str) -> Prediction | None:
        """
        The prediction an earlier attempt of this task created for the same request, if it is worth keeping.
        """
        store = context.get("task_state_store")
        if store is None:
            if context["ti"].try_number > 1:
                self.log.info("This Airflow has no task state store (3.3+): a retry creates a new prediction.")
            return None
        saved = store.get(STATE_KEY)
        if not isinstance(saved, dict) or saved.get("request") != request:
            return None
        pid = str(saved.get("prediction_id"))
        try:
            prediction = Prediction(self.hook.get_prediction(pid))
        except CometAPIError as exc:
            if exc.http_status == 404:
                self.log.warning("Prediction %s of an earlier attempt is gone; creating a new one.", pid)
                return None
            raise
        if prediction.status in FAILED_STATUSES:
            self.log.info("Prediction %s of an earlier attempt ended %s; creating a new one.", pid, prediction.status)
            return None
        self.log.info(
            "Reattaching to prediction %s (%s) from an earlier attempt: no new create.", pid, prediction.status
        )
        return prediction

    def _wait_inline(self, prediction_id: str, timeout: float, *, final: bool) -> dict[str, Any] | None:
        """
        Poll in the worker for up to ``timeout`` seconds.

        :return: the final event; at the deadline a ``timeout`` event when ``final``, else ``None``.
        """
        try:
            raw = self.hook.wait_for_prediction(prediction_id, poll_interval=self.poll_interval, timeout=timeout)
        except PredictionTimeoutError as exc:
            if not final:
                return None
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
