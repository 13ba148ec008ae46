"""The deferrable half: poll a prediction from the triggerer until it is done."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_cometflux.events import make_event
from airflow_provider_cometflux.exceptions import CometAPIError
from airflow_provider_cometflux.models import Prediction, note_status
from airflow_provider_cometflux.retries import MAX_CONSECUTIVE_POLL_ERRORS, poll_delays

log = logging.getLogger(__name__)

#: How long at most a trigger waits before its first poll; spreads a thousand triggers started together.
FIRST_POLL_SPREAD = 0.25

#: Seconds the cancel of a killed task may take, state check and retries included.
ON_KILL_TIMEOUT = 30.0

# Cancels still running after ``on_kill`` itself was cancelled; kept here so they are not garbage collected.
_CANCELLING: set[asyncio.Future[None]] = set()


class CometFluxPredictionTrigger(BaseTrigger):
    """
    Polls a CometAPI prediction until it reaches a terminal status, then fires one event.

    The event is ``{"status", "prediction_id", "prediction", "message"}`` where ``status`` is the prediction's
    terminal status (``succeeded``, ``failed``, ``canceled``, ``aborted``), ``timeout`` past ``end_time``, or
    ``error`` when the prediction could not be read. It serialises ids and numbers only, never a secret: the key
    is read from the connection in the triggerer.

    :param prediction_id: the prediction to watch.
    :param cometapi_conn_id: the Airflow connection (type ``cometapi``) to read it with.
    :param poll_interval: the steady delay between polls, in seconds (the first polls come sooner).
    :param end_time: epoch seconds after which a ``timeout`` event fires; ``None`` for no deadline.
    :param max_consecutive_errors: how many polls in a row may fail transiently (after the hook's own
        retries) before an ``error`` event carries the last error.
    """

    def __init__(
        self,
        prediction_id: str,
        cometapi_conn_id: str = "cometapi_default",
        poll_interval: float = 2.0,
        end_time: float | None = None,
        max_consecutive_errors: int = MAX_CONSECUTIVE_POLL_ERRORS,
    ) -> None:
        super().__init__()
        self.prediction_id = prediction_id
        self.cometapi_conn_id = cometapi_conn_id
        self.poll_interval = float(poll_interval)
        self.end_time = None if end_time is None else float(end_time)
        self.max_consecutive_errors = int(max_consecutive_errors)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "prediction_id": self.prediction_id,
                "cometapi_conn_id": self.cometapi_conn_id,
                "poll_interval": self.poll_interval,
                "end_time": self.end_time,
                "max_consecutive_errors": self.max_consecutive_errors,
            },
        )

    def _hook(self) -> Any:
        from airflow_provider_cometflux.hooks.cometapi import CometAPIHook

        return CometAPIHook(self.cometapi_conn_id)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = self._hook()
        try:
            async for event in self._poll(hook):
                yield event
        finally:
            await hook.aclose()

    async def _poll(self, hook: Any) -> AsyncIterator[TriggerEvent]:
        delays = poll_delays(self.poll_interval)
        errors = 0
        last_status = "unknown"
        last_error: BaseException | None = None
        started = time.time()
        await asyncio.sleep(random.uniform(0, min(FIRST_POLL_SPREAD, self.poll_interval)))
        while True:
            remaining = None if self.end_time is None else self.end_time - time.time()
            if remaining is not None and remaining <= 0:
                yield TriggerEvent(
                    make_event(
                        "timeout", self.prediction_id, message=self._timeout_text(started, last_status, last_error)
                    )
                )
                return
            try:
                # a slow answer is normal; the deadline still bounds it, retries included
                prediction = Prediction(await hook.aget_prediction(self.prediction_id, timeout=remaining))
            except CometAPIError as exc:
                if self.end_time is not None and time.time() >= self.end_time:
                    last_error = exc
                    continue  # the deadline cut this poll short: a timeout, not an error
                errors, last_error = errors + 1, exc
                if not exc.transient or errors >= self.max_consecutive_errors:
                    yield TriggerEvent(make_event("error", self.prediction_id, message=_error_text(exc, errors)))
                    return
                log.warning("Polling prediction %s failed (%d in a row): %s", self.prediction_id, errors, exc)
            except Exception as exc:  # anything else (a bug, a bad connection): fail the task, clearly
                log.exception("Polling prediction %s failed unexpectedly.", self.prediction_id)
                yield TriggerEvent(make_event("error", self.prediction_id, message=_error_text(exc, 1)))
                return
            else:
                errors, last_error = 0, None
                last_status = prediction.status
                if prediction.is_terminal:
                    yield TriggerEvent(make_event(prediction.status, self.prediction_id, prediction=prediction))
                    return
                note_status(prediction)
            delay = next(delays)
            if self.end_time is not None:
                delay = max(0.0, min(delay, self.end_time - time.time()))
            await asyncio.sleep(delay)

    def _timeout_text(self, started: float, last_status: str, last_error: BaseException | None) -> str:
        text = (
            f"Prediction {self.prediction_id} did not finish: gave up after {time.time() - started:.0f}s in the "
            f"triggerer; last status '{last_status}'"
        )
        return text + (f"; the last poll failed: {last_error}." if last_error is not None else ".")

    async def on_kill(self) -> None:
        """
        Cancel the prediction when a user kills the deferred task (Airflow 3.3+; not on triggerer restarts).

        Airflow 3.3 also calls this on a triggerer that stalled past its health check and finds, on waking, that
        its triggers were handed to another triggerer. The task is then still deferred, waiting on this
        prediction through the other triggerer, so nothing is cancelled. A prediction that has already ended is
        left alone too.

        The triggerer may cancel ``on_kill`` itself before it is done (it repeats its cancel request at each
        state sync), so the work runs shielded, to its end, bounded by :data:`ON_KILL_TIMEOUT`.
        """
        work = asyncio.ensure_future(asyncio.wait_for(self._cancel_unless_moved(), ON_KILL_TIMEOUT))
        _CANCELLING.add(work)
        work.add_done_callback(self._cancel_done)
        await asyncio.shield(work)

    def _cancel_done(self, work: asyncio.Future[None]) -> None:
        _CANCELLING.discard(work)
        if not work.cancelled() and work.exception() is not None:
            log.warning("Could not cancel prediction %s: %r", self.prediction_id, work.exception())

    async def _cancel_unless_moved(self) -> None:
        if await self._task_still_deferred():
            log.info(
                "The trigger for prediction %s moved to another triggerer; the prediction keeps running.",
                self.prediction_id,
            )
            return
        hook = self._hook()
        try:
            with contextlib.suppress(CometAPIError):  # unknown: cancel anyway
                prediction = Prediction(await hook.aget_prediction(self.prediction_id, timeout=10))
                if prediction.is_terminal:
                    log.info("Prediction %s is already %s: nothing to cancel.", self.prediction_id, prediction.status)
                    return
            await hook.acancel_prediction(self.prediction_id)
        finally:
            await hook.aclose()

    async def _task_still_deferred(self) -> bool:
        """Whether this trigger's task instance is (still, or again) deferred; ``False`` when unknown."""
        ti = getattr(self, "task_instance", None)
        if ti is None:
            return False
        try:
            from airflow.sdk.execution_time import task_runner
            from airflow.sdk.execution_time.comms import GetTaskStates

            comms = getattr(task_runner, "SUPERVISOR_COMMS", None)
            if comms is None:
                return False
            map_index = getattr(ti, "map_index", -1)
            answer = await comms.asend(
                GetTaskStates(dag_id=ti.dag_id, task_ids=[ti.task_id], run_ids=[ti.run_id], map_index=map_index)
            )
            states = getattr(answer, "task_states", None) or {}
            key = ti.task_id if map_index is None or map_index < 0 else f"{ti.task_id}_{map_index}"
            state = (states.get(ti.run_id) or {}).get(key)
        except Exception:  # an older Airflow, or no answer: behave as documented, and cancel
            log.warning(
                "Could not read the state of the task of prediction %s; treating the kill as a user's.",
                self.prediction_id,
                exc_info=True,
            )
            return False
        return str(getattr(state, "value", state)) == "deferred"


def _error_text(exc: BaseException, errors: int) -> str:
    """What went wrong, for the event: the service's message and status (the task adds the prediction id)."""
    if isinstance(exc, CometAPIError):
        where = [f"HTTP {exc.http_status}"] if exc.http_status is not None else []
        where += [f"code {exc.error_code}"] if exc.error_code else []
        text = f"{exc.message} ({', '.join(where)})" if where else exc.message
    else:
        text = f"{type(exc).__name__}: {exc}"
    tail = f" ({errors} polls in a row failed)" if errors > 1 else ""
    return f"{text}{tail}"
