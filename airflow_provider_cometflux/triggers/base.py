"""What both triggers share: they watch predictions by id, and cancel them only when a user killed the task.

A trigger never creates anything and holds ids and numbers only: Airflow may run it twice (a triggerer dies or
hands it on), and running it again only watches again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Sequence
from typing import Any

from airflow.triggers.base import BaseTrigger

from airflow_provider_cometflux.exceptions import CometAPIError
from airflow_provider_cometflux.models import Prediction

log = logging.getLogger(__name__)

#: Seconds the cancel of a killed task may take, state check and retries included.
ON_KILL_TIMEOUT = 30.0
#: Cancels sent at once when a killed task watched many predictions.
CANCEL_CONCURRENCY = 16

# Cancels still running after ``on_kill`` itself was cancelled; kept here so they are not garbage collected.
_CANCELLING: set[asyncio.Future[None]] = set()


class PredictionsTrigger(BaseTrigger):
    """
    A trigger watching predictions of one connection; subclasses say which (:meth:`watched_ids`, :meth:`ids`).

    :param cometapi_conn_id: the Airflow connection (type ``cometapi``) to read them with.
    :param poll_interval: the steady delay between polls of one prediction, in seconds.
    :param end_time: epoch seconds after which a prediction still running gets a ``timeout`` event.
    :param max_consecutive_errors: polls of one prediction that may fail transiently in a row.
    """

    def __init__(
        self, cometapi_conn_id: str, poll_interval: float, end_time: float | None, max_consecutive_errors: int
    ) -> None:
        super().__init__()
        self.cometapi_conn_id = cometapi_conn_id
        self.poll_interval = float(poll_interval)
        self.end_time = None if end_time is None else float(end_time)
        self.max_consecutive_errors = int(max_consecutive_errors)

    def ids(self) -> dict[str, Any]:
        """The trigger's own keyword arguments: the prediction id(s) it watches."""
        raise NotImplementedError

    def watched_ids(self) -> Sequence[str]:
        """The predictions this trigger watches."""
        raise NotImplementedError

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Ids and numbers only, never a secret: the key is read from the connection in the triggerer."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                **self.ids(),
                "cometapi_conn_id": self.cometapi_conn_id,
                "poll_interval": self.poll_interval,
                "end_time": self.end_time,
                "max_consecutive_errors": self.max_consecutive_errors,
            },
        )

    def watch(self, prediction_ids: Sequence[str | None]) -> Coroutine[Any, Any, list[dict[str, Any] | None]]:
        """Every prediction's event, through the event loop's shared poller (``None`` where the id is ``None``)."""
        from airflow_provider_cometflux.watching.watch import watch_events

        return watch_events(
            self.cometapi_conn_id,
            prediction_ids,
            poll_interval=self.poll_interval,
            end_time=self.end_time,
            max_consecutive_errors=self.max_consecutive_errors,
        )

    def watch_one(self, prediction_id: str) -> Coroutine[Any, Any, dict[str, Any]]:
        """
        One prediction's event, through the event loop's shared poller.

        Like :meth:`watch`, it returns the watching coroutine itself rather than awaiting it in a frame of its own:
        a triggerer holds thousands of these waits at once, and every full garbage collection walks each frame.
        """
        from airflow_provider_cometflux.watching.watch import watch_event

        return watch_event(
            self.cometapi_conn_id,
            prediction_id,
            poll_interval=self.poll_interval,
            end_time=self.end_time,
            max_consecutive_errors=self.max_consecutive_errors,
        )

    async def on_kill(self) -> None:
        """
        Cancel the predictions when a user kills the deferred task (Airflow 3.3+; not on triggerer restarts).

        Airflow 3.3 also calls this on a triggerer that stalled past its health check and finds, on waking, that
        its triggers were handed to another triggerer. The task is then still deferred, waiting on these
        predictions through the other triggerer, so nothing is cancelled. Predictions that have already ended are
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
            log.warning("Could not cancel predictions %s: %r", list(self.watched_ids())[:5], work.exception())

    async def _cancel_unless_moved(self) -> None:
        ids = list(self.watched_ids())
        if not ids:
            return
        if await self._task_still_deferred():
            log.info("The trigger moved to another triggerer; %d predictions keep running.", len(ids))
            return
        from airflow_provider_cometflux.hooks.cometapi import CometAPIHook

        hook = CometAPIHook(self.cometapi_conn_id)
        limit = asyncio.Semaphore(CANCEL_CONCURRENCY)

        async def cancel(pid: str) -> None:
            async with limit:
                with contextlib.suppress(CometAPIError):  # unknown: cancel anyway
                    prediction = Prediction(await hook.aget_prediction(pid, timeout=10))
                    if prediction.is_terminal:
                        log.info("Prediction %s is already %s: nothing to cancel.", pid, prediction.status)
                        return
                await hook.acancel_prediction(pid)

        try:
            await asyncio.gather(*(cancel(pid) for pid in ids))
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
            log.warning("Could not read the state of the trigger's task; treating the kill as a user's.", exc_info=True)
            return False
        return str(getattr(state, "value", state)) == "deferred"
