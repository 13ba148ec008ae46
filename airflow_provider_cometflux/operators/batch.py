"""The batch operator: many prompts, one task; creates paced under the rate limit, every prediction watched at once."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_provider_cometflux.completion import XCOM_IMAGES
from airflow_provider_cometflux.events import ERROR, make_event, prediction_from_event
from airflow_provider_cometflux.exceptions import CometAPIError, CometFluxInputError
from airflow_provider_cometflux.models import DEFAULT_MODEL, build_input, split_model, validate_input

try:
    from airflow.sdk import BaseOperator, conf
    from airflow.sdk.exceptions import AirflowException, AirflowFailException
except ImportError:  # Airflow 3.0
    from airflow.configuration import conf  # type: ignore[no-redef,assignment]
    from airflow.exceptions import AirflowException, AirflowFailException  # type: ignore[no-redef]
    from airflow.sdk import BaseOperator

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath

    from airflow_provider_cometflux.hooks.cometapi import CometAPIHook
    from airflow_provider_cometflux.triggers.batch import BatchState

#: XCom keys the batch operator writes besides ``return_value`` (and ``images`` with ``output_path``).
XCOM_PREDICTION_IDS = "prediction_ids"
XCOM_FAILURES = "failures"
#: Internal XCom carrying the results known when the task deferred (``airflow dags test`` drops ``defer`` kwargs);
#: emptied (``[]``) when the batch ends.
XCOM_RESULTS = "_cometflux_batch_results"
#: The task state store key holding the batch's prediction ids across attempts (Airflow 3.3+).
STATE_KEY = "cometflux_batch"
#: Seconds a deferrable batch first runs in the worker before deferring (see ``defer_after``).
DEFAULT_DEFER_AFTER = 5.0
#: Extra time past ``timeout`` before Airflow itself fails the deferred task: the trigger needs some at the
#: deadline to let creates answer and to cancel what still runs.
DEFER_GRACE = 120
#: How often at most the worker saves the ids created so far to the task state store while creating.
PROGRESS_EVERY = 2.0
#: Failures listed in the task's error message (all of them are in XCom ``failures``).
FAILURES_LISTED = 10


class CometFluxBatchFailedError(AirflowFailException):
    """Some prompts of a batch failed; the others' images are in XCom. Not retried: that would pay for them again."""


