"""One retry and polling policy for the sync and the async paths alike.

Only decisions and delays live here; the hook does the I/O and asks this module what to do next.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

#: Statuses worth another try (DESIGN.md): rate limited, gateway and overload errors, Cloudflare's 524.
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504, 524})

#: How many polls in a row may fail transiently (each after its own retries) before a wait gives up.
#: The inline wait and the trigger use the same bound.
MAX_CONSECUTIVE_POLL_ERRORS = 5


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
    max_retry_after: float = 120.0

    def honours(self, retry_after: float | None) -> bool:
        """
        Whether a retry may wait out the service's ``Retry-After`` (always, when it sent none).

        :param retry_after: the service's ``Retry-After``, in seconds.
        """
        return retry_after is None or retry_after <= self.max_retry_after

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """
        Seconds to wait before retry number ``attempt + 1``.

        "Full jitter" backoff spreads retries of many clients apart; a ``Retry-After`` the service sent is a
        floor, with a little jitter on top so that clients told the same time do not return in lockstep.
        The floor is kept even above ``max_delay``; callers check :meth:`honours` first.

        :param attempt: how many tries failed so far, minus one (0 for the first retry).
        :param retry_after: the service's ``Retry-After``, in seconds.
        """
        ceiling = min(self.max_delay, self.base_delay * (2**attempt))
        backoff = random.uniform(0, ceiling)
        if retry_after is not None:
            return retry_after + random.uniform(0, min(1.0, ceiling))
        return backoff


def poll_delays(poll_interval: float, *, first: float = 0.5) -> Iterator[float]:
    """
    Delays between polls: quick at first (a fast model is seen done soon), then every ``poll_interval``.

    Each delay is cut by up to 10% at random, so that many waiters started together drift apart, while
    ``poll_interval`` stays the longest gap: a prediction is seen done at most ``poll_interval`` after it ends.

    :param poll_interval: the steady delay, in seconds.
    :param first: the first delay, in seconds (never more than ``poll_interval``).
    """
    delay = min(first, poll_interval)
    while True:
        yield delay * random.uniform(0.9, 1.0)
        delay = min(poll_interval, delay * 2)
