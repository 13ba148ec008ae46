"""Batches: create many predictions at a steady rate and watch them all from one trigger.

:class:`BatchRun` is the asynchronous engine. :class:`CometFluxBatchTrigger` runs it in the triggerer, and the
batch operator runs the same engine in the worker (``deferrable=False``, or for its first ``defer_after``
seconds), so a batch behaves the same wherever it waits.

Every request is paced, so that one batch neither trips the service's rate limits nor crowds the triggerer's
shared connection pool:

* creates are spaced evenly at ``creates_per_minute`` and never more than that many start within a minute; a
  429 pauses all of them for its ``Retry-After`` and slows the pace until a minute passes without one;
* status polls are at most ``polls_per_minute``, earliest-due first, and at most ``max_concurrency`` requests
  (creates and polls together) are open at once;
* each prediction is polled quickly at first, then every ``poll_interval``; once a few predictions have finished,
  the others are not polled before most of the shortest typical run time has passed, which saves requests
  per image on slow models without delaying fast ones. Run times come from the service's own ``created_at`` and
  ``completed_at``; the offset between its clock and ours is learnt from predictions seen both running and done.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import logging
import math
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_cometflux.events import ERROR, TIMEOUT, make_event
from airflow_provider_cometflux.exceptions import CometAPIAuthError, CometAPIConnectionConfigError, CometAPIError
from airflow_provider_cometflux.models import (
    FAILED_STATUSES,
    Prediction,
    build_input,
    check_prediction_id,
    note_status,
)
from airflow_provider_cometflux.retries import poll_delays

log = logging.getLogger(__name__)

#: Replicate allows 600 creates per minute.
DEFAULT_CREATES_PER_MINUTE = 600.0
#: Replicate allows 3000 other requests per minute; a batch keeps a fifth of that free for everything else.
DEFAULT_POLLS_PER_MINUTE = 2400.0
#: Requests one batch keeps open at most (the triggerer's shared pool holds 256 connections).
DEFAULT_MAX_CONCURRENCY = 64
#: How long at most the first polls of already created predictions are spread.
FIRST_POLL_SPREAD = 0.25
#: Finished predictions needed before the typical run time is used to skip early polls.
LEARN_AFTER = 5
#: A prediction is first polled after this fraction of the 10th-percentile run time (once learned).
SKIP_FRACTION = 0.8
#: Seconds granted to creates still in flight, and to best-effort cancels, when a batch stops.
SETTLE_SECONDS = 30.0

#: Batch outcomes (the ``status`` of a batch event).
COMPLETE = "complete"
SUBMITTED = "submitted"
PAUSED = "paused"


@dataclass
class BatchState:
    """
    Where a batch stands. Every list is in prompt order.

    A prompt with a prediction id whose prompt is still set was created by an earlier attempt of the task: it is
    watched, and created anew only if it ended ``failed``, ``canceled`` or ``aborted``.

    :param prompts: the prompts still to create (``None`` once created or given up on).
    :param prediction_ids: each prompt's prediction id, once it is created.
    :param results: each prompt's final event (see :func:`~airflow_provider_cometflux.events.make_event`).
    """

    prompts: list[str | None]
    prediction_ids: list[str | None]
    results: list[dict[str, Any] | None]

    @classmethod
    def new(cls, prompts: Sequence[str]) -> BatchState:
        """
        :param prompts: the batch's prompts, none of them created yet.
        """
        count = len(prompts)
        return cls(list(prompts), [None] * count, [None] * count)

    @property
    def to_create(self) -> list[int]:
        """Positions of the prompts not created yet."""
        return [
            i
            for i, p in enumerate(self.prompts)
            if p is not None and self.prediction_ids[i] is None and self.results[i] is None
        ]

    @property
    def in_flight(self) -> list[int]:
        """Positions of the created predictions without a final event yet."""
        return [i for i, pid in enumerate(self.prediction_ids) if pid is not None and self.results[i] is None]

    @property
    def done(self) -> bool:
        """Whether every prompt has its final event."""
        return all(result is not None for result in self.results)

    def merge(self, prediction_ids: Sequence[str | None], results: Sequence[dict[str, Any] | None]) -> None:
        """
        Take in what a later phase learnt; ``None`` entries leave what is known.

        :param prediction_ids: ids in prompt order.
        :param results: final events in prompt order.
        """
        for i, pid in enumerate(prediction_ids):
            if pid is not None and pid != self.prediction_ids[i]:
                self.prediction_ids[i] = pid
                self.prompts[i] = None
        for i, result in enumerate(results):
            if result is not None:
                self.results[i] = result
                self.prompts[i] = None


class Pacer:
    """
    Spaces calls evenly at ``per_minute``, never lets more than ``per_minute`` start within ``window`` seconds,
    and holds calls back during a pause (after a 429). One coroutine waits on it at a time.

    :param per_minute: the steady rate.
    :param window: the length of the service's rate-limit window, in seconds.
    :param clock: monotonic seconds (default: the running event loop's clock).
    :param sleep: how to wait (default ``asyncio.sleep``).
    """

    def __init__(
        self,
        per_minute: float,
        *,
        window: float = 60.0,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[Any]] | None = None,
    ) -> None:
        if isinstance(per_minute, bool) or not per_minute > 0:
            raise ValueError(f"per_minute must be above 0, not {per_minute!r}")
        self._clock = clock or (lambda: asyncio.get_running_loop().time())
        self._sleep = sleep or asyncio.sleep
        self.base_interval = window / per_minute
        self.interval = self.base_interval
        self.window = window
        self.rate_limited = 0
        self._next = -math.inf
        self._paused_until = -math.inf
        self._last_limited = -math.inf
        self._starts: deque[float] = deque(maxlen=max(1, int(per_minute)))
        self._latency = 0.0

    async def wait(self) -> None:
        """Return when the next call may start."""
        while True:
            now = self._clock()
            slot = max(now, self._next, self._paused_until)
            if len(self._starts) == self._starts.maxlen:
                # the call that many starts ago must have been answered a full window before this one starts
                slot = max(slot, self._starts[0] + self.window + self._latency)
            if slot <= now:
                break
            await self._sleep(slot - now)
        self._next = max(slot + self.interval, now)
        self._starts.append(now)

    def answered(self, latency: float) -> None:
        """
        Note a call that went through, and how long its answer took.

        :param latency: seconds from the start of the call to its answer.
        """
        self._latency = max(min(latency, 5.0), self._latency * 0.98)
        now = self._clock()
        if self.interval > self.base_interval and now - self._last_limited > self.window:
            self.interval = self.base_interval

    def limited(self, delay: float) -> None:
        """
        Note a 429: pause every call for ``delay`` seconds and, once per pause, slow the pace by a quarter.

        :param delay: how long the service asked to wait (its ``Retry-After``, with jitter).
        """
        now = self._clock()
        self.rate_limited += 1
        if now >= self._paused_until:
            self.interval = min(self.interval * 1.25, self.base_interval * 8)
        self._paused_until = max(self._paused_until, now + delay)
        self._last_limited = now


@dataclass
class _Watch:
    """Polling state of one created prediction."""

    delays: Iterator[float]
    created: float | None = None  # the service's created_at (epoch seconds), once read
    running_seen: bool = False  # seen in flight, so its completion is recent when it is seen done
    errors: int = 0


def _epoch(value: object) -> float | None:
    """An ISO 8601 timestamp of the service (``2024-05-01T12:00:00.123456Z``) as epoch seconds, if readable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass
class BatchRun:
    """
    Create the prompts still to create and watch every prediction in flight until each has a final event.

    :param hook: a ``CometAPIHook``; the caller closes it (``await hook.aclose()``).
    :param state: the batch; updated in place.
    :param model: the model id (needed only when there are prompts to create).
    :param input: the model inputs shared by every prompt.
    :param end_time: epoch seconds; then in-flight predictions are cancelled (best effort) and every prompt without
        a final event gets a ``timeout`` one.
    :param poll_interval: the steady delay between polls of one prediction, in seconds.
    :param creates_per_minute: the create pace.
    :param polls_per_minute: the most status polls per minute.
    :param max_concurrency: the most requests open at once.
    :param max_consecutive_errors: polls of one prediction that may fail transiently in a row.
    :param stop_at: epoch seconds at which to stop and return :data:`PAUSED` (the rest continues elsewhere).
    :param stop_when_submitted: return :data:`SUBMITTED` once every prompt is created, if some are still running.
    :param on_created: called with the position and id of each prediction as soon as it is created.
    """

    hook: Any
    state: BatchState
    model: str | None = None
    input: Mapping[str, Any] | None = None
    end_time: float | None = None
    poll_interval: float = 2.0
    creates_per_minute: float = DEFAULT_CREATES_PER_MINUTE
    polls_per_minute: float = DEFAULT_POLLS_PER_MINUTE
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    max_consecutive_errors: int = 5
    stop_at: float | None = None
    stop_when_submitted: bool = False
    on_created: Callable[[int, str], None] | None = None
    message: str = ""
    stats: dict[str, int] = field(default_factory=lambda: {"creates": 0, "polls": 0, "rate_limited": 0})

    def __post_init__(self) -> None:
        self._heap: list[tuple[float, int, int]] = []
        self._seq = 0
        self._watches: dict[int, _Watch] = {}
        self._durations: list[float] = []  # run times of succeeded predictions, sorted (service clock)
        self._offset = math.inf  # our clock minus the service's, plus the least detection delay seen
        self._queue: deque[int] = deque()
        self._submitter: asyncio.Task[None] | None = None
        self._creates: set[asyncio.Task[None]] = set()
        self._polls: set[asyncio.Task[None]] = set()
        self._fatal: BaseException | None = None
        self._create_pacer = Pacer(self.creates_per_minute)
        self._poll_pacer = Pacer(self.polls_per_minute)

    # -- the main loop ---------------------------------------------------------------------------------------

    async def run(self) -> str:
        """
        :return: :data:`COMPLETE` (every prompt has a final event), :data:`SUBMITTED`, :data:`PAUSED` or
            :data:`~airflow_provider_cometflux.events.ERROR` (the key or connection is unusable; see ``message``).
        """
        loop = self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        # one request first (it reads the connection), then up to ``max_concurrency`` at once
        self._sem = asyncio.Semaphore(1)
        self._opened = False
        spread = min(FIRST_POLL_SPREAD, self.poll_interval)
        for i in self.state.in_flight:
            self._watch(i, loop.time() + random.uniform(0, spread))
        self._queue.extend(self.state.to_create)
        self._start_submitter()
        try:
            return await self._schedule()
        finally:
            tasks = (self._submitter, *self._creates, *self._polls)
            pending = [t for t in tasks if t is not None and not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
            self.stats["rate_limited"] = self._create_pacer.rate_limited

    async def _schedule(self) -> str:
        loop = self._loop
        while True:
            self._wake.clear()
            creating = bool(self._queue) or bool(self._creates)
            if self._fatal is not None:
                await self._stop(settle=False)
                self.message = str(self._fatal)
                return ERROR
            wall = time.time()
            if self.end_time is not None and wall >= self.end_time:
                await self._time_out()
                return COMPLETE
            if self.stop_at is not None and wall >= self.stop_at:
                await self._stop()
                return COMPLETE if self.state.done else PAUSED
            if not creating and not self._heap and not self._polls:
                return COMPLETE
            if not creating and self.stop_when_submitted and not self._reattached_in_flight():
                await self._stop()
                return COMPLETE if self.state.done else SUBMITTED
            now = loop.time()
            if self._heap and self._heap[0][0] <= now and not self._sem.locked():
                await self._poll_pacer.wait()
                await self._sem.acquire()
                _, _, index = heapq.heappop(self._heap)
                self._polls.add(self._spawn(self._poll(index)))
                continue
            wake_at = now + 1.0
            if self._heap and not self._sem.locked():
                wake_at = min(wake_at, self._heap[0][0])
            for limit in (self.end_time, self.stop_at):
                if limit is not None:
                    wake_at = min(wake_at, now + (limit - wall))
            await self._sleep_until(wake_at)

    async def _sleep_until(self, when: float) -> None:
        """Sleep until ``when`` (loop time), or until something changes (``self._wake``)."""
        delay = when - self._loop.time()
        if delay <= 0:
            return
        handle = self._loop.call_later(delay, self._wake.set)
        try:
            await self._wake.wait()
        finally:
            handle.cancel()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = self._loop.create_task(coro)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._creates.discard(task)
        self._polls.discard(task)
        self._wake.set()

    # -- creating --------------------------------------------------------------------------------------------

    def _reattached_in_flight(self) -> bool:
        """Whether a prediction of an earlier attempt is still running (it may need creating anew)."""
        return any(self.state.prompts[i] is not None for i in self._watches)

    def _start_submitter(self) -> None:
        if self._queue and (self._submitter is None or self._submitter.done()):
            self._submitter = self._loop.create_task(self._submit())

    async def _submit(self) -> None:
        while self._queue:
            await self._create_pacer.wait()
            await self._sem.acquire()
            self._creates.add(self._spawn(self._create(self._queue.popleft())))

    async def _create(self, index: int) -> None:
        prompt = self.state.prompts[index]
        started = self._loop.time()
        try:
            if self.model is None or prompt is None:
                raise ValueError("a prompt to create needs a model and a prompt")
            self.stats["creates"] += 1
            raw = await self.hook.acreate_prediction(
                self.model, build_input(prompt, self.input), on_retry=self._create_retried
            )
            prediction = Prediction(raw)
            pid = check_prediction_id(prediction.id)
        except asyncio.CancelledError:
            # stopped while the create was on its way: it may have been created, so it is never sent again
            self._give_up(
                index,
                f"Prompt {index}: the batch stopped before the create was answered; a prediction may exist and "
                "was not resubmitted (check your CometAPI dashboard).",
            )
            raise
        except (CometAPIAuthError, CometAPIConnectionConfigError) as exc:
            self._fatal = exc
            self._give_up(index, f"Prompt {index} was not created: {exc}")
        except CometAPIError as exc:
            self._give_up(index, f"Prompt {index} was not created: {exc}")
        except Exception as exc:
            log.exception("Creating the prediction of prompt %d failed unexpectedly.", index)
            self._give_up(index, f"Prompt {index} was not created: {type(exc).__name__}: {exc}")
        else:
            now = self._loop.time()
            self._create_pacer.answered(now - started)
            self.state.prediction_ids[index] = pid
            self.state.prompts[index] = None
            if self.on_created is not None:
                self.on_created(index, pid)
            if prediction.is_terminal:
                self._finish(index, prediction)
            else:
                watch = self._watch(index, now, prediction=prediction)
                self._reschedule(index, watch, now)
        finally:
            self._release()

    def _release(self) -> None:
        self._sem.release()
        if not self._opened:
            self._opened = True
            for _ in range(self.max_concurrency - 1):
                self._sem.release()

    def _create_retried(self, error: CometAPIError, delay: float) -> None:
        if error.http_status == 429:
            self._create_pacer.limited(delay)
            log.warning("The service limits the create rate (429); pausing creates for %.1fs.", delay)

    def _give_up(self, index: int, message: str) -> None:
        self.state.prompts[index] = None
        self.state.results[index] = make_event(ERROR, self.state.prediction_ids[index] or "", message=message)

    # -- watching --------------------------------------------------------------------------------------------

    def _watch(self, index: int, due: float, *, prediction: Prediction | None = None) -> _Watch:
        """Start watching a prediction; one just created (``prediction``) is scheduled by the caller."""
        watch = self._watches[index] = _Watch(delays=poll_delays(self.poll_interval))
        if prediction is None:
            self._push(index, due)
        else:
            self._observe(watch, prediction)
        return watch

    def _observe(self, watch: _Watch, prediction: Prediction) -> None:
        if watch.created is None:
            watch.created = _epoch(prediction.raw.get("created_at"))
        watch.running_seen = True

    def _push(self, index: int, due: float) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, index))
        self._wake.set()

    def _reschedule(self, index: int, watch: _Watch, now: float) -> None:
        self._push(index, self._next_poll(now, next(watch.delays), watch.created))

    def _next_poll(self, now: float, delay: float, created: float | None) -> float:
        """
        The loop time of the next poll: ``delay`` from now, or later when the prediction (created at ``created``,
        service clock) cannot be done yet, judging by the shortest typical run time seen so far.
        """
        due = now + delay
        if created is not None and len(self._durations) >= LEARN_AFTER and self._offset < math.inf:
            typical = self._durations[len(self._durations) // 10]
            earliest = created + SKIP_FRACTION * typical + self._offset  # our clock
            due = max(due, now + earliest - time.time())
        return due

    async def _poll(self, index: int) -> None:
        pid = self.state.prediction_ids[index]
        watch = self._watches[index]
        try:
            assert pid is not None
            self.stats["polls"] += 1
            raw = await self.hook.aget_prediction(pid)
            prediction = Prediction(raw)
        except (CometAPIAuthError, CometAPIConnectionConfigError) as exc:
            self._fatal = exc
            self._push(index, self._loop.time())  # still in flight, for whoever resumes
        except CometAPIError as exc:
            watch.errors += 1
            if not exc.transient or watch.errors >= self.max_consecutive_errors:
                tail = f" ({watch.errors} polls in a row failed)" if watch.errors > 1 else ""
                self.state.results[index] = make_event(ERROR, pid or "", message=f"{exc}{tail}")
                self._watches.pop(index, None)
            else:
                log.warning("Polling prediction %s failed (%d in a row): %s", pid, watch.errors, exc)
                self._push(index, self._loop.time() + next(watch.delays))
        except Exception as exc:
            log.exception("Polling prediction %s failed unexpectedly.", pid)
            self.state.results[index] = make_event(ERROR, pid or "", message=f"{type(exc).__name__}: {exc}")
            self._watches.pop(index, None)
        else:
            watch.errors = 0
            if prediction.is_terminal:
                self._finish(index, prediction)
            else:
                note_status(prediction)
                self._observe(watch, prediction)
                self._reschedule(index, watch, self._loop.time())
        finally:
            self._release()

    def _finish(self, index: int, prediction: Prediction) -> None:
        watch = self._watches.pop(index, None)
        created, completed = _epoch(prediction.raw.get("created_at")), _epoch(prediction.raw.get("completed_at"))
        if prediction.succeeded and created is not None and completed is not None and completed >= created:
            bisect.insort(self._durations, completed - created)
            if watch is not None and watch.running_seen:  # it finished since the last poll: a fair clock sample
                self._offset = min(self._offset, time.time() - completed)
        if self.state.prompts[index] is not None and prediction.status in FAILED_STATUSES:
            log.info(
                "Prediction %s of an earlier attempt ended %s; creating it anew.", prediction.id, prediction.status
            )
            self.state.prediction_ids[index] = None
            self._queue.append(index)
            self._start_submitter()
            return
        self.state.prompts[index] = None
        self.state.results[index] = make_event(prediction.status, prediction.id, prediction=_compact(prediction))

    # -- stopping --------------------------------------------------------------------------------------------

    async def _stop(self, *, settle: bool = True) -> None:
        """Stop creating (letting creates in flight answer, so no prediction goes unrecorded) and polling."""
        self._queue.clear()
        submitter = self._submitter
        if submitter is not None and not submitter.done():
            submitter.cancel()
            await asyncio.gather(submitter, return_exceptions=True)
        if self._creates:
            if settle:
                await asyncio.wait(set(self._creates), timeout=SETTLE_SECONDS)
            for task in list(self._creates):  # answers still missing: such a prediction may exist
                task.cancel()
            await asyncio.gather(*self._creates, return_exceptions=True)
        for task in list(self._polls):
            task.cancel()
        if self._polls:
            await asyncio.gather(*self._polls, return_exceptions=True)

    async def _time_out(self) -> None:
        """At the deadline: cancel what still runs (best effort) and give every open prompt a timeout event."""
        await self._stop()
        in_flight = self.state.in_flight
        if in_flight:
            limit = asyncio.Semaphore(self.max_concurrency)

            async def cancel(pid: str) -> None:
                async with limit:
                    await self.hook.acancel_prediction(pid)

            ids = [pid for pid in (self.state.prediction_ids[i] for i in in_flight) if pid is not None]
            try:
                await asyncio.wait_for(
                    asyncio.gather(*(cancel(p) for p in ids), return_exceptions=True), SETTLE_SECONDS
                )
            except asyncio.TimeoutError:
                log.warning("Cancelling %d predictions at the deadline took too long; some may still run.", len(ids))
        for index in in_flight:
            pid = self.state.prediction_ids[index] or ""
            self.state.results[index] = make_event(
                TIMEOUT, pid, message=f"Prediction {pid} did not finish before the batch's deadline; it was cancelled."
            )
        for index in self.state.to_create:
            self.state.prompts[index] = None
            self.state.results[index] = make_event(
                TIMEOUT, "", message=f"Prompt {index} was not submitted before the batch's deadline."
            )


def _compact(prediction: Prediction) -> Prediction:
    """The prediction cut to what a batch result needs, so a thousand of them stay a small event."""
    raw = prediction.raw
    keep = {k: raw[k] for k in ("id", "status", "output", "error", "created_at", "completed_at") if k in raw}
    web = prediction.web_url
    if web:
        keep["urls"] = {"web": web}
    return Prediction(keep)


def batch_event(
    outcome: str,
    state: BatchState,
    *,
    message: str = "",
    stats: Mapping[str, int] | None = None,
    end_time: float | None = None,
) -> dict[str, Any]:
    """
    Build a batch event: ``{"status", "message", "prediction_ids", "results", "stats", "end_time"}``.

    :param outcome: :data:`COMPLETE`, :data:`SUBMITTED`, :data:`PAUSED` or ``error``.
    :param state: the batch (the lists are in prompt order; ``None`` where nothing is known).
    :param message: what happened, for ``error``.
    :param stats: request counts.
    :param end_time: the batch's deadline, for whoever continues it.
    """
    done = sum(result is not None for result in state.results)
    return {
        "status": outcome,
        "message": message or f"{done} of {len(state.results)} prompts have a final status.",
        "prediction_ids": list(state.prediction_ids),
        "results": list(state.results),
        "stats": dict(stats or {}),
        "end_time": end_time,
    }


class CometFluxBatchTrigger(BaseTrigger):
    """
    Watches many predictions from one trigger, optionally creating them first, and fires one event.

    Given ``prompts`` (with ``model`` and ``input``), it first creates those at ``creates_per_minute``, watching
    the created ones meanwhile; once every prompt is created it fires a ``submitted`` event (unless all are
    already done) so that the task records the ids and defers again to a trigger that holds ids only: should the
    triggerer restart, a watching trigger never creates anything again. Without prompts it serialises ids and
    numbers only, never a secret; with prompts it also holds the model, the shared input and the prompts.

    The event is ``{"status", "message", "prediction_ids", "results", "stats", "end_time"}``: ``status`` is ``complete``
    (every prompt has its final event in ``results``, in prompt order; a prompt whose prediction did not finish by
    ``end_time`` gets a ``timeout`` one, after a best-effort cancel), ``submitted``, or ``error`` when the key or
    the connection is unusable.

    :param prediction_ids: per prompt, the prediction to watch, or ``None`` (not created yet, or already done).
    :param cometapi_conn_id: the Airflow connection (type ``cometapi``).
    :param poll_interval: the steady delay between polls of one prediction, in seconds.
    :param end_time: epoch seconds when the batch gives up; ``None`` for no deadline.
    :param max_consecutive_errors: polls of one prediction that may fail transiently in a row.
    :param polls_per_minute: the most status polls per minute.
    :param max_concurrency: the most requests open at once.
    :param model: the model id, when there are prompts to create.
    :param input: the model inputs shared by every prompt.
    :param prompts: per prompt, the prompt to create, or ``None``.
    :param creates_per_minute: the create pace.
    """

    def __init__(
        self,
        prediction_ids: Sequence[str | None],
        cometapi_conn_id: str = "cometapi_default",
        poll_interval: float = 2.0,
        end_time: float | None = None,
        max_consecutive_errors: int = 5,
        polls_per_minute: float = DEFAULT_POLLS_PER_MINUTE,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        model: str | None = None,
        input: Mapping[str, Any] | None = None,
        prompts: Sequence[str | None] | None = None,
        creates_per_minute: float = DEFAULT_CREATES_PER_MINUTE,
    ) -> None:
        super().__init__()
        self.prediction_ids = list(prediction_ids)
        self.cometapi_conn_id = cometapi_conn_id
        self.poll_interval = float(poll_interval)
        self.end_time = None if end_time is None else float(end_time)
        self.max_consecutive_errors = int(max_consecutive_errors)
        self.polls_per_minute = float(polls_per_minute)
        self.max_concurrency = int(max_concurrency)
        creating = prompts is not None and any(p is not None for p in prompts)
        self.model = model if creating else None
        self.input = dict(input) if creating and input is not None else None
        self.prompts = list(prompts) if creating and prompts is not None else None
        self.creates_per_minute = float(creates_per_minute)
        if self.prompts is not None and len(self.prompts) != len(self.prediction_ids):
            raise ValueError("prompts and prediction_ids must have one entry per prompt")
        self._state: BatchState | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "prediction_ids": list(self.prediction_ids),
            "cometapi_conn_id": self.cometapi_conn_id,
            "poll_interval": self.poll_interval,
            "end_time": self.end_time,
            "max_consecutive_errors": self.max_consecutive_errors,
            "polls_per_minute": self.polls_per_minute,
            "max_concurrency": self.max_concurrency,
        }
        if self.prompts is not None:
            kwargs.update(
                model=self.model,
                input=self.input,
                prompts=list(self.prompts),
                creates_per_minute=self.creates_per_minute,
            )
        return f"{type(self).__module__}.{type(self).__qualname__}", kwargs

    def _hook(self) -> Any:
        from airflow_provider_cometflux.hooks.cometapi import CometAPIHook

        return CometAPIHook(self.cometapi_conn_id)

    def _new_state(self) -> BatchState:
        count = len(self.prediction_ids)
        prompts = self.prompts if self.prompts is not None else [None] * count
        state = BatchState(list(prompts), list(self.prediction_ids), [None] * count)
        for i, pid in enumerate(state.prediction_ids):
            if pid is not None:
                state.prompts[i] = None
        return state

    async def run(self) -> AsyncIterator[TriggerEvent]:
        state = self._state = self._new_state()
        engine = BatchRun(
            self._hook(),
            state,
            model=self.model,
            input=self.input,
            end_time=self.end_time,
            poll_interval=self.poll_interval,
            creates_per_minute=self.creates_per_minute,
            polls_per_minute=self.polls_per_minute,
            max_concurrency=self.max_concurrency,
            max_consecutive_errors=self.max_consecutive_errors,
            stop_when_submitted=self.prompts is not None,
        )
        try:
            outcome = await engine.run()
        finally:
            await engine.hook.aclose()
        event = batch_event(outcome, state, message=engine.message, stats=engine.stats, end_time=self.end_time)
        yield TriggerEvent(event)

    async def on_kill(self) -> None:
        """Cancel every prediction still running when a user kills the deferred task (best effort)."""
        state = self._state or self._new_state()
        ids = [pid for pid in (state.prediction_ids[i] for i in state.in_flight) if pid is not None]
        if not ids:
            return
        hook = self._hook()
        limit = asyncio.Semaphore(self.max_concurrency)

        async def cancel(pid: str) -> None:
            async with limit:
                await hook.acancel_prediction(pid)

        try:
            await asyncio.gather(*(cancel(pid) for pid in ids), return_exceptions=True)
        finally:
            await hook.aclose()
