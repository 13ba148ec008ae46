"""Watching predictions by id, as events: what the triggers and the worker's inline waits both run.

The polling itself is the shared poller's (:func:`~airflow_provider_cometflux.watching.poller.watch_prediction`:
one request budget per event loop and connection); this module turns what it returns or raises into the events of
:mod:`~airflow_provider_cometflux.events`, for one prediction or many.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from airflow_provider_cometflux.events import error_event, prediction_event, timeout_event
from airflow_provider_cometflux.exceptions import CometAPIConnectionConfigError, CometAPIError, PredictionTimeoutError
from airflow_provider_cometflux.pacing import MAX_CONSECUTIVE_POLL_ERRORS

log = logging.getLogger(__name__)


async def watch_event(
    cometapi_conn_id: str,
    prediction_id: str,
    *,
    poll_interval: float,
    end_time: float | None,
    max_consecutive_errors: int = MAX_CONSECUTIVE_POLL_ERRORS,
) -> dict[str, Any]:
    """
    Watch one prediction until it is terminal, its deadline passes or it cannot be watched; its event.

    :param cometapi_conn_id: the connection to poll with.
    :param prediction_id: the prediction.
    :param poll_interval: the steady delay between its polls, in seconds.
    :param end_time: epoch seconds after which a ``timeout`` event is returned; ``None`` for no deadline.
    :param max_consecutive_errors: transient poll failures in a row that end the wait with an ``error`` event.
    """
    from airflow_provider_cometflux.watching.poller import start_watching

    try:  # watch_prediction's work, in this frame (one coroutine per watched prediction, not two)
        poller, watcher, future = start_watching(
            cometapi_conn_id,
            prediction_id,
            poll_interval=poll_interval,
            end_time=end_time,
            max_consecutive_errors=max_consecutive_errors,
        )
        try:
            prediction = await future
        finally:
            poller.unregister(watcher)
    except PredictionTimeoutError as exc:
        return timeout_event(prediction_id, f"Prediction {prediction_id}: {exc.message}")
    except (CometAPIError, CometAPIConnectionConfigError) as exc:
        return error_event(prediction_id, exc)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a bug or an unexpected answer: fail the task clearly rather than hang
        log.exception("Watching prediction %s failed unexpectedly.", prediction_id)
        return error_event(prediction_id, exc)
    return prediction_event(prediction)


async def watch_events(
    cometapi_conn_id: str,
    prediction_ids: Sequence[str | None],
    *,
    poll_interval: float,
    end_time: float | None,
    max_consecutive_errors: int = MAX_CONSECUTIVE_POLL_ERRORS,
    stop_after: float | None = None,
) -> list[dict[str, Any] | None]:
    """
    Watch many predictions at once; their events in the same order (``None`` where the id is ``None``, or where
    the prediction was still running when ``stop_after`` seconds passed).

    :param stop_after: stop watching after this many seconds (the rest continues elsewhere); ``None``: watch
        every prediction to its event.
    """
    results: list[dict[str, Any] | None] = [None] * len(prediction_ids)
    watched = [index for index, pid in enumerate(prediction_ids) if pid is not None]
    if stop_after is None and len(watched) == 1:  # one trigger, one prediction: no task or wait of its own
        index = watched[0]
        results[index] = await watch_event(
            cometapi_conn_id,
            str(prediction_ids[index]),
            poll_interval=poll_interval,
            end_time=end_time,
            max_consecutive_errors=max_consecutive_errors,
        )
        return results
    # a loop, not a comprehension: a comprehension would make this frame hold its arguments in cells
    tasks: dict[int, asyncio.Task[dict[str, Any]]] = {}
    for index in watched:
        tasks[index] = asyncio.ensure_future(
            watch_event(
                cometapi_conn_id,
                str(prediction_ids[index]),
                poll_interval=poll_interval,
                end_time=end_time,
                max_consecutive_errors=max_consecutive_errors,
            )
        )
    try:
        if tasks:
            await asyncio.wait(set(tasks.values()), timeout=stop_after)
    finally:
        for task in tasks.values():
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
    for index, task in tasks.items():
        if not task.cancelled() and task.exception() is None:
            results[index] = task.result()
    return results