class CometFluxBatchOperator(BaseOperator):
    """
    Generates images for many prompts in one task and returns them per prompt, in prompt order.

    It creates one prediction per prompt, spaced evenly at ``creates_per_minute`` (Replicate allows 600) and
    pausing on 429 for the service's ``Retry-After``, and watches every prediction together: from the triggerer
    (``deferrable=True``), where one trigger creates and polls them all without holding a worker slot, or from
    the worker. Polls are paced too (``polls_per_minute``) and, once a few predictions have finished, skip the
    early part of the typical run time, so a large batch costs few requests per image.

    It returns (XCom ``return_value``) a ``list[list[str]]``: for each prompt, the stored image URIs when
    ``output_path`` is set, else the delivery URLs (which expire after about an hour); an empty list for a prompt
    that failed. XCom ``prediction_ids`` holds each prompt's prediction id (``None`` if none was created), XCom
    ``failures`` one ``{"index", "prompt", "prediction_id", "status", "message"}`` per failed prompt, and with
    ``output_path`` XCom ``images`` the stored files' metadata per prompt.

    A failed prompt never loses the others' images. With ``fail_on_error=True`` (the default), once every prompt
    has finished, the XComs above are pushed and the task fails listing the failures, without retrying (a retry
    would pay for the successful images again); if no prediction was created at all the error is an ordinary
    one, retried as the task says. With ``fail_on_error=False`` the task succeeds and the failures are logged.

    On Airflow 3.3+ the prediction ids are kept in the task's state store, so a retried attempt watches the
    predictions of the earlier one (creating anew only those that ended failed, canceled or aborted) instead of
    paying for them again. A trigger that is creating predictions holds the prompts, the shared input and the
    model (never a secret); once all are created the task records the ids and defers to a trigger holding ids
    only. Should the triggerer restart while a trigger is still creating, it creates its prompts again: set
    ``create_in_worker=True`` to create from the worker, whose progress is saved every few seconds.

    :param prompts: the prompts, one prediction each (templated; a list, or a JSON list in a string).
    :param input: the model inputs shared by every prompt, e.g. ``{"aspect_ratio": "16:9"}`` (templated).
        Every prompt's input is validated before any request.
    :param model: the model id ``owner/name`` (templated).
    :param cometapi_conn_id: the Airflow connection of type ``cometapi`` holding the API key.
    :param deferrable: wait in the triggerer instead of the worker. Defaults to the
        ``[operators] default_deferrable`` setting.
    :param creates_per_minute: the create pace (default 600, Replicate's limit).
    :param polls_per_minute: the most status polls per minute (default 2400, within Replicate's 3000).
    :param poll_interval: seconds between polls of one prediction once its first quick polls are done.
    :param timeout: seconds the whole batch may take, from the start of the task; at the deadline the predictions
        still running are cancelled (best effort) and their prompts fail with status ``timeout``.
    :param output_path: a folder URI or ``ObjectStoragePath`` to copy every image into, as
        ``<output_path>/<prediction_id>-<index>.<ext>`` (templated).
    :param fail_on_error: fail the task (after pushing every result) when a prompt failed.
    :param defer_after: with ``deferrable=True``, first run in the worker for up to this many seconds, so a small
        batch of a fast model finishes without the round trip through the triggerer. ``0`` defers at once.
    :param create_in_worker: with ``deferrable=True``, create every prediction from the worker (holding its slot
        for ``len(prompts) / creates_per_minute`` minutes) and only then defer.
    :param max_concurrency: the most requests the batch keeps open at once.
    :param download_concurrency: images copied to ``output_path`` at once.
    """

    template_fields: Sequence[str] = ("prompts", "input", "model", "output_path")
    template_fields_renderers = {"input": "json", "prompts": "json"}
    ui_color = "#f3e8ff"

    def __init__(
        self,
        *,
        prompts: Sequence[str] | str,
        input: Mapping[str, Any] | None = None,
        model: str = DEFAULT_MODEL,
        cometapi_conn_id: str = "cometapi_default",
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        creates_per_minute: float = 600.0,
        polls_per_minute: float = 2400.0,
        poll_interval: float = 2.0,
        timeout: float = 3600,
        output_path: str | ObjectStoragePath | None = None,
        fail_on_error: bool = True,
        defer_after: float = DEFAULT_DEFER_AFTER,
        create_in_worker: bool = False,
        max_concurrency: int = 64,
        download_concurrency: int = 8,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        for name, value in (
            ("creates_per_minute", creates_per_minute),
            ("polls_per_minute", polls_per_minute),
            ("poll_interval", poll_interval),
            ("timeout", timeout),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise CometFluxInputError(f"{name}: {value!r} is not allowed; expected a number above 0.")
        if isinstance(defer_after, bool) or not isinstance(defer_after, (int, float)) or defer_after < 0:
            raise CometFluxInputError(f"defer_after: {defer_after!r} is not allowed; expected seconds >= 0.")
        for name, count in (("max_concurrency", max_concurrency), ("download_concurrency", download_concurrency)):
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise CometFluxInputError(f"{name}: {count!r} is not allowed; expected an integer >= 1.")
        self.prompts = prompts
        self.input = input
        self.model = model
        self.cometapi_conn_id = cometapi_conn_id
        self.deferrable = deferrable
        self.creates_per_minute = float(creates_per_minute)
        self.polls_per_minute = float(polls_per_minute)
        self.poll_interval = float(poll_interval)
        self.timeout = float(timeout)
        self.output_path = output_path
        self.fail_on_error = fail_on_error
        self.defer_after = float(defer_after)
        self.create_in_worker = create_in_worker
        self.max_concurrency = max_concurrency
        self.download_concurrency = download_concurrency
        self._inline_state: BatchState | None = None

    @cached_property
    def hook(self) -> CometAPIHook:
        from airflow_provider_cometflux.hooks.cometapi import CometAPIHook

        return CometAPIHook(self.cometapi_conn_id)

    # -- input -----------------------------------------------------------------------------------------------

    def _prompt_list(self) -> list[str]:
        """The rendered prompts, every one checked (with the shared input) before any request is made."""
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
        split_model(self.model)
        checked: list[str] = []
        for index, prompt in enumerate(prompts):
            if not isinstance(prompt, str) or not prompt.strip():
                raise CometFluxInputError(f"prompts[{index}]: {prompt!r} is not allowed; expected a non-empty string.")
            try:
                validate_input(self.model, build_input(prompt, self.input))
            except CometFluxInputError as exc:
                raise CometFluxInputError(f"prompts[{index}]: {exc}") from None
            checked.append(prompt)
        return checked

    def _request_key(self, prompts: list[str]) -> str:
        """Identifies the batch, so a retry reattaches only to predictions made for the same model and inputs."""
        text = json.dumps({"model": self.model, "input": self.input, "prompts": prompts}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    # -- the run ---------------------------------------------------------------------------------------------

    def execute(self, context: Context) -> list[list[str]]:
        from airflow_provider_cometflux.triggers.batch import BatchState

        prompts = self._prompt_list()
        if not prompts:
            self.log.info("No prompts: nothing to generate.")
            return []
        end_time = time.time() + self.timeout
        state = BatchState.new(prompts)
        self._reattach(context, state, prompts)
        self.log.info(
            "Batch of %d prompts (%s), %g creates/min at most.", len(prompts), self.model, self.creates_per_minute
        )
        if not self.deferrable:
            outcome = self._run_inline(context, state, end_time=end_time)
        elif self.create_in_worker:
            outcome = self._run_inline(context, state, end_time=end_time, until_submitted=True)
        elif self.defer_after > 0:
            outcome = self._run_inline(context, state, end_time=end_time, stop_at=time.time() + self.defer_after)
        else:
            outcome = "paused"
        self._save(context, state)
        return self._continue(context, state, outcome, end_time=end_time, message="")

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> list[list[str]]:
        """
        Resume after the trigger: record what it learnt, then defer again or finish.

        :param context: the task's context.
        :param event: ``{"status", "message", "prediction_ids", "results", "stats", "end_time"}`` from the trigger.
        """
        from airflow_provider_cometflux.triggers.batch import BatchState

        if not isinstance(event, dict) or not isinstance(event.get("results"), list):
            raise AirflowException(f"the batch trigger sent an event this provider does not understand: {event!r}")
        ti = context["ti"]
        prediction_ids = ti.xcom_pull(task_ids=ti.task_id, key=XCOM_PREDICTION_IDS, map_indexes=ti.map_index)
        results = ti.xcom_pull(task_ids=ti.task_id, key=XCOM_RESULTS, map_indexes=ti.map_index)
        count = len(event["results"])
        if not isinstance(prediction_ids, list) or len(prediction_ids) != count:
            prediction_ids = [None] * count
        if not isinstance(results, list) or len(results) != count:
            results = [None] * count
        state = BatchState([None] * count, list(prediction_ids), list(results))
        state.merge(event.get("prediction_ids") or [], event.get("results") or [])
        for index, pid in enumerate(state.prediction_ids):
            if pid is None and state.results[index] is None:  # nothing left that could create it
                state.results[index] = make_event(ERROR, "", message=f"Prompt {index} was not created.")
        stats = event.get("stats") or {}
        self.log.info("Trigger: %s (%s)", event.get("message"), ", ".join(f"{k} {v}" for k, v in stats.items()))
        self._save(context, state)
        end_time = event.get("end_time")
        deadline = float(end_time) if isinstance(end_time, (int, float)) else time.time() + self.timeout
        return self._continue(context, state, str(event["status"]), end_time=deadline, message=event.get("message"))

    def _continue(
        self, context: Context, state: BatchState, outcome: str, *, end_time: float, message: Any
    ) -> list[list[str]]:
        context["ti"].xcom_push(key=XCOM_PREDICTION_IDS, value=list(state.prediction_ids))
        if outcome == "error":
            created = [pid for pid in state.prediction_ids if pid]
            text = f"The batch stopped: {message}"
            if created:
                raise CometFluxBatchFailedError(f"{text} ({len(created)} predictions were created; see XCom)")
            raise CometAPIError(text)
        if not state.done:
            self._defer(context, state, end_time=end_time)
        context["ti"].xcom_push(key=XCOM_RESULTS, value=[])  # not None: Airflow 3.0 refuses a null XCom
        return self._finish(context, state)

    def _defer(self, context: Context, state: BatchState, *, end_time: float) -> None:
        from airflow_provider_cometflux.triggers.batch import CometFluxBatchTrigger

        creating = bool(state.to_create) or any(
            prompt is not None and state.results[i] is None for i, prompt in enumerate(state.prompts)
        )
        watching = [pid if state.results[i] is None else None for i, pid in enumerate(state.prediction_ids)]
        remaining = max(0.0, end_time - time.time())
        self.log.info(
            "Deferring: %d prompts to create, %d predictions running.",
            len(state.to_create),
            sum(pid is not None for pid in watching),
        )
        context["ti"].xcom_push(key=XCOM_RESULTS, value=list(state.results))
        self.defer(
            trigger=CometFluxBatchTrigger(
                prediction_ids=watching,
                cometapi_conn_id=self.cometapi_conn_id,
                poll_interval=self.poll_interval,
                end_time=end_time,
                polls_per_minute=self.polls_per_minute,
                max_concurrency=self.max_concurrency,
                model=self.model if creating else None,
                input=self.input if creating else None,
                prompts=[p if state.results[i] is None else None for i, p in enumerate(state.prompts)]
                if creating
                else None,
                creates_per_minute=self.creates_per_minute,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=remaining + DEFER_GRACE),
        )

    def _run_inline(
        self,
        context: Context,
        state: BatchState,
        *,
        end_time: float,
        stop_at: float | None = None,
        until_submitted: bool = False,
    ) -> str:
        """Run the batch engine in the worker, saving created ids to the task state store as it goes."""
        import asyncio

        from airflow_provider_cometflux.triggers.batch import BatchRun

        self._inline_state = state
        saved = [time.monotonic()]

        def created(index: int, prediction_id: str) -> None:
            if time.monotonic() - saved[0] >= PROGRESS_EVERY:
                saved[0] = time.monotonic()
                self._save(context, state)

        async def run() -> tuple[str, str]:
            engine = BatchRun(
                self.hook,
                state,
                model=self.model,
                input=self.input,
                end_time=end_time,
                poll_interval=self.poll_interval,
                creates_per_minute=self.creates_per_minute,
                polls_per_minute=self.polls_per_minute,
                max_concurrency=self.max_concurrency,
                stop_at=stop_at,
                stop_when_submitted=until_submitted,
                on_created=created,
            )
            try:
                outcome = await engine.run()
            finally:
                await self.hook.aclose()
            self.log.info("In the worker: %s", ", ".join(f"{k} {v}" for k, v in engine.stats.items()))
            return outcome, engine.message

        outcome, message = asyncio.run(run())
        self._inline_state = None
        if outcome == "error":
            self._save(context, state)
            self._continue(context, state, outcome, end_time=end_time, message=message)
        return outcome

    # -- state across attempts -------------------------------------------------------------------------------

    def _reattach(self, context: Context, state: BatchState, prompts: list[str]) -> None:
        """Watch the predictions an earlier attempt of this task created for the same batch."""
        store = context.get("task_state_store")
        self._request = self._request_key(prompts)
        if store is None:
            if context["ti"].try_number > 1:
                self.log.info("This Airflow has no task state store (3.3+): a retry creates every prediction anew.")
            return
        saved = store.get(STATE_KEY)
        if not isinstance(saved, dict) or saved.get("request") != self._request:
            return
        ids = saved.get("prediction_ids")
        if not isinstance(ids, list) or len(ids) != len(prompts):
            return
        state.prediction_ids = [pid if isinstance(pid, str) and pid else None for pid in ids]
        count = sum(pid is not None for pid in state.prediction_ids)
        self.log.info("Reattaching to %d predictions of an earlier attempt: they are not created again.", count)

    def _save(self, context: Context, state: BatchState) -> None:
        store = context.get("task_state_store")
        if store is None or not any(state.prediction_ids):
            return
        request = getattr(self, "_request", None) or self._request_key(self._prompt_list())
        store.set(STATE_KEY, {"request": request, "prediction_ids": list(state.prediction_ids)})

    # -- the end ---------------------------------------------------------------------------------------------

    def _finish(self, context: Context, state: BatchState) -> list[list[str]]:
        prompts = self._prompt_list()
        outputs: list[list[str]] = [[] for _ in prompts]
        failures: list[dict[str, Any]] = []
        succeeded: dict[int, Any] = {}
        for index, event in enumerate(state.results):
            try:
                succeeded[index] = prediction_from_event(event)
            except CometAPIError as exc:
                failures.append(_failure(index, prompts, state, event, exc))
        if self.output_path is None or self.output_path == "":
            for index, prediction in succeeded.items():
                outputs[index] = prediction.output_urls
        else:
            images = self._store(succeeded, outputs, failures, prompts, state)
            context["ti"].xcom_push(key=XCOM_IMAGES, value=images)
        failures.sort(key=lambda failure: failure["index"])
        context["ti"].xcom_push(key=XCOM_FAILURES, value=failures)
        done = len(prompts) - len(failures)
        self.log.info("Batch done: %d of %d prompts succeeded, %d images.", done, len(prompts), _count(outputs))
        if failures:
            summary = _summary(failures, len(prompts))
            if self.fail_on_error:
                context["ti"].xcom_push(key="return_value", value=outputs)
                raise CometFluxBatchFailedError(summary)
            self.log.warning("%s", summary)
        return outputs

    def _store(
        self,
        succeeded: dict[int, Any],
        outputs: list[list[str]],
        failures: list[dict[str, Any]],
        prompts: list[str],
        state: BatchState,
    ) -> list[list[dict[str, Any]]]:
        """Copy every succeeded prompt's images to ``output_path``, a few prompts at a time."""
        from concurrent.futures import ThreadPoolExecutor

        from airflow_provider_cometflux.storage import images_metadata, store_outputs

        assert self.output_path is not None
        output_path = self.output_path
        output_format = self.input.get("output_format") if isinstance(self.input, Mapping) else None
        images: list[list[dict[str, Any]]] = [[] for _ in prompts]

        def store(index: int) -> None:
            prediction = succeeded[index]
            try:
                stored = store_outputs(
                    self.hook, prediction.output_urls, output_path, prediction.id, output_format=output_format
                )
            except CometAPIError as exc:
                failures.append(_failure(index, prompts, state, state.results[index], exc, status="storage"))
                return
            outputs[index] = [image.uri for image in stored]
            images[index] = images_metadata(stored)

        with ThreadPoolExecutor(max_workers=self.download_concurrency, thread_name_prefix="cometflux-store") as pool:
            list(pool.map(store, sorted(succeeded)))
        return images

    def on_kill(self) -> None:
        """Cancel (best effort) the predictions still running when the task is killed while waiting in the worker."""
        state = self._inline_state
        if state is None:
            return
        ids = [pid for pid in (state.prediction_ids[i] for i in state.in_flight) if pid]
        self.log.info("Task killed: cancelling %d predictions.", len(ids))
        for pid in ids:
            self.hook.cancel_prediction(pid)


def _failure(
    index: int,
    prompts: list[str],
    state: BatchState,
    event: dict[str, Any] | None,
    exc: CometAPIError,
    *,
    status: str | None = None,
) -> dict[str, Any]:
    return {
        "index": index,
        "prompt": prompts[index],
        "prediction_id": state.prediction_ids[index] or exc.prediction_id or None,
        "status": status or (event or {}).get("status") or "error",
        "message": exc.message,
    }


def _summary(failures: list[dict[str, Any]], total: int) -> str:
    lines = [
        f"#{f['index']} {f['prompt'][:60]!r} ({f['status']}, prediction {f['prediction_id']}): {f['message']}"
        for f in failures[:FAILURES_LISTED]
    ]
    more = f"\n... and {len(failures) - FAILURES_LISTED} more" if len(failures) > FAILURES_LISTED else ""
    return (
        f"{len(failures)} of {total} prompts failed (the others' images are in XCom 'return_value'; "
        f"every failure is in XCom '{XCOM_FAILURES}'):\n" + "\n".join(lines) + more
    )


def _count(outputs: list[list[str]]) -> int:
    return sum(len(urls) for urls in outputs)
