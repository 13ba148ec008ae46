"""One shared poller per event loop and connection: every watcher's status polls under one request budget.

A triggerer runs thousands of triggers on one event loop. Were each to poll on its own and back off on its own
after a 429, together they would keep a rate-limited service saturated with refusals. Instead every watcher on a
loop registers the prediction it waits for with that loop's :class:`SharedPoller` for the connection, which makes
the status requests for all of them:

* **one request budget per connection** (:class:`~airflow_provider_cometflux.pacing.RequestBudget`): a 429
  pauses every request of the connection for its ``Retry-After``; the rate then adapts, cut on a refusal to what
  the service was seen to accept, probed back up while answers come fast and the budget is what holds polls back.
  With no ceiling on the connection it starts unlimited until the first 429, bounded only by the requests it keeps
  in flight (a window opening by one per answer up to the shared HTTP pool's size); the connection's
  ``requests_per_minute`` extra is a ceiling it never passes;
* **a responsive loop**: answers that arrive together are handled in one turn of the event loop, so the window
  also closes (by a quarter) when a turn full of this poller's answers took more than :data:`TURN_TARGET` of the
  loop thread's CPU, and opens again only while turns are short (CPU, not wall-clock time: on a busy machine,
  waiting for a CPU is no reason to poll less). It also stays shut, and halves, while the loop's thread ran
  nearly all of the last :data:`BUSY_PERIOD` (its CPU time again): answers then wait for the loop, not for the
  service, and more requests in flight would make no more polls, only more young objects for the garbage
  collector to promote, which brings full collections sooner. Against a slow service answers come spread out
  and the window opens up to the pool; when the loop's CPU is the limit, more requests in flight would only make
  longer turns (and more young objects for the garbage collector to promote), never more polls;
* **earliest due first**: polls wait in a heap ordered by when each prediction is due, so under a tight budget
  a prediction is seen done soon after it ends, and each prediction's own delays come from
  :func:`~airflow_provider_cometflux.pacing.poll_delays` (quick first, then every ``poll_interval``); behind
  schedule (a poll late by more than its ``poll_interval``), a prediction that cannot have ended yet is put off to
  when it could have (:class:`~airflow_provider_cometflux.pacing.RunTimes`), so the polls go where an end can be;
* **one registration per prediction**: two watchers of the same id share its polls (at the smaller interval);
* **the poller decides about retries**: its hook retries nothing; a transient failure is tried again at the
  prediction's next poll, after a growing pause (:data:`~airflow_provider_cometflux.pacing.POLL_ERRORS`), and
  ends a watcher after ``max_consecutive_errors`` in a row (a 429 is the budget's matter and never counts against
  a prediction);
* **cancel-safe**: cancelling a watcher removes only its own registration; a request in flight is never cancelled
  (its answer still serves the other watchers of that id, or is dropped), and the poller stops, closing its hook,
  once nothing is watched and nothing is in flight.

One coroutine per poller dispatches; one task per request in flight; per watcher a future. The poller keeps its own
schedules (polls by when they are due, watchers by their deadline) and holds at most one loop timer for each, so
thousands of watchers add nothing to the event loop's own timer heap. The dispatcher starts at most
:data:`DISPATCH_BATCH` polls per turn of the loop, so a crowd of due polls never holds the loop for long.
Nothing blocks the loop and nothing busy-waits.

The first poller of a process also freezes the objects then alive (``gc.freeze()``, as Airflow's DAG processor and
executors do; :data:`FREEZE_HEAP_AT_START`): a full garbage collection then walks what the triggers made since,
not Airflow's ~170,000 start-up objects again, which alone took longer than 100 ms, stalling the loop as long.
What the triggers make since is kept small, as each full collection walks it: a waiting prediction costs the
collector a watcher, an entry and a future (the heap items are tuples of atoms, which it stops tracking; the poll
schedule is a float; a finished watcher drops its future), and the trigger awaits that future from one coroutine
frame of the package (:func:`start_watching`, used by ``watch_event``), not four.
"""

from __future__ import annotations

import asyncio
import gc
import heapq
import importlib
import logging
import math
import random
import sys
import time
import weakref
from typing import TYPE_CHECKING

