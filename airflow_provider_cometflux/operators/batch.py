"""The batch operator: many prompts, one task; every prediction created in the worker, all watched at once."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_cometflux._compat import conf
from airflow_provider_cometflux.checks import check_count
from airflow_provider_cometflux.completion import complete_batch
from airflow_provider_cometflux.contract import XCOM_CREATE_ERRORS, XCOM_PREDICTION_IDS, XCOM_REUSED
from airflow_provider_cometflux.events import batch_results
from airflow_provider_cometflux.hooks.cometapi import DOWNLOAD_TIMEOUT, MAX_OUTPUT_BYTES
from airflow_provider_cometflux.inputs import MAX_INPUT_IMAGE_BYTES, check_request_size, has_images, inline_images
from airflow_provider_cometflux.job import DEFAULT_DEFER_AFTER
from airflow_provider_cometflux.models import DEFAULT_MODEL, build_input, split_model, validate_input
from airflow_provider_cometflux.operators.base import CometFluxBaseOperator
from airflow_provider_cometflux.submission import DEFAULT_CREATES_PER_MINUTE

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath

    from airflow_provider_cometflux.job import PredictionJob
    from airflow_provider_cometflux.submission import Submitted
    from airflow_provider_cometflux.triggers.batch import CometFluxBatchTrigger

#: The task state store key holding the batch's prediction ids across attempts (Airflow 3.3+).
STATE_KEY = "cometflux_batch"


class CometFluxBatchOperator(CometFluxBaseOperator):
    """
    Generates images for many prompts in one task and returns them per prompt, in prompt order.

    The worker creates one prediction per prompt, spaced evenly at ``creates_per_minute`` (Replicate allows 600;
    a 429 pauses every create for the service's ``Retry-After``), saving the ids created so far to the task state
    store every few seconds (Airflow 3.3+). It then watches every prediction together: from the triggerer
    (``deferrable=True``), where one trigger holding ids only polls them all through the shared poller without a
    worker slot, or from the worker. Nothing is ever created in the triggerer, so a triggerer that dies costs a
    few polls, never a second payment.

    It returns (XCom ``return_value``) a ``list[list[str]]``: for each prompt, the stored image URIs when
    ``output_path`` is set, else the delivery URLs (which expire after about an hour); an empty list for a prompt
    that failed. XCom ``prediction_ids`` holds each prompt's prediction id (``None`` if none was created), XCom
    ``predictions`` each prompt's final prediction with its input (``None`` if it failed), XCom ``failures`` one
    ``{"index", "prompt", "prediction_id", "status", "message"}`` per failed prompt, and with ``output_path`` XCom
    ``images`` the stored files' metadata per prompt, a sidecar per prediction and a ``manifest.jsonl``.

    A failed prompt never loses the others' images. With ``fail_on_error=True`` (the default), once every prompt
    has finished, the XComs above are pushed and the task fails listing the failures, without retrying (a retry
    would pay for the successful images again). With ``fail_on_error=False`` the task succeeds and the failures
    are logged. A key or connection that is unusable fails the task at once, as it would a single prediction.

    On Airflow 3.3+ a retried attempt resumes the predictions of the earlier one (watching those still running,
    keeping those that succeeded) and creates anew only the prompts whose prediction failed, was canceled or
    aborted, ended without images, or was never created.

    :param prompts: the prompts, one prediction each (templated; a list, or a JSON list in a string).
    :param input: the model inputs shared by every prompt, e.g. ``{"aspect_ratio": "16:9"}`` (templated).
        Every prompt's input is validated before any request.
    :param model: the model id ``owner/name`` (templated).
    :param cometapi_conn_id: the Airflow connection of type ``cometapi`` holding the API key.
    :param deferrable: watch from the triggerer instead of the worker. Defaults to the
        ``[operators] default_deferrable`` setting.
    :param creates_per_minute: the create pace (default 600, Replicate's limit).
    :param poll_interval: seconds between polls of one prediction once its first quick polls are done.
    :param timeout: seconds the whole batch may take, from the start of the task; at the deadline the predictions
        still running are cancelled (best effort) and their prompts fail with status ``timeout``.
    :param output_path: a folder URI or ``ObjectStoragePath`` to copy every image into, as
        ``<output_path>/<prediction_id>-<index>.<ext>`` (templated). It is checked writable before any create: a
        folder that is not fails the task without retries, before anything is paid for.
    :param fail_on_error: fail the task (after pushing every result) when a prompt failed.
    :param defer_after: with ``deferrable=True``, first watch in the worker for up to this many seconds after the
        creates, so a small batch of a fast model finishes without the round trip through the triggerer. ``0``
        defers at once.
    :param download_concurrency: predictions whose images are copied to ``output_path`` at once.
    :param max_output_bytes: the largest image copied; a larger one fails its prompt, and nothing of it is kept.
    :param download_timeout: seconds the copy of one image may take.
    :param max_input_image_bytes: the largest local or object-storage file sent inline for one image of the
        shared ``input`` (``image``, ``image_prompt``, ``input_image``, each item of ``input_images``): read once,
        in the worker, and sent with every prompt, as the prediction operator does.
    :param unchecked_inputs: model inputs sent even when the provider's schema of the model refuses them, for when
        the service changed after the schema was last checked: each override is logged as a warning naming the
        input, the value and the rule overridden (the prompt is always checked).
    :param trigger_queue: the triggerer queue of the task's trigger (Airflow 3.2+ with ``[triggerer]
        queues_enabled``: only a triggerer started with ``--queues`` naming it runs it); ``None``: the task's own
        ``queue``, as Airflow does. See the README's "One account, several triggerers".
    :param reuse_path: a folder URI or ``ObjectStoragePath`` (templated) holding an index of earlier successes by
        model and whole input: a prompt found there (its images still reading back with their sha256) is copied into
        ``output_path`` (required) without any request; each new success is added.
    :param max_cost_usd: the batch's budget in US dollars. When the estimate (prompts x images per prediction x
        price, less what reuse serves) is above it, the task fails before any request. While creating, creation
        stops before spent plus in flight would pass it: the prompts left are recorded as ``not_created`` with that
        reason, and the task fails once everything is recorded.
    :param prices: the account's prices, ``{"<owner/name>": <USD per image>}`` or ``{"<owner/name>": {"usd": x,
        "per": "megapixel"}}``, over the connection extra ``prices`` and the default list prices.

    It pushes XCom ``cost``, ``{"usd", "images", "predictions", "reused"}`` (reused images at 0); each prompt's
    record (XCom ``predictions``, sidecar, manifest line) carries its ``cost`` and ``reused_from``.
    """

    template_fields: Sequence[str] = ("prompts", "input", "model", "output_path", "reuse_path")
    template_fields_renderers = {"input": "json", "prompts": "json"}
    state_key = STATE_KEY

    def __init__(
        self,
        *,
        prompts: Sequence[str] | str,
        input: Mapping[str, Any] | None = None,
        model: str = DEFAULT_MODEL,
        cometapi_conn_id: str = "cometapi_default",
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        creates_per_minute: float = DEFAULT_CREATES_PER_MINUTE,
        poll_interval: float = 2.0,
        timeout: float = 3600,
        output_path: str | ObjectStoragePath | None = None,
        fail_on_error: bool = True,
        defer_after: float = DEFAULT_DEFER_AFTER,
        download_concurrency: int = 8,
        max_output_bytes: int = MAX_OUTPUT_BYTES,
        download_timeout: float = DOWNLOAD_TIMEOUT,
        max_input_image_bytes: int = MAX_INPUT_IMAGE_BYTES,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            input=input,
            model=model,
            cometapi_conn_id=cometapi_conn_id,
            deferrable=deferrable,
            creates_per_minute=creates_per_minute,
            poll_interval=poll_interval,
            timeout=timeout,
            output_path=output_path,
            defer_after=defer_after,
            download_concurrency=download_concurrency,
            max_output_bytes=max_output_bytes,
            download_timeout=download_timeout,
            **kwargs,
        )
        self.prompts = prompts
        self.fail_on_error = fail_on_error
        self.max_input_image_bytes = check_count("max_input_image_bytes", max_input_image_bytes)

    # -- input -----------------------------------------------------------------------------------------------

    def _prompt_list(self) -> list[str]:
        """The rendered prompts, each a non-empty string."""
        from airflow_provider_cometflux.exceptions import CometFluxInputError

        prompts: Any = self.prompts
        if isinstance(prompts, str):
            try:
                prompts = json.loads(prompts)
            except ValueError:
                raise CometFluxInputError(
                    "prompts: a string must hold a JSON list of prompts; pass a list (or an XComArg) instead."
                ) from None
        if not isinstance(prompts, Sequence) or isinstance(prompts, (str, bytes)):
            raise CometFluxInputError(f"prompts: {type(prompts).__name__} is not allowed; expected a list of strings.")
        for index, prompt in enumerate(prompts):
            if not isinstance(prompt, str) or not prompt.strip():
                raise CometFluxInputError(f"prompts[{index}]: {prompt!r} is not allowed; expected a non-empty string.")
        return list(prompts)

    def payloads(self) -> list[dict[str, Any]]:
        """Every prompt's model input, images inlined (read once, in the worker), each checked before any request."""
        from airflow_provider_cometflux.exceptions import CometFluxInputError

        split_model(self.model)
        shared = self.input
        if has_images(shared):
            shared = inline_images(
                self.model, shared, max_bytes=self.max_input_image_bytes, unchecked=self.unchecked_inputs
            )
        payloads = []
        for index, prompt in enumerate(self._prompt_list()):
            try:
                payload = build_input(prompt, shared)
                validate_input(self.model, payload, unchecked=self.unchecked_inputs)
                check_request_size(payload)
            except CometFluxInputError as exc:
                raise CometFluxInputError(f"prompts[{index}]: {exc}") from None
            payloads.append(payload)
        return payloads

    def _given_inputs(self) -> list[dict[str, Any]]:
        """Every prompt's input as the task was given it (image paths as given): what its records keep."""
        return [build_input(prompt, _as_given(self.input)) for prompt in self._prompt_list()]

    # -- the run ---------------------------------------------------------------------------------------------

    def execute(self, context: Context) -> list[list[str]]:
        prompts = self._prompt_list()
        if not prompts:
            self.log.info("No prompts: nothing to generate.")
            return []
        self.log.info(
            "Batch of %d prompts (%s), %g creates/min at most.", len(prompts), self.model, self.creates_per_minute
        )
        return super().execute(context)

    def record(self, context: Context, submitted: Submitted) -> None:
        """Push XCom ``prediction_ids`` and why a prompt has no prediction (kept across the deferral)."""
        ti = context["ti"]
        ti.xcom_push(key=XCOM_PREDICTION_IDS, value=list(submitted.ids))
        ti.xcom_push(key=XCOM_CREATE_ERRORS, value=_create_errors(submitted))
        if submitted.reused:
            ti.xcom_push(key=XCOM_REUSED, value={str(index): entry for index, entry in submitted.reused.items()})

    def trigger(self, job: PredictionJob) -> CometFluxBatchTrigger:
        from airflow_provider_cometflux.triggers.batch import CometFluxBatchTrigger

        self.log.info("Deferring: %d predictions to watch.", len(self.engine.prediction_ids))
        return CometFluxBatchTrigger(
            prediction_ids=job.ids,
            cometapi_conn_id=self.cometapi_conn_id,
            poll_interval=self.poll_interval,
            end_time=job.end_time,
        )

    def finish(self, context: Context, job: PredictionJob, events: list[dict[str, Any] | None]) -> list[list[str]]:
        return self._complete(context, self._given_inputs(), job.ids, events, _create_errors(job.submitted))

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> list[list[str]]:
        """
        Finish after the trigger: every prompt's event through the same completion as the inline path.

        :param context: the task's context.
        :param event: a batch event (:mod:`~airflow_provider_cometflux.events`) from the trigger.
        """
        payloads = self._given_inputs()  # no file is read again after the deferral
        results = batch_results(event, len(payloads))
        ti = context["ti"]
        errors = ti.xcom_pull(task_ids=ti.task_id, key=XCOM_CREATE_ERRORS, map_indexes=ti.map_index)
        reused = ti.xcom_pull(task_ids=ti.task_id, key=XCOM_REUSED, map_indexes=ti.map_index) or {}
        if reused:
            from airflow_provider_cometflux.reuse import reused_event

            for index, entry in reused.items():
                results[int(index)] = reused_event(entry)
        ids = [result.get("prediction_id") or None if result else None for result in results]
        self.engine.prediction_ids = [pid for pid in ids if pid]
        return self._complete(context, payloads, ids, results, errors or {})

    def _complete(
        self,
        context: Context,
        payloads: list[dict[str, Any]],
        ids: Sequence[str | None],
        events: Sequence[dict[str, Any] | None],
        errors: Mapping[str, str],
    ) -> list[list[str]]:
        create_errors = {int(index): message for index, message in errors.items()}
        return complete_batch(
            context,
            events,
            prompts=self._prompt_list(),
            payloads=payloads,
            prediction_ids=ids,
            create_errors=create_errors,
            hook=self.engine.hook,
            outputs=self.outputs(self.input),
            fail_on_error=self.fail_on_error,
            model=self.model,
            on_cost=self.engine.record_cost,
        )


def _as_given(model_input: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The input made JSON-safe (a path object as its URI), as records keep it."""
    return None if model_input is None else json.loads(json.dumps(dict(model_input), default=str))


def _create_errors(submitted: Submitted | None) -> dict[str, str]:
    """Why a prompt has no prediction, by position, as XCom keeps it across the deferral."""
    errors = submitted.errors if submitted is not None else {}
    return {str(index): exc.message for index, exc in errors.items()}
