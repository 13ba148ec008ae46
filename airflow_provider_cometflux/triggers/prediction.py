"""The deferrable half: poll a prediction from the triggerer until it is done."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_cometflux.events import make_event
from airflow_provider_cometflux.exceptions import CometAPIError
from airflow_provider_cometflux.models import Prediction, note_status
from airflow_provider_cometflux.retries import poll_delays

log = logging.getLogger(__name__)

#: How long at most a trigger waits before its first poll; spreads a thousand triggers started together.
FIRST_POLL_SPREAD = 0.25


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
        max_consecutive_errors: int = 5,
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
        started = time.time()
        await asyncio.sleep(random.uniform(0, min(FIRST_POLL_SPREAD, self.poll_interval)))
        while True:
            if self.end_time is not None and time.time() >= self.end_time:
                yield TriggerEvent(
                    make_event(
                        "timeout",
                        self.prediction_id,
                        message=f"Prediction {self.prediction_id} did not finish: gave up after "
                        f"{time.time() - started:.0f}s in the triggerer; last status '{last_status}'.",
                    )
                )
                return
            try:
                prediction = Prediction(await hook.aget_prediction(self.prediction_id))
            except CometAPIError as exc:
                errors += 1
                if not exc.transient or errors >= self.max_consecutive_errors:
                    yield TriggerEvent(make_event("error", self.prediction_id, message=_error_text(exc, errors)))
                    return
                log.warning("Polling prediction %s failed (%d in a row): %s", self.prediction_id, errors, exc)
            except Exception as exc:  # anything else (a bug, a bad connection): fail the task, clearly
                log.exception("Polling prediction %s failed unexpectedly.", self.prediction_id)
                yield TriggerEvent(make_event("error", self.prediction_id, message=_error_text(exc, 1)))
                return
            else:
                errors = 0
                last_status = prediction.status
                if prediction.is_terminal:
                    yield TriggerEvent(make_event(prediction.status, self.prediction_id, prediction=prediction))
                    return
                note_status(prediction)
            delay = next(delays)
            if self.end_time is not None:
                delay = max(0.0, min(delay, self.end_time - time.time()))
            await asyncio.sleep(delay)

    async def on_kill(self) -> None:
        """Cancel the prediction when a user kills the deferred task (Airflow 3.3+; not on triggerer restarts)."""
        hook = self._hook()
        try:
            await hook.acancel_prediction(self.prediction_id)
        finally:
            await hook.aclose()


def _error_text(exc: BaseException, errors: int) -> str:
    tail = f" ({errors} polls in a row failed)" if errors > 1 else ""
    return f"{exc}{tail}"
