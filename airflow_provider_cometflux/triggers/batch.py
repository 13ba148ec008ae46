"""The deferrable half of the batch operator: watch many predictions, created by the worker, from one trigger."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from airflow.triggers.base import TriggerEvent

from airflow_provider_cometflux.events import AUTH, CONFIG, ERROR, batch_event
from airflow_provider_cometflux.pacing import MAX_CONSECUTIVE_POLL_ERRORS
from airflow_provider_cometflux.triggers.base import PredictionsTrigger


class CometFluxBatchTrigger(PredictionsTrigger):
    """
    Watches every prediction of a batch and fires one batch event once each has its own event.

    It holds ids and numbers only and creates nothing: the worker created every prediction before deferring, so a
    triggerer that dies and hands this trigger on costs a few polls, never a create. Polls go through the event
    loop's shared poller (one request budget per connection, earliest-due first). The event is
    ``{"status": "complete", "results": [...], "message"}``, the results in prompt order (``None`` where the
    prompt has no prediction), or an ``error`` event when the key or the connection is unusable.

    :param prediction_ids: per prompt, the prediction to watch, or ``None``.
    :param cometapi_conn_id: the Airflow connection (type ``cometapi``).
    :param poll_interval: the steady delay between polls of one prediction, in seconds.
    :param end_time: epoch seconds when the batch gives up (every prediction still running gets a ``timeout``
        event); ``None`` for no deadline.
    :param max_consecutive_errors: polls of one prediction that may fail transiently in a row.
    """

    def __init__(
        self,
        prediction_ids: Sequence[str | None],
        cometapi_conn_id: str = "cometapi_default",
        poll_interval: float = 2.0,
        end_time: float | None = None,
        max_consecutive_errors: int = MAX_CONSECUTIVE_POLL_ERRORS,
    ) -> None:
        super().__init__(cometapi_conn_id, poll_interval, end_time, max_consecutive_errors)
        self.prediction_ids = list(prediction_ids)

    def ids(self) -> dict[str, Any]:
        return {"prediction_ids": list(self.prediction_ids)}

    def watched_ids(self) -> Sequence[str]:
        return [pid for pid in self.prediction_ids if pid]

    async def run(self) -> AsyncIterator[TriggerEvent]:
        results = await self.watch(self.prediction_ids)
        fatal = next(
            (r for r in results if r is not None and r["status"] == ERROR and r.get("error_kind") in (CONFIG, AUTH)),
            None,
        )
        if fatal is not None:  # the same for every prediction: one error for the batch, as in the worker
            yield TriggerEvent({**fatal, "prediction_id": ""})
            return
        yield TriggerEvent(batch_event(results))
