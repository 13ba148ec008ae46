"""The operator: create one FLUX prediction in the worker, then wait for it inline or through the triggerer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_cometflux._compat import conf
from airflow_provider_cometflux.checks import check_count
from airflow_provider_cometflux.completion import complete_one
from airflow_provider_cometflux.contract import XCOM_PREDICTION_ID
from airflow_provider_cometflux.hooks.cometapi import DOWNLOAD_TIMEOUT, MAX_OUTPUT_BYTES
from airflow_provider_cometflux.inputs import MAX_INPUT_IMAGE_BYTES, check_request_size, has_images, inline_images
from airflow_provider_cometflux.job import DEFAULT_DEFER_AFTER
from airflow_provider_cometflux.links import CometAPIPredictionLink
from airflow_provider_cometflux.models import DEFAULT_MODEL, build_input, split_model, validate_input
from airflow_provider_cometflux.operators.base import CometFluxBaseOperator

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath

    from airflow_provider_cometflux.job import PredictionJob
    from airflow_provider_cometflux.submission import Submitted
    from airflow_provider_cometflux.triggers.prediction import CometFluxPredictionTrigger

#: The task state store key holding this task's prediction across attempts (Airflow 3.3+).
STATE_KEY = "cometflux_prediction"


class CometFluxPredictionOperator(CometFluxBaseOperator):
    """
    Generates images with a FLUX model through CometAPI and returns their URLs (or durable copies).

    The task creates a prediction in the worker, pushes XCom ``prediction_id`` at once, then waits for it: by
    polling in the worker (``deferrable=False``) or in the triggerer (``deferrable=True``), freeing the worker slot
    meanwhile. It returns (XCom ``return_value``) a ``list[str]``: the stored image URIs when ``output_path`` is
    set, else the delivery URLs, which expire after about an hour. XCom ``prediction`` holds the final prediction
    with the input it was made from. A prediction that succeeds without any image fails the task (one whose
    outputs the service removed fails without retries).

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
    :param timeout: seconds the task may take, counted from its start, every request and every poll included;
        at the deadline the prediction is cancelled (best effort) and the task fails.
    :param output_path: a folder URI or ``ObjectStoragePath`` (``file://``, ``s3://``, ...) to copy the images
        into, as ``<output_path>/<prediction_id>-<index>.<ext>``, with a provenance sidecar
        ``<output_path>/<prediction_id>.json`` (templated); a mapped task also writes
        ``manifest-<map_index>.jsonl``. It is checked writable before the create: a folder that is not fails the
        task without retries, before anything is paid for.
    :param prefer_wait: if set (1..60), ask the service to hold the create's answer up to that many seconds
        (``Prefer: wait``) so that a fast model may finish without any polling; harmless if ignored.
    :param defer_after: with ``deferrable=True``, first poll in the worker for up to this many seconds and defer
        only a prediction still running then: a fast model finishes in one worker run, without the round trip
        through the triggerer. ``0`` defers at once.
    :param max_input_image_bytes: the largest local or object-storage file sent inline (as a data URI) for one
        image of the ``image``, ``image_prompt``, ``input_image`` and ``input_images`` inputs (all of a request's
        inline images together: at most 14 MiB). Each of them may be an http(s) URL (sent as it is), a local path,
        a ``file://`` or storage URI, or an upstream task's outputs (``input={"input_images": edit.output}``); see
        :mod:`airflow_provider_cometflux.inputs`.
    :param max_output_bytes: the largest image copied to ``output_path``; a larger one fails the task, and
        nothing of it is kept.
    :param download_timeout: seconds the copy of one image may take.
    :param unchecked_inputs: model inputs sent even when the provider's schema of the model refuses them, for when
        the service changed after the schema was last checked: each override is logged as a warning naming the
        input, the value and the rule overridden (the prompt is always checked).
    :param trigger_queue: the triggerer queue of the task's trigger (Airflow 3.2+ with ``[triggerer]
        queues_enabled``: only a triggerer started with ``--queues`` naming it runs it); ``None``: the task's own
        ``queue``, as Airflow does. See the README's "One account, several triggerers".
    :param reuse_path: a folder URI or ``ObjectStoragePath`` (templated) holding an index of earlier successes by
        model and whole input (inline images by their sha256). When one is found and its images still read back
        with their sha256, they are copied into ``output_path`` (required) and no request is made; a new success is
        added. Without a ``seed`` the same prompt and settings give back the same stored image.
    :param max_cost_usd: fail before any request when the estimated cost (images x price) is above it.
    :param prices: the account's prices, ``{"<owner/name>": <USD per image>}`` or ``{"<owner/name>": {"usd": x,
        "per": "megapixel"}}``, over the connection extra ``prices`` and the default list prices.

    It pushes XCom ``cost``, ``{"usd", "images", "predictions", "reused"}``, and XCom ``prediction`` carries
    ``cost`` (``{"usd", "images"}``) and ``reused_from``.

    On Airflow 3.3+ the prediction id is kept in the task's state store, so a retried attempt reattaches to a
    prediction that is still running or has succeeded instead of paying for a new one (one that failed is
    created anew). Airflow 3.0-3.2 have no task state store: there a retry creates a new prediction.
    """

    template_fields: Sequence[str] = ("prompt", "input", "model", "output_path", "reuse_path")
    template_fields_renderers = {"input": "json"}
    operator_extra_links = (CometAPIPredictionLink(),)
    state_key = STATE_KEY

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
        max_output_bytes: int = MAX_OUTPUT_BYTES,
        download_timeout: float = DOWNLOAD_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            input=input,
            model=model,
            cometapi_conn_id=cometapi_conn_id,
            deferrable=deferrable,
            poll_interval=poll_interval,
            timeout=timeout,
            output_path=output_path,
            prefer_wait=prefer_wait,
            defer_after=defer_after,
            max_output_bytes=max_output_bytes,
            download_timeout=download_timeout,
            **kwargs,
        )
        self.prompt = prompt
        self.wait_for_completion = wait_for_completion
        self.max_input_image_bytes = check_count("max_input_image_bytes", max_input_image_bytes)

    def _request_input(self) -> dict[str, Any]:
        """The rendered input as given (``prompt`` merged in), before inline images are read."""
        if self.input is not None and not isinstance(self.input, Mapping):
            return build_input(self.prompt, self.input)  # raises, naming the field
        merged = dict(self.input or {})
        if self.prompt is not None:
            merged["prompt"] = self.prompt
        return merged

    def payloads(self) -> list[dict[str, Any]]:
        """The rendered, validated model input: every check runs before any request is made."""
        split_model(self.model)
        model_input = self.input
        if has_images(model_input):  # read in the worker, before the create
            model_input = inline_images(
                self.model, model_input, max_bytes=self.max_input_image_bytes, unchecked=self.unchecked_inputs
            )
        payload = build_input(self.prompt, model_input)
        validate_input(self.model, payload, unchecked=self.unchecked_inputs)
        check_request_size(payload)
        return [payload]

    def stores_images(self) -> bool:
        """Only a task that waits for its prediction copies images (without, ``output_path`` is unused)."""
        return self.wait_for_completion and super().stores_images()

    def execute(self, context: Context) -> list[str]:
        job = self.start(context)
        if self.wait_for_completion:
            return self.wait(context, job)
        assert job.submitted is not None  # start() created it, or raised
        prediction = job.submitted.read[0]
        return prediction.output_urls if prediction.succeeded else []

    def record(self, context: Context, submitted: Submitted) -> None:
        """Raise when the create failed, else push XCom ``prediction_id`` and the extra link."""
        if 0 in submitted.errors:
            raise submitted.errors[0]
        if 0 in submitted.reused:  # served from reuse_path: the earlier prediction, no request made
            entry = submitted.reused[0]
            context["ti"].xcom_push(key=XCOM_PREDICTION_ID, value=entry.get("prediction_id"))
            self.log.info("Prediction %s reused from %s.", entry.get("prediction_id"), entry.get("stored_in"))
            return
        prediction = submitted.read[0]
        context["ti"].xcom_push(key=XCOM_PREDICTION_ID, value=prediction.id)
        CometAPIPredictionLink.persist(context, prediction.web_url)
        self.log.info("Prediction %s is %s.", prediction.id, prediction.status)

    def trigger(self, job: PredictionJob) -> CometFluxPredictionTrigger:
        (pid,) = job.ids
        self.log.info("Prediction %s still running after %gs; deferring.", pid, self.defer_after)
        return self.engine.prediction_trigger(
            str(pid), poll_interval=self.poll_interval, end_time=job.end_time, log=self.log
        )

    def finish(self, context: Context, job: PredictionJob, events: list[dict[str, Any] | None]) -> list[str]:
        return self.execute_complete(context, events[0], sent_input=job.payloads[0])

    def _sent_input(self) -> dict[str, Any]:
        """
        After a deferral, the input as sent (the reuse index's key): rebuilt from the rendered input; an input
        that no longer rebuilds (an inline image kept only as its digest) keys by what is recorded of it, since
        the key counts an inline image by its sha256 either way.
        """
        from airflow_provider_cometflux.completion import recordable
        from airflow_provider_cometflux.exceptions import CometFluxInputError

        try:
            return self.payloads()[0]
        except CometFluxInputError:
            return recordable(self._request_input())

    def execute_complete(
        self, context: Context, event: dict[str, Any] | None = None, sent_input: dict[str, Any] | None = None
    ) -> list[str]:
        """
        Finish after the wait: raise on every event but a success with images, else return the image URLs or
        the stored URIs.

        :param context: the task's context.
        :param event: a prediction event (:mod:`~airflow_provider_cometflux.events`) from the trigger or the
            inline wait.
        :param sent_input: the input as sent, after an inline wait (the reuse index's key); after a deferral it
            is rebuilt when ``reuse_path`` is set.
        """
        if isinstance(event, dict) and event.get("prediction_id"):
            self.engine.prediction_ids = [str(event["prediction_id"])]
        outputs = self.outputs(self.input)
        sent = sent_input
        if sent is None and outputs.reuse_path and isinstance(event, dict) and event.get("status") == "succeeded":
            sent = self._sent_input()
        return complete_one(
            context,
            event,
            hook=self.engine.hook,
            outputs=outputs,
            request_input=self._request_input(),
            model=self.model,
            sent_input=sent,
            on_cost=self.engine.record_cost,
        )