from airflow_provider_cometflux.exceptions import (
    CometAPIConnectionConfigError,
    CometAPIError,
    PredictionTimeoutError,
)
from airflow_provider_cometflux.models import Prediction, check_prediction_id, note_status
from airflow_provider_cometflux.pacing import (
    FIRST_POLL_DELAY,
    MAX_CONSECUTIVE_POLL_ERRORS,
    POLL_ERRORS,
    RequestBudget,
    RunTimes,
    next_poll_delay,
)

if TYPE_CHECKING:
    from airflow_provider_cometflux.hooks.cometapi import CometAPIHook

log = logging.getLogger(__name__)

#: The longest one status request may take (CometAPI's GET can take tens of seconds; a slow poll is normal).
POLL_REQUEST_TIMEOUT = 90.0
#: Polls due this close together (seconds) start in one wake-up of the dispatcher.
COALESCE = 0.005
#: Requests a new poller sends before its first answers (see :attr:`SharedPoller.window`).
INITIAL_WINDOW = 16
#: The first polls of watchers registered together are spread over up to this many seconds.
FIRST_POLL_SPREAD = 0.25
#: Polls started in one turn of the event loop at most (each costs a request's set-up and send).
DISPATCH_BATCH = 32
#: CPU seconds one turn of the event loop full of this poller's answers may take before the window closes a little.
TURN_TARGET = 0.01
#: Seconds over which the loop thread's CPU is measured (see :attr:`SharedPoller.saturated`).
BUSY_PERIOD = 0.25
#: The share of a period the loop's thread spent on a CPU above which the window stays shut.
BUSY_LIMIT = 0.9
#: Seconds after the moment a prediction could have ended that its put-off poll comes (:meth:`SharedPoller._put_off`):
#: polls due within :data:`COALESCE` start together, so one put off to that very moment could ask a hair too early,
#: find the prediction still running, and see it done only a ``poll_interval`` later.
PUT_OFF_MARGIN = 0.05
#: Whether the first poller of a process freezes the objects alive then (see the module's docstring).
FREEZE_HEAP_AT_START = True


class _Watcher:
    """One awaiting coroutine's registration: its future, its bounds and its own run of errors."""

    __slots__ = ("deadline", "end_time", "entry", "errors", "future", "interval", "max_errors", "started")

    def __init__(
        self, future: asyncio.Future[Prediction], interval: float, end_time: float | None, max_errors: int
    ) -> None:
        #: the awaiting coroutine's future; dropped once the watcher is unregistered, so that a finished watcher
        #: left in the deadline heap (until it is compacted) keeps neither the future nor the prediction alive
        self.future: asyncio.Future[Prediction] | None = future
        self.interval = interval
        self.end_time = end_time
        self.max_errors = max_errors
        self.errors = 0
        self.started = time.time()
        #: the loop time of ``end_time`` while it is in the poller's deadline heap, else ``None``
        self.deadline: float | None = None
        self.entry: _Entry | None = None


