"""How fast and how often the service is asked: one set of rules for creates and polls alike.

Only decisions and delays live here; the hook, the creates (:mod:`~airflow_provider_cometflux.submission`) and the
shared poller (:mod:`~airflow_provider_cometflux.watching.poller`) do the I/O and ask this module what to do next.

* **Which answers are worth another try**: :data:`RETRYABLE_STATUSES` (:func:`is_retryable_status`).
* **A 429 pauses**: for its ``Retry-After`` (:func:`parse_retry_after`), never cut short, with a little jitter on
  top (:func:`after_retry_after`); without one, for a pause doubling from :data:`PAUSE_WITHOUT_RETRY_AFTER` per
  refusal in a row (:func:`refusal_pause`). A hook's own retry waits the same way (:meth:`RetryPolicy.delay`); a
  :class:`Pause` holds back every create (:class:`Pacer`) or every poll of a connection (:class:`RequestBudget`).
* **The pace adapts**: creates, which cost money, keep ``creates_per_minute`` and only slow down on a 429
  (:class:`Pacer`); polls, which are free, start unlimited (or at the connection's ceiling), are cut on a 429 to
  what the service was seen to accept and probed back up (:class:`RequestBudget`).
* **Errors back off**: capped, fully jittered exponential backoff (:meth:`RetryPolicy.backoff`), for a hook's
  retries and for a prediction whose polls fail (:data:`POLL_ERRORS`) alike.
* **Polls come quick first, then every ``poll_interval``** (:func:`poll_delays`).
* **Behind schedule, polls go where they can find an end**: a poller that cannot keep up with its predictions'
  ``poll_interval`` puts off the polls of predictions that cannot have ended yet (:class:`RunTimes`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

log = logging.getLogger(__name__)

#: Statuses worth another try (DESIGN.md): rate limited, gateway and overload errors, Cloudflare's 524.
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504, 524})

#: How many polls in a row may fail transiently (each after its own retries) before a wait gives up.
#: The inline wait and the trigger use the same bound.
MAX_CONSECUTIVE_POLL_ERRORS = 5

#: The longest ``Retry-After`` waited for, in seconds (a longer one ends a hook's retries; pauses are cut to it).
MAX_RETRY_AFTER = 120.0
#: The pause after a 429 without a ``Retry-After``, doubled for each such pause in a row (up to the longest).
PAUSE_WITHOUT_RETRY_AFTER = 1.0


def is_retryable_status(status: int, error_code: str | None = None) -> bool:
    """
    Whether an error status answered by the service is worth another try.

    A 500 whose error code is ``invalid_request`` is the service refusing the request, not failing on it.

    :param status: the HTTP status.
    :param error_code: the ``error.code`` of a CometAPI error body, if any.
    """
    if status == 500 and error_code == "invalid_request":
        return False
    return status in RETRYABLE_STATUSES


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """
    Read a ``Retry-After`` header: a number of seconds or an HTTP date.

    :param value: the header's value.
    :param now: the current epoch time (for tests).
    :return: seconds to wait (never negative), or ``None`` when absent or unreadable.
    """
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def after_retry_after(retry_after: float) -> float:
    """
    How long to wait when the service said ``Retry-After``: never less, plus up to 5% (at most a second) of jitter,
    so that clients told the same time do not return in lockstep.

    :param retry_after: the service's ``Retry-After``, in seconds.
    """
    retry_after = max(0.0, retry_after)
    return retry_after + random.uniform(0.0, min(1.0, 0.05 * retry_after))


def refusal_pause(retry_after: float | None, pauses_in_row: int, *, longest: float = MAX_RETRY_AFTER) -> float:
    """
    How long a 429 pauses every request it holds back.

    :param retry_after: the service's ``Retry-After``, in seconds, if it sent one.
    :param pauses_in_row: pauses since the last answer that was not a refusal (doubles a pause without
        ``Retry-After``).
    :param longest: no pause lasts longer (waiters' deadlines still hold).
    """
    if retry_after is None:
        return min(longest, PAUSE_WITHOUT_RETRY_AFTER * 2**pauses_in_row)
    return after_retry_after(min(longest, retry_after))


@dataclass(frozen=True)
class RetryPolicy:
    """
    Capped, jittered exponential backoff that honours ``Retry-After``.

    A ``Retry-After`` is never cut short: retrying before the service said to only earns another refusal.
    One longer than ``max_retry_after`` ends the retries instead (see :meth:`honours`), and the error is
    raised as transient, for the caller to try again later.

    :param max_retries: how many times one request is retried before its error is raised.
    :param base_delay: the first backoff ceiling, in seconds.
    :param max_delay: no backoff waits longer than this.
    :param max_retry_after: the longest ``Retry-After`` waited for, in seconds.
    """

    max_retries: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_retry_after: float = MAX_RETRY_AFTER

    def honours(self, retry_after: float | None) -> bool:
        """
        Whether a retry may wait out the service's ``Retry-After`` (always, when it sent none).

        :param retry_after: the service's ``Retry-After``, in seconds.
        """
        return retry_after is None or retry_after <= self.max_retry_after

    def backoff(self, attempt: int) -> float:
        """
        "Full jitter" backoff: a random wait below a ceiling doubling per failure, which spreads many clients apart.

        :param attempt: how many tries failed so far, minus one (0 after the first failure).
        """
        return random.uniform(0, min(self.max_delay, self.base_delay * (2**attempt)))

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """
        Seconds to wait before retry number ``attempt + 1``.

        A ``Retry-After`` the service sent is waited in full (:func:`after_retry_after`), even above
        ``max_delay``; callers check :meth:`honours` first. Without one, :meth:`backoff`.

        :param attempt: how many tries failed so far, minus one (0 for the first retry).
        :param retry_after: the service's ``Retry-After``, in seconds.
        """
        if retry_after is not None:
            return after_retry_after(retry_after)
        return self.backoff(attempt)


#: How a prediction whose polls fail backs off (the poller's hook retries nothing itself: ``max_retries=0``).
POLL_ERRORS = RetryPolicy(max_retries=0)


#: The first delay between polls of a prediction, in seconds (never more than its ``poll_interval``).
FIRST_POLL_DELAY = 0.5


def poll_delays(poll_interval: float, *, first: float = FIRST_POLL_DELAY) -> Iterator[float]:
    """
    Delays between polls: quick at first (a fast model is seen done soon), then every ``poll_interval``.

    Each delay is cut by up to 10% at random, so that many waiters started together drift apart, while
    ``poll_interval`` stays the longest gap: a prediction is seen done at most ``poll_interval`` after it ends.

    :param poll_interval: the steady delay, in seconds.
    :param first: the first delay, in seconds (never more than ``poll_interval``).
    """
    delay = min(first, poll_interval)
    while True:
        jittered, delay = next_poll_delay(delay, poll_interval)
        yield jittered


def next_poll_delay(delay: float, poll_interval: float) -> tuple[float, float]:
    """
    One step of :func:`poll_delays`, for a caller that keeps the step itself (a float, not a generator: the shared
    poller holds one per watched prediction).

    :param delay: this step's delay before jitter (the first is ``min(0.5, poll_interval)``).
    :param poll_interval: the steady delay, in seconds.
    :return: the delay to wait now (cut by up to 10% at random), and the next step's.
    """
    return delay * random.uniform(0.9, 1.0), min(poll_interval, delay * 2)


class Pause:
    """
    The pause after a 429 that holds back every request of its kind (every create of a task, every poll of a
    connection): until when, and how many refusals came in a row.
    """

    def __init__(self) -> None:
        self.until = -math.inf
        self.refusals = 0
        self._in_row = 0

    def left(self, now: float) -> float:
        """Seconds the pause still lasts (0: none)."""
        return max(0.0, self.until - now)

    def refused(self, now: float, retry_after: float | None) -> tuple[float, bool]:
        """
        A 429 arrived: pause (or pause longer).

        :param now: when it arrived.
        :param retry_after: the service's ``Retry-After``, in seconds, if it sent one.
        :return: the pause, in seconds, and whether it began a new pause (``False``: it fell within one).
        """
        self.refusals += 1
        fresh = now >= self.until
        pause = refusal_pause(retry_after, self._in_row)
        if now + pause > self.until:
            self.until = now + pause
            self._in_row += 1
        return pause, fresh

    def answered(self) -> None:
        """An answer that was not a refusal: the next pause without ``Retry-After`` is the shortest again."""
        self._in_row = 0


class Pacer:
    """
    The pace of creates: spaced evenly at ``per_minute``, never more than ``per_minute`` started within ``window``
    seconds, held back during a :class:`Pause` (after a 429), which also slows the pace by a quarter, once per
    pause; a window without a 429 brings it back. One coroutine waits on it at a time.

    :param per_minute: the steady rate.
    :param window: the length of the service's rate-limit window, in seconds.
    :param clock: monotonic seconds (default: the running event loop's clock).
    :param sleep: how to wait (default ``asyncio.sleep``).
    """

    #: A 429 slows the pace to this many times the interval, at most :attr:`SLOWEST` times the base one.
    SLOWDOWN = 1.25
    SLOWEST = 8.0

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
        self.pause = Pause()
        self._next = -math.inf
        self._last_limited = -math.inf
        self._starts: deque[float] = deque(maxlen=max(1, int(per_minute)))

    @property
    def rate_limited(self) -> int:
        """How many 429s the creates met."""
        return self.pause.refusals

    async def wait(self) -> None:
        """Return when the next call may start."""
        while True:
            now = self._clock()
            slot = max(now, self._next, self.pause.until)
            if len(self._starts) == self._starts.maxlen:
                slot = max(slot, self._starts[0] + self.window)  # no more than per_minute in any window
            if slot <= now:
                break
            await self._sleep(slot - now)
        self._next = max(slot + self.interval, now)
        self._starts.append(now)

    def answered(self) -> None:
        """Note a call that went through: a window without a 429 brings the pace back to its base."""
        self.pause.answered()
        if self.interval > self.base_interval and self._clock() - self._last_limited > self.window:
            self.interval = self.base_interval

    def limited(self, retry_after: float | None) -> float:
        """
        Note a 429: pause every call (:func:`refusal_pause`) and, once per pause, slow the pace.

        :param retry_after: the service's ``Retry-After``, in seconds, if it sent one.
        :return: the pause, in seconds.
        """
        now = self._clock()
        pause, fresh = self.pause.refused(now, retry_after)
        if fresh:
            self.interval = min(self.interval * self.SLOWDOWN, self.base_interval * self.SLOWEST)
        self._last_limited = now
        return pause


class RequestBudget:
    """
    How fast the polls of one connection may start: a pace (or none), a :class:`Pause` after a 429, and their
    adaptation. Each triggerer (each event loop) keeps its own; several of one account converge without talking to
    each other, as TCP's senders of one link do: a refusal cuts the pace by a factor (multiplicative decrease), and
    the pace grows back by addition.

    * With no ceiling the budget starts unlimited (and at the ceiling with one) until the first 429.
    * A 429 pauses every request (:func:`refusal_pause`: its ``Retry-After``, with jitter). The first refusal of a
      request started under the pace in force also cuts it: to :attr:`CUT` (90%) of the answers the service
      accepted in the second (ten buckets of :attr:`BUCKET`) up to the refused request's start (when there were at
      least :attr:`MIN_SAMPLE` of them: that count is its limit as seen), else to half the requests started then;
      and to at most :attr:`RATE_CUT` (85%) of the pace in force. Refusals of requests started before that cut
      (already in flight) only extend the pause.
    * While answers come fast and due polls wait for the pace, the pace goes back up: exponentially while no limit
      was seen or far below it (:attr:`SLOW_START_GAIN`), then by 5% of the limit seen per second up to 90% of it
      (:attr:`RETURN_GAIN`). From there:

      * with a ``ceiling`` (the connection's ``requests_per_minute``, split across its ``triggerers``) every budget
        adds the same, :attr:`SHARED_GAIN` of the ceiling per second: after each shared refusal the larger share
        is cut by more requests than the smaller, so the shares of several triggerers converge to equal;
      * without one, it creeps by 0.5% of the limit seen per second (:attr:`CREEP_GAIN`: an additive probe, which
        also finds a raised limit, or the rate another triggerer of the account left, again). A faster probe past
        the limit seen did worse in a model of two budgets under one limit of one-second windows: the budget that
        met no refusal kept growing while the other was cut.

    * The pace never exceeds ``ceiling`` (requests per second).

    Requests are admitted with a small burst tolerance (:attr:`BURST_SECONDS` ahead of the pace).

    :param ceiling: the most requests per second, or ``None`` for no ceiling.
    """

    #: How far ahead of the pace a request may start (spares a timer per request at high rates).
    BURST_SECONDS = 0.02
    #: The lowest pace, in requests per second.
    MIN_RATE = 0.2
    #: The window over which the accepted rate is measured, in buckets of :attr:`BUCKET` seconds.
    BUCKET = 0.1
    WINDOW_BUCKETS = 10
    #: Answers slower than this (seconds) do not count as "fast": no probing up on them.
    FAST_ANSWER = 2.0
    #: Accepted answers in the window before a refusal needed to take their count as the service's limit.
    MIN_SAMPLE = 10
    #: Far below any limit seen, each fast answer raises the pace by this much (it doubles about every 2 s).
    SLOW_START_GAIN = 0.35
    #: A cut keeps this share of what the service accepted (multiplicative decrease).
    CUT = 0.9
    #: ... and keeps at most this share of the pace in force.
    RATE_CUT = 0.85
    #: Below this share of the limit seen, the pace returns by :attr:`RETURN_GAIN` of it per second.
    NEAR = 0.9
    RETURN_GAIN = 0.05
    #: Within :attr:`NEAR` of the limit seen (and past it), the pace creeps up by this share of it per second.
    CREEP_GAIN = 0.005
    #: With a ceiling (the account's rate), every budget of the account adds the same: this share of it per second.
    SHARED_GAIN = 0.0025

    def __init__(self, ceiling: float | None = None) -> None:
        self.ceiling = ceiling
        #: requests per second, or ``None`` while unlimited
        self.rate: float | None = ceiling
        self.pause = Pause()
        #: incremented at every cut; a request records it when it starts
        self.epoch = 0
        #: the accepted rate when the service last refused (what probing is measured against)
        self.limit_seen: float | None = None
        self._tat = -math.inf  # theoretical arrival time of the next request (GCRA)
        self._held_at = -math.inf
        size = 2 * self.WINDOW_BUCKETS
        # per bucket of start time: [bucket number, starts, accepted answers]
        self._buckets: list[list[int]] = [[-1, 0, 0] for _ in range(size)]

    @property
    def paused_until(self) -> float:
        """When the pause after the last 429 ends (loop time)."""
        return self.pause.until

    @property
    def refusals(self) -> int:
        """How many 429s the polls met."""
        return self.pause.refusals

    def _bucket(self, started: float) -> list[int]:
        number = int(started / self.BUCKET)
        slot = self._buckets[number % len(self._buckets)]
        if slot[0] != number:
            slot[0], slot[1], slot[2] = number, 0, 0
        return slot

    def _counts_before(self, started: float) -> tuple[int, int]:
        """Starts and accepted answers among the requests started in the window before ``started``."""
        last = int(started / self.BUCKET)
        starts = accepted = 0
        for number, s, a in self._buckets:
            if last - self.WINDOW_BUCKETS < number <= last:
                starts += s
                accepted += a
        return starts, accepted

    def wait(self, now: float) -> float:
        """Seconds until the next request may start (0: now)."""
        if now < self.pause.until:
            return self.pause.until - now
        if self.rate is None:
            return 0.0
        return max(0.0, self._tat - self.BURST_SECONDS - now)

    def held_back(self, now: float) -> None:
        """Note that a due request waited for the pace (the budget, not the demand, was the limit)."""
        self._held_at = now

    def take(self, now: float) -> int:
        """Start a request now (after :meth:`wait` said 0); its epoch, to give back with its answer."""
        if self.rate is not None:
            self._tat = max(self._tat, now) + 1.0 / self.rate
        self._bucket(now)[1] += 1
        return self.epoch

    def answered(self, now: float, started: float) -> None:
        """
        A request started at ``started`` got an answer that was not a refusal.

        :param now: when it arrived.
        :param started: when the request started.
        """
        self._bucket(started)[2] += 1
        self.pause.answered()
        rate = self.rate
        if rate is None or now - started > self.FAST_ANSWER or now - self._held_at > 1.0:
            return
        seen = self.limit_seen
        if seen is None or rate < 0.5 * seen:
            rate += self.SLOW_START_GAIN  # per answer: the pace grows exponentially
        else:
            rate += self._gain(rate, seen) / rate  # per second: see _gain
        self.rate = rate if self.ceiling is None else min(rate, self.ceiling)

    def _gain(self, rate: float, seen: float) -> float:
        """How fast the pace grows at ``rate`` (requests per second, per second), ``seen`` the limit last met."""
        if rate < self.NEAR * seen:
            return self.RETURN_GAIN * seen
        if self.ceiling is not None:
            return self.SHARED_GAIN * self.ceiling  # additive, the same for every budget of the account: fair
        return self.CREEP_GAIN * seen

    def refused(self, now: float, started: float, epoch: int, retry_after: float | None) -> float:
        """
        A request got a 429: pause every request, and cut the pace once per refusal of the current pace.

        :param now: when the refusal arrived.
        :param started: when the refused request started.
        :param epoch: what :meth:`take` returned for it.
        :param retry_after: the service's ``Retry-After``, in seconds, if it sent one.
        :return: the pause, in seconds.
        """
        pause, _ = self.pause.refused(now, retry_after)
        if epoch != self.epoch:
            return pause  # started before the last cut: already accounted for
        self.epoch += 1
        starts, accepted = self._counts_before(started)
        if accepted >= self.MIN_SAMPLE:  # what the service let through: a measure of its limit
            self.limit_seen = float(accepted)
            rate = self.CUT * accepted
        else:  # too few answers to say (a stray 429, or a budget spent for a while): start slow, find it again
            self.limit_seen = None
            rate = 0.5 * starts
        if self.rate is not None:
            rate = min(rate, self.RATE_CUT * self.rate)
        rate = max(self.MIN_RATE, rate)
        self.rate = rate if self.ceiling is None else min(rate, self.ceiling)
        self._tat = self.pause.until
        log.warning(
            "CometAPI refused a status poll (429): pausing every poll of the connection for %.1fs, then at most "
            "%.1f requests per second.",
            pause,
            self.rate,
        )
        return pause


#: Run times kept per model, the most recent (see :class:`RunTimes`).
RUN_TIMES_KEPT = 32
#: Seconds the service's clock may run ahead of ours before :class:`RunTimes` stops putting polls off.
CLOCK_TOLERANCE = 1.0


class RunTimes:
    """
    How long one poller's predictions ran, per model: the shortest of the last :data:`RUN_TIMES_KEPT` that ended
    (from their ``created_at`` to their ``completed_at``, the service's own clock).

    A poller that is behind schedule (its due polls come faster than it can make them, so each prediction is
    polled less often than its ``poll_interval`` anyway) puts off the poll of a prediction that cannot have ended
    yet, to :meth:`earliest_end`: its polls then go to the predictions that may have ended, and the last of many
    predictions ending together is seen done sooner. On time, nothing is put off. It errs on the side of polling:

    * the bar is the *shortest* recent run of the model, a fast failure included;
    * a model with no ended run yet, or a prediction whose ``created_at`` is unknown, is never put off;
    * a timestamp later than our clock by more than :data:`CLOCK_TOLERANCE` means the service's clock runs ahead
      of ours, which would put polls off too long: from then on nothing is put off. A service clock running behind
      only makes polls come earlier than needed.
    """

    def __init__(self) -> None:
        self._runs: dict[str, deque[float]] = {}
        #: whether the service's timestamps have all been readable against our clock so far
        self.clocks_agree = True

    def noted(self, model: str, created: float | None, completed: float | None, now: float) -> None:
        """
        Note a prediction's timestamps, from an answer received at ``now``: an ended one's run time is kept.

        :param model: the prediction's model.
        :param created: its ``created_at``, in Unix seconds, if known.
        :param completed: its ``completed_at``, in Unix seconds, once it ended.
        :param now: our clock when the answer came, in Unix seconds.
        """
        if not self.clocks_agree:
            return
        if max(created or -math.inf, completed or -math.inf) > now + CLOCK_TOLERANCE:
            self.clocks_agree = False
            self._runs.clear()
            log.info("The service's clock runs ahead of this machine's: polls behind schedule are not put off.")
            return
        if created is None or completed is None or completed < created:
            return
        runs = self._runs.get(model)
        if runs is None:
            runs = self._runs[model] = deque(maxlen=RUN_TIMES_KEPT)
        runs.append(completed - created)

    def earliest_end(self, model: str, created: float) -> float | None:
        """
        When a prediction of ``model`` created at ``created`` could have ended at the earliest (Unix seconds).

        :param model: the prediction's model.
        :param created: its ``created_at``, in Unix seconds.
        :return: the time, or ``None`` when nothing is known (no ended run of the model, or clocks that disagree).
        """
        runs = self._runs.get(model)
        if not runs or not self.clocks_agree:
            return None
        return created + min(runs)
