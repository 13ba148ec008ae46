"""The deferrable half of the operator and the sensor: watch one prediction from the triggerer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from airflow.triggers.base import TriggerEvent

from airflow_provider_cometflux.pacing import MAX_CONSECUTIVE_POLL_ERRORS
from airflow_provider_cometflux.triggers.base import PredictionsTrigger


class CometFluxPredictionTrigger(PredictionsTrigger):
    """
    Watches a CometAPI prediction until it reaches a terminal status, then fires one event.

    The event is a prediction event (:mod:`~airflow_provider_cometflux.events`): ``status`` is the prediction's
    terminal status, ``timeout`` past ``end_time``, or ``error`` when it could not be watched. Polls go through
    the event loop's shared poller, which keeps one request budget per connection for every trigger. It
    serialises ids and numbers only, never a secret, and creates nothing: running it twice only watches twice.

    :param prediction_id: the prediction to watch.
    :param cometapi_conn_id: the Airflow connection (type ``cometapi``) to read it with.
    :param poll_interval: the steady delay between polls, in seconds (the first polls come sooner).
    :param end_time: epoch seconds after which a ``timeout`` event fires; ``None`` for no deadline.
    :param max_consecutive_errors: how many polls in a row may fail transiently before an ``error`` event.
    """

    def __init__(
        self,
        prediction_id: str,
        cometapi_conn_id: str = "cometapi_default",
        poll_interval: float = 2.0,
        end_time: float | None = None,
        max_consecutive_errors: int = MAX_CONSECUTIVE_POLL_ERRORS,
    ) -> None:
        super().__init__(cometapi_conn_id, poll_interval, end_time, max_consecutive_errors)
        self.prediction_id = prediction_id

    def ids(self) -> dict[str, Any]:
        return {"prediction_id": self.prediction_id}

    def watched_ids(self) -> Sequence[str]:
        return [self.prediction_id]

    async def run(self) -> AsyncIterator[TriggerEvent]:
        yield TriggerEvent(await self.watch_one(self.prediction_id))