class _Entry:
    """One prediction's registration: its watchers, its poll schedule, what its last poll said."""

    __slots__ = (
        "created",
        "due",
        "error",
        "errors",
        "in_flight",
        "interval",
        "model",
        "pid",
        "seq",
        "status",
        "step",
        "watchers",
    )

    def __init__(self, pid: str, interval: float) -> None:
        self.pid = pid
        self.watchers: list[_Watcher] = []
        self.interval = interval
        #: the next delay between polls before jitter (see :func:`~airflow_provider_cometflux.pacing.poll_delays`)
        self.step = min(FIRST_POLL_DELAY, interval)
        self.due = 0.0
        self.seq = -1  # the heap item that is current; older ones are stale
        self.in_flight = False
        self.errors = 0
        self.status = "unknown"
        self.error: BaseException | None = None
        #: its ``created_at`` (Unix seconds) and model, from its first answer (see :class:`RunTimes`)
        self.created: float | None = None
        self.model = ""

    def next_delay(self) -> float:
        """The delay before this prediction's next poll: quick at first, then every ``poll_interval``."""
        delay, self.step = next_poll_delay(self.step, self.interval)
        return delay


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class SharedPoller:
    """
    Polls every watched prediction of one connection on one event loop (see the module's docstring).

    Made by :func:`watch_prediction`; one per event loop and connection id.

    :param cometapi_conn_id: the connection.
    :param loop: the event loop it runs on.
    :param max_in_flight: requests in flight at most (default: the shared HTTP pool's size).
    """

    def __init__(
        self, cometapi_conn_id: str, loop: asyncio.AbstractEventLoop, *, max_in_flight: int | None = None
    ) -> None:
        from airflow_provider_cometflux.hooks import connection
        from airflow_provider_cometflux.hooks.cometapi import CometAPIHook

        self.cometapi_conn_id = cometapi_conn_id
        self.loop = loop
        self.max_in_flight = max_in_flight or connection.ASYNC_POOL_LIMIT
        #: requests in flight allowed now: grows by one per answer up to ``max_in_flight``, halves on a 429, so an
        #: unknown service is not sent the whole pool's worth of requests before its first answer
        self.window = min(INITIAL_WINDOW, self.max_in_flight)
        #: the CPU the last measured turn of the loop took (seconds), and the measurement under way: the loop
        #: thread's CPU time when it started, and the answers handled since (see :meth:`_measure_turn`)
        self.turn = 0.0
        self._turn_started: float | None = None
        self._turn_answers = 0
        #: whether the loop's thread ran nearly all of the last period (:data:`BUSY_LIMIT`): then answers wait for
        #: the loop, not for the service, and more requests in flight would add only young objects, not polls
        self.saturated = False
        self._period_started = (time.perf_counter(), time.thread_time())
        self.hook: CometAPIHook = CometAPIHook(cometapi_conn_id, retry_policy=POLL_ERRORS)
        self.budget = RequestBudget()
        self.run_times = RunTimes()
        #: polls put off because the prediction could not have ended yet (see :meth:`_put_off`)
        self.put_off = 0
        self.entries: dict[str, _Entry] = {}
        #: status requests started, and answered (or failed) so far
        self.requests = 0
        self.answers = 0
        #: polls by when they are due: ``(due, seq, prediction id)``; holding the id, not the entry, each item is a
        #: tuple of atoms, which the garbage collector stops tracking (one object fewer per prediction to walk)
        self._heap: list[tuple[float, int, str]] = []
        self._seq = 0
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._wakeup: asyncio.Future[None] | None = None
        #: the loop time the dispatcher sleeps until (``inf``: until poked), and its one timer
        self._sleeping_until = -math.inf
        self._timer: asyncio.TimerHandle | None = None
        #: watchers by deadline (stale items of finished watchers are skipped), and its one timer
        self._deadlines: list[tuple[float, int, _Watcher]] = []
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._watchers = 0
        self._stopped = False
        self.task: asyncio.Task[None] = loop.create_task(self._run(), name=f"cometflux-poller-{cometapi_conn_id}")

    # -- registrations ---------------------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Requests in flight now."""
        return self._in_flight

    def register(
        self, pid: str, *, poll_interval: float, end_time: float | None, max_consecutive_errors: int
    ) -> _Watcher:
        """Watch ``pid``: the returned watcher's future resolves with the terminal prediction (or an error)."""
        loop = self.loop
        watcher = _Watcher(loop.create_future(), poll_interval, end_time, max(1, max_consecutive_errors))
        now = loop.time()
        entry = self.entries.get(pid)
        if entry is None:
            entry = self.entries[pid] = _Entry(pid, poll_interval)
            self._schedule(entry, now + random.uniform(0.0, min(FIRST_POLL_SPREAD, poll_interval)))
            if entry.due < self._sleeping_until:
                self._poke()
        elif poll_interval < entry.interval:  # polled at the smaller interval from now on
            entry.interval = poll_interval
            entry.step = min(FIRST_POLL_DELAY, poll_interval)
            soon = now + entry.next_delay()
            if not entry.in_flight and soon < entry.due:
                self._schedule(entry, soon)
                self._poke()
        watcher.entry = entry
        entry.watchers.append(watcher)
        self._watchers += 1
        if end_time is not None:
            self._add_deadline(watcher, now + (end_time - time.time()))
        return watcher

    def unregister(self, watcher: _Watcher) -> None:
        """Forget one watcher (its coroutine was cancelled or is done); the others are left alone."""
        watcher.deadline = None  # its item in the deadline heap is stale from now on
        watcher.future = None
        entry = watcher.entry
        if entry is None:
            return
        watcher.entry = None
        self._watchers -= 1
        if watcher in entry.watchers:
            entry.watchers.remove(watcher)
        if not entry.watchers:
            self._drop(entry)

    def _drop(self, entry: _Entry) -> None:
        if self.entries.get(entry.pid) is entry:
            del self.entries[entry.pid]
            self._poke()

    def _finish(self, watcher: _Watcher, result: Prediction | BaseException) -> None:
        future = watcher.future
        self.unregister(watcher)
        if future is None or future.done():
            return
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)

    # -- deadlines --------------------------------------------------------------------------------------------

    def _add_deadline(self, watcher: _Watcher, at: float) -> None:
        """Give up on ``watcher`` at loop time ``at``."""
        watcher.deadline = at
        self._seq += 1
        heap = self._deadlines
        heapq.heappush(heap, (at, self._seq, watcher))
        if len(heap) > 2 * self._watchers + 64:  # stale items of finished watchers
            self._deadlines = heap = [item for item in heap if item[2].deadline == item[0]]
            heapq.heapify(heap)
        self._arm_deadlines()

    def _arm_deadlines(self) -> None:
        """Keep the one deadline timer set for the earliest deadline still current."""
        heap = self._deadlines
        while heap and heap[0][2].deadline != heap[0][0]:
            heapq.heappop(heap)
        timer = self._deadline_timer
        if not heap:
            if timer is not None:
                timer.cancel()
                self._deadline_timer = None
            return
        at = heap[0][0]
        if timer is not None and timer.when() <= at:
            return  # it fires in time (perhaps early, and is then set again)
        if timer is not None:
            timer.cancel()
        self._deadline_timer = self.loop.call_at(at, self._deadlines_due)

    def _deadlines_due(self) -> None:
        self._deadline_timer = None
        heap = self._deadlines
        now = self.loop.time() + 0.001  # a loop timer may fire a hair early: never set it again for a past time
        while heap and heap[0][0] <= now:
            at, _, watcher = heapq.heappop(heap)
            if watcher.deadline == at:
                self._expire(watcher)
        self._arm_deadlines()

    def _expire(self, watcher: _Watcher) -> None:
        """A watcher's ``end_time`` came: it gives up, saying how long it waited and what it saw last."""
        from airflow_provider_cometflux.hooks.cometapi import gave_up_text

        watcher.deadline = None
        entry = watcher.entry
        status, error = (entry.status, entry.error) if entry is not None else ("unknown", None)
        text = gave_up_text(time.time() - watcher.started, None, status, error)
        pid = entry.pid if entry is not None else None
        self._finish(watcher, PredictionTimeoutError(text, prediction_id=pid))

    # -- the schedule ----------------------------------------------------------------------------------------

    def _schedule(self, entry: _Entry, due: float) -> None:
        """(Re)schedule a prediction's next poll; an earlier heap item of it becomes stale, and is skipped."""
        self._seq += 1
        entry.due, entry.seq = due, self._seq
        heap = self._heap
        heapq.heappush(heap, (due, self._seq, entry.pid))
        if len(heap) > 2 * len(self.entries) + 64:  # stale items of dropped or rescheduled predictions
            self._heap = [item for item in heap if self._current(item)]
            heapq.heapify(self._heap)

    def _current(self, item: tuple[float, int, str]) -> bool:
        entry = self.entries.get(item[2])
        return entry is not None and entry.seq == item[1] and not entry.in_flight

    def _poke(self) -> None:
        if self._wakeup is not None:
            _wake(self._wakeup)

    def _timer_fired(self) -> None:
        self._timer = None
        self._poke()

    async def _sleep(self, seconds: float | None, *, for_due: bool = True) -> None:
        """
        Sleep until ``seconds`` pass (``None``: until poked), or until poked.

        :param seconds: how long at most.
        :param for_due: whether a new registration due sooner wakes it (not while the window or the budget is
            what holds polls back: answers and the timer wake it then).

        The one wake-up timer is kept when it fires in time (a timer firing early only means one more look at the
        schedule), so a poke does not cost a timer made and cancelled.
        """
        loop = self.loop
        future = loop.create_future()
        self._wakeup = future
        until = math.inf
        if seconds is not None:
            until = loop.time() + seconds
            timer = self._timer
            if timer is None or timer.when() > until:
                if timer is not None:
                    timer.cancel()
                self._timer = loop.call_at(until, self._timer_fired)
        self._sleeping_until = until if for_due else -math.inf
        try:
            await future
        finally:
            self._wakeup = None
            self._sleeping_until = -math.inf

    async def _run(self) -> None:
        try:
            await self._dispatch()
        except BaseException as exc:
            failure: BaseException = exc
            if isinstance(exc, asyncio.CancelledError):
                failure = asyncio.CancelledError()
            elif not isinstance(exc, (CometAPIError, CometAPIConnectionConfigError)):
                log.exception("The shared poller of connection %s failed.", self.cometapi_conn_id)
            self._fail_all(failure)
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            self._retire()
            for timer in (self._timer, self._deadline_timer):
                if timer is not None:
                    timer.cancel()
            self._timer = self._deadline_timer = None
            for task in list(self._tasks):  # only when the loop itself is going away: nobody is left to serve
                task.cancel()
            try:
                await self.hook.aclose()
            except Exception:
                log.debug("Closing the poller's hook failed.", exc_info=True)

    def _retire(self) -> None:
        self._stopped = True
        pollers = _POLLERS.get(self.loop)
        if pollers is not None and pollers.get(self.cometapi_conn_id) is self:
            del pollers[self.cometapi_conn_id]

    def _fail_all(self, exc: BaseException) -> None:
        for entry in list(self.entries.values()):
            for watcher in list(entry.watchers):
                if isinstance(exc, asyncio.CancelledError):
                    future = watcher.future
                    self.unregister(watcher)
                    if future is not None:
                        future.cancel()
                else:
                    self._finish(watcher, exc)

    async def _dispatch(self) -> None:
        if "aiohttp" not in sys.modules:  # a fresh triggerer: import the HTTP client in a thread, not in the loop
            await asyncio.to_thread(importlib.import_module, "aiohttp")
        ceiling = await self.hook.apolls_per_minute()
        if ceiling is not None:
            self.budget = RequestBudget(ceiling / 60.0)
        loop = self.loop
        budget = self.budget
        started = 0  # polls started in this turn of the loop
        while True:
            if started >= DISPATCH_BATCH:  # let the loop run what is ready (answers, timers) before starting more
                started = 0
                await asyncio.sleep(0)
            if not self.entries and not self._in_flight:
                self._retire()  # from now on a new watcher gets a new poller
                return
            heap = self._heap  # compaction may have replaced it
            while heap and not self._current(heap[0]):
                heapq.heappop(heap)
            if not heap:
                started = 0
                await self._sleep(None)
                continue
            now = loop.time()
            due = heap[0][0]
            if due > now + COALESCE:  # polls due within a few ms go together: one wake-up, not one each
                started = 0
                await self._sleep(due - now)
                continue
            if self._in_flight >= self.window:
                started = 0
                await self._sleep(None, for_due=False)
                continue
            wait = budget.wait(now)
            if wait > 0:
                if now >= budget.paused_until:
                    budget.held_back(now)
                started = 0
                await self._sleep(wait, for_due=False)
                continue
            due, _, pid = heapq.heappop(heap)
            entry = self.entries[pid]
            started += 1
            if now - due > entry.interval and self._put_off(entry, now):  # behind schedule
                continue
            entry.in_flight = True
            self._in_flight += 1
            self.requests += 1
            epoch = budget.take(now)
            task = loop.create_task(self._poll(entry, now, epoch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _put_off(self, entry: _Entry, now: float) -> bool:
        """
        Put off a late poll of a prediction that cannot have ended yet, to when it could have (see
        :class:`~airflow_provider_cometflux.pacing.RunTimes`); say whether it was.
        """
        if entry.created is None:
            return False
        end = self.run_times.earliest_end(entry.model, entry.created)
        if end is None:
            return False
        wait = end + PUT_OFF_MARGIN - time.time()
        if wait <= COALESCE:
            return False
        self._schedule(entry, now + wait)
        self.put_off += 1
        return True

    def _measure_turn(self) -> None:
        """Count an answer handled in this turn of the loop; the first one of a turn starts measuring the turn."""
        self._turn_answers += 1
        if self._turn_started is None:
            self._turn_started = time.thread_time()
            self.loop.call_soon(self._turn_over)  # runs in the next turn, after everything ready now

    def _turn_over(self) -> None:
        """A turn that handled answers is over: close the window a little if they held the loop too long."""
        started, answers = self._turn_started, self._turn_answers
        self._turn_started, self._turn_answers = None, 0
        if started is None:
            return
        self.turn = time.thread_time() - started
        if self.turn > TURN_TARGET and answers >= 4:  # a long turn of our own answers, not someone else's
            self.window = max(INITIAL_WINDOW, min(self.window, self._in_flight + answers) * 3 // 4)
        wall, busy = time.perf_counter(), time.thread_time()
        since, busy_since = self._period_started
        if wall - since >= BUSY_PERIOD:
            self.saturated = (busy - busy_since) / (wall - since) >= BUSY_LIMIT
            self._period_started = (wall, busy)
            if self.saturated:  # answers wait for the loop: fewer in flight make as many polls, and fewer objects
                self.window = max(INITIAL_WINDOW, self.window // 2)

    # -- one poll --------------------------------------------------------------------------------------------

    def _request_timeout(self, entry: _Entry) -> float:
        latest = -math.inf
        for watcher in entry.watchers:
            if watcher.end_time is None:
                return POLL_REQUEST_TIMEOUT
            latest = max(latest, watcher.end_time)
        if latest == -math.inf:
            return POLL_REQUEST_TIMEOUT
        return max(0.05, min(POLL_REQUEST_TIMEOUT, latest - time.time()))

    async def _poll(self, entry: _Entry, started: float, epoch: int) -> None:
        result: Prediction | BaseException
        try:
            result = Prediction(await self.hook.aget_prediction(entry.pid, timeout=self._request_timeout(entry)))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            result = exc
        finally:
            entry.in_flight = False
            self._in_flight -= 1
            self._poke()
        self.answers += 1
        if self._stopped:
            return
        try:
            self._answered(entry, started, epoch, result)
        except Exception as exc:  # a bug: fail this prediction's watchers clearly rather than leave them hanging
            log.exception("Handling the poll of prediction %s failed.", entry.pid)
            for watcher in list(entry.watchers):
                self._finish(watcher, exc)

    def _note_times(self, entry: _Entry, prediction: Prediction) -> None:
        """Keep a prediction's creation time and model from its first answer, and its run time once it ended."""
        if entry.created is not None and not prediction.is_terminal:
            return  # learnt already, nothing new until it ends
        if entry.created is None:
            entry.created = prediction.epoch("created_at")
            entry.model = str(prediction.raw.get("model") or "")
        completed = prediction.epoch("completed_at") if prediction.is_terminal else None
        self.run_times.noted(entry.model, entry.created, completed, time.time())

    def _answered(self, entry: _Entry, started: float, epoch: int, result: Prediction | BaseException) -> None:
        now = self.loop.time()
        live = self.entries.get(entry.pid) is entry
        if isinstance(result, CometAPIError) and result.http_status == 429:
            if epoch == self.budget.epoch:
                self.window = max(INITIAL_WINDOW, self.window // 2)
            self.budget.refused(now, started, epoch, result.retry_after)
            if live:
                entry.error = result
                self._schedule(entry, entry.due)  # first in line again once the pause is over
            return
        self._measure_turn()
        if self.window < self.max_in_flight and self.turn <= TURN_TARGET and not self.saturated:
            self.window += 1
        if isinstance(result, Prediction):
            self.budget.answered(now, started)
            if not live:
                return
            self._note_times(entry, result)
            if result.is_terminal:
                for watcher in list(entry.watchers):
                    self._finish(watcher, result)
                return
            if result.status != entry.status:
                note_status(result)
            entry.status, entry.error, entry.errors = result.status, None, 0
            for watcher in entry.watchers:
                watcher.errors = 0
            self._schedule(entry, now + entry.next_delay())
            return
        if isinstance(result, CometAPIError) and result.http_status is not None:
            self.budget.answered(now, started)  # an answer all the same: the service is not refusing
        if isinstance(result, CometAPIConnectionConfigError):  # the connection itself: every watcher alike
            self._fail_all(result)
            return
        if not live:
            return
        if not isinstance(result, CometAPIError) or not result.transient:
            for watcher in list(entry.watchers):
                self._finish(watcher, result)
            return
        from airflow_provider_cometflux.hooks.cometapi import polls_failed

        entry.errors += 1
        entry.error = result
        for watcher in list(entry.watchers):
            watcher.errors += 1
            if watcher.errors >= watcher.max_errors:
                self._finish(watcher, polls_failed(result, watcher.errors))
        if entry.watchers:
            log.warning("Polling prediction %s failed (%d in a row): %s", entry.pid, entry.errors, result)
            self._schedule(entry, now + max(POLL_ERRORS.backoff(entry.errors - 1), entry.next_delay()))


_heap_frozen = False


def _freeze_heap_once() -> None:
    """Move the objects alive now out of the collector's way, once per process (see the module's docstring)."""
    global _heap_frozen
    if FREEZE_HEAP_AT_START and not _heap_frozen:
        _heap_frozen = True
        gc.freeze()


# One poller per event loop and connection id.
_POLLERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, SharedPoller]] = weakref.WeakKeyDictionary()


def shared_poller(cometapi_conn_id: str) -> SharedPoller:
    """
    The running event loop's poller for a connection, started on first use.

    :param cometapi_conn_id: the connection.
    """
    loop = asyncio.get_running_loop()
    pollers = _POLLERS.get(loop)
    if pollers is None:
        pollers = _POLLERS[loop] = {}
    poller = pollers.get(cometapi_conn_id)
    if poller is None or poller._stopped:
        _freeze_heap_once()
        poller = pollers[cometapi_conn_id] = SharedPoller(cometapi_conn_id, loop)
    return poller


def current_poller(cometapi_conn_id: str) -> SharedPoller | None:
    """
    The running event loop's poller for a connection, if one is running (for tests and measurements).

    :param cometapi_conn_id: the connection.
    """
    return (_POLLERS.get(asyncio.get_running_loop()) or {}).get(cometapi_conn_id)


async def watch_prediction(
    cometapi_conn_id: str,
    prediction_id: str,
    *,
    poll_interval: float,
    end_time: float | None,
    max_consecutive_errors: int = MAX_CONSECUTIVE_POLL_ERRORS,
) -> Prediction:
    """
    Wait, through the event loop's shared poller, until a prediction is terminal.

    :param cometapi_conn_id: the connection to poll with.
    :param prediction_id: the prediction.
    :param poll_interval: the steady delay between its polls, in seconds (the first come sooner).
    :param end_time: epoch seconds at which to give up; ``None`` for no deadline.
    :param max_consecutive_errors: transient poll failures in a row (429s excepted) that end the wait.
    :return: the prediction in a terminal status (``succeeded``, ``failed``, ``canceled`` or ``aborted``).
    :raises PredictionTimeoutError: at ``end_time``, saying how long it waited, the last status and poll error.
    :raises CometAPIError: at once for an error that is not transient (401, 403, 404...); the last error after
        ``max_consecutive_errors`` transient ones in a row.
    :raises CometAPIConnectionConfigError: the connection is missing or unusable.
    """
    poller, watcher, future = start_watching(
        cometapi_conn_id,
        prediction_id,
        poll_interval=poll_interval,
        end_time=end_time,
        max_consecutive_errors=max_consecutive_errors,
    )
    try:
        return await future
    finally:
        poller.unregister(watcher)


def start_watching(
    cometapi_conn_id: str,
    prediction_id: str,
    *,
    poll_interval: float,
    end_time: float | None,
    max_consecutive_errors: int,
) -> tuple[SharedPoller, _Watcher, asyncio.Future[Prediction]]:
    """
    Register a prediction with the running loop's poller, for a caller that awaits the returned future itself
    and unregisters the watcher when done (as :func:`watch_prediction` does), without a coroutine frame in between: a
    triggerer holds one such frame per trigger, which every full garbage collection walks.

    The arguments and errors are :func:`watch_prediction`'s.
    """
    pid = check_prediction_id(prediction_id)
    if not poll_interval > 0:
        raise ValueError(f"poll_interval must be above 0, not {poll_interval!r}")
    if end_time is not None and end_time <= time.time():
        raise PredictionTimeoutError(
            "gave up after 0s: the deadline had passed before watching began; last status 'unknown'",
            prediction_id=pid,
        )
    poller = shared_poller(cometapi_conn_id)
    watcher = poller.register(
        pid, poll_interval=float(poll_interval), end_time=end_time, max_consecutive_errors=max_consecutive_errors
    )
    assert watcher.future is not None
    return poller, watcher, watcher.future
