"""The pacing rules on their own (and on a fake clock): which answers are retried, how a 429 and ``Retry-After``
pause requests, how the create pace and the poll budget adapt, how errors back off, and poll delays."""

from __future__ import annotations

import itertools

import pytest

from airflow_provider_cometflux.pacing import (
    CLOCK_TOLERANCE,
    RUN_TIMES_KEPT,
    Pacer,
    Pause,
    RequestBudget,
    RetryPolicy,
    RunTimes,
    is_retryable_status,
    parse_retry_after,
    poll_delays,
    refusal_pause,
)


def test_retry_policy():
    assert is_retryable_status(429) and is_retryable_status(524) and is_retryable_status(500)
    assert not is_retryable_status(500, "invalid_request")
    for status in (400, 401, 403, 404, 422):
        assert not is_retryable_status(status)
    policy = RetryPolicy(base_delay=1, max_delay=8)
    assert all(0 <= policy.delay(a) <= min(8, 2**a) for a in range(10) for _ in range(20))
    assert 5 <= policy.delay(0, retry_after=5) <= 6
    assert 40 <= policy.delay(0, retry_after=40) <= 41  # Retry-After is a floor, even above max_delay
    assert policy.honours(None) and policy.honours(120) and not policy.honours(121)


def test_parse_retry_after():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == pytest.approx(10.0)
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0


def test_poll_delays_start_quick_then_settle():
    delays = poll_delays(4.0)
    first = [next(delays) for _ in range(8)]
    assert 0.45 <= first[0] <= 0.5
    assert all(3.6 <= d <= 4.0 for d in first[-3:])  # jittered, never past poll_interval
    assert len({round(d, 6) for d in first[-3:]}) == 3


def test_a_429_pauses_for_retry_after_with_a_little_jitter_or_doubles_without():
    assert all(10 <= refusal_pause(10, 0) <= 10.5 for _ in range(20))
    assert refusal_pause(None, 0) == 1.0 and refusal_pause(None, 3) == 8.0
    assert 120 <= refusal_pause(3600, 0) <= 121  # no pause is longer than the longest Retry-After waited for
    pause = Pause()
    assert pause.refused(0.0, 2.0)[1] and not pause.refused(1.0, 0.5)[1]  # the second fell within the first
    assert pause.left(1.0) >= 1.0 and pause.refusals == 2


def test_errors_back_off_with_full_jitter_below_a_doubling_cap():
    policy = RetryPolicy(base_delay=0.5, max_delay=30)
    assert all(0 <= policy.backoff(a) <= min(30, 0.5 * 2**a) for a in range(10) for _ in range(20))


# -- the create pace ------------------------------------------------------------------------------------------


class FakeClock:
    """A clock that only moves when something sleeps on it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


async def test_pacer_spaces_calls_evenly():
    clock = FakeClock()
    pacer = Pacer(600, clock=clock.time, sleep=clock.sleep)
    starts = []
    for _ in range(5):
        await pacer.wait()
        starts.append(clock.now)
    assert [round(b - a, 6) for a, b in itertools.pairwise(starts)] == [0.1] * 4


async def test_pacer_never_starts_more_than_the_limit_within_a_window():
    clock = FakeClock()
    pacer = Pacer(6, clock=clock.time, sleep=clock.sleep)  # one per 10 s, six per minute
    starts = []
    for _ in range(8):
        await pacer.wait()
        pacer.answered()
        starts.append(clock.now)
    for i in range(len(starts) - 6):
        assert starts[i + 6] - starts[i] >= 60


async def test_pacer_pauses_and_slows_on_429_then_recovers():
    clock = FakeClock()
    pacer = Pacer(600, clock=clock.time, sleep=clock.sleep)
    await pacer.wait()
    pacer.limited(2.0)
    pacer.limited(2.0)  # the same pause: slows once
    before = clock.now
    await pacer.wait()
    assert clock.now - before >= 2.0
    assert pacer.interval == pytest.approx(0.125) and pacer.rate_limited == 2
    clock.now += 61
    pacer.answered()
    assert pacer.interval == pytest.approx(0.1)


def test_pacer_refuses_a_rate_of_zero():
    with pytest.raises(ValueError):
        Pacer(0)


# -- the poll budget -----------------------------------------------------------------------------


def test_budget_unlimited_until_the_first_429():
    budget = RequestBudget()
    now = 100.0
    for _ in range(500):
        assert budget.wait(now) == 0
        budget.take(now)
    assert budget.rate is None


def test_budget_first_refusal_sets_a_pace_below_what_was_accepted():
    budget = RequestBudget()
    now = 100.0
    epochs = []
    for i in range(300):  # 300 requests within 0.3 s; the service accepted the first 200
        t = now + i * 0.001
        epochs.append(budget.take(t))
        if i < 200:
            budget.answered(t + 0.002, t)
    pause = budget.refused(now + 0.3, now + 0.2, epochs[200], retry_after=1.0)
    assert 1.0 <= pause <= 1.05
    assert budget.rate == pytest.approx(180.0)
    assert budget.wait(now + 0.5) > 0.7  # paused
    # refusals of requests started before the cut change nothing more
    for i in range(201, 300):
        budget.refused(now + 0.31, now + i * 0.001, epochs[i], retry_after=1.0)
    assert budget.rate == pytest.approx(180.0) and budget.refusals == 100


def test_budget_paces_and_never_passes_the_ceiling():
    budget = RequestBudget(ceiling=10.0)
    now = 0.0
    starts = 0
    while now < 10.0:
        if budget.wait(now) == 0:
            budget.held_back(now)
            budget.take(now)
            budget.answered(now + 0.01, now)
            starts += 1
        now += 0.001
    assert budget.rate == 10.0
    assert 99 <= starts <= 102


def _held_second(budget: RequestBudget, now: float, rate: float) -> float:
    """One second of answers at ``rate``, due requests waiting for the pace; returns the time after it."""
    for _ in range(int(rate)):
        budget.held_back(now)
        budget.take(now)
        budget.answered(now + 0.01, now)
        now += 1 / rate
    return now


def test_budget_probes_up_only_while_requests_wait_for_it():
    budget = RequestBudget()
    budget.rate, budget.limit_seen = 100.0, 200.0
    now = 0.0
    for _ in range(100):  # one second of answers at the pace, nobody waiting
        budget.take(now)
        budget.answered(now + 0.01, now)
        now += 0.01
    assert budget.rate == 100.0
    now = _held_second(budget, now, 100)  # a second in which the pace held requests back: + 5% of 200 per second
    assert 108 < budget.rate < 112
    budget.rate = 190.0  # near the rate last refused: 0.5% of it per second
    now = _held_second(budget, now, 190)
    assert 190.5 < budget.rate < 191.5


def test_budget_measures_what_was_accepted_over_one_second():
    """The limit seen is the answers accepted in the second up to the refused request: not a tenth more."""
    budget = RequestBudget()
    epoch = 0
    for i in range(300):  # 100 requests a second for 3 s, every one accepted
        t = i / 100
        epoch = budget.take(t)
        budget.answered(t + 0.002, t)
    budget.refused(3.0, 2.995, epoch, retry_after=1.0)
    assert budget.limit_seen == pytest.approx(100, abs=1)


def test_budgets_sharing_a_ceiling_grow_alike_so_their_shares_converge():
    """With the account's rate known, every budget adds the same requests per second: the smaller catches up."""
    small, large = RequestBudget(ceiling=200.0), RequestBudget(ceiling=200.0)
    small.rate, small.limit_seen = 50.0, 50.0
    large.rate, large.limit_seen = 140.0, 140.0
    now = 0.0
    for _ in range(4):
        now = max(_held_second(small, now, small.rate), _held_second(large, now, large.rate))
    assert small.rate - 50.0 == pytest.approx(large.rate - 140.0, rel=0.05)  # additive: 0.25% of 200 per second
    assert small.rate - 50.0 == pytest.approx(4 * 0.0025 * 200, rel=0.1)
    # a shared refusal cuts each by the same factor: the gap shrinks (multiplicative decrease, additive increase)
    gap = large.rate - small.rate
    for budget in (small, large):
        epoch = budget.take(now)
        budget.refused(now + 0.01, now, epoch, retry_after=1.0)
    assert large.rate - small.rate < gap
    large.rate = 199.9
    _held_second(large, now + 2, 199)
    assert large.rate == 200.0  # never past the ceiling


def test_budget_pause_without_retry_after_grows():
    budget = RequestBudget()
    epoch = budget.take(0.0)
    assert budget.refused(0.1, 0.0, epoch, None) == pytest.approx(1.0)
    epoch = budget.take(1.2)
    assert budget.refused(1.3, 1.2, epoch, None) == pytest.approx(2.0)
    budget.answered(3.5, 3.4)
    epoch = budget.take(3.6)
    assert budget.refused(3.7, 3.6, epoch, None) == pytest.approx(1.0)


def test_budget_a_stray_refusal_starts_slow_and_grows_back_fast():
    budget = RequestBudget()
    epoch = budget.take(0.0)  # the very first request is refused: no measure of any limit
    budget.refused(0.01, 0.0, epoch, retry_after=0.5)
    assert budget.limit_seen is None and budget.rate == pytest.approx(0.5)  # half the requests started
    now = 0.5
    while now < 10.0:  # ten seconds of demand above the pace, every answer fast
        wait = budget.wait(now)
        if wait == 0:
            budget.take(now)
            budget.answered(now + 0.005, now)
        else:
            budget.held_back(now)
        now += 0.001
    assert budget.rate is not None and budget.rate > 8  # exponential (0.5 to 9.6 in 9.5 s): soon forgotten


# -- run times: which late polls can wait ------------------------------------------------------------------------


def test_run_times_know_nothing_until_a_run_of_the_model_ended():
    runs = RunTimes()
    assert runs.earliest_end("m", 100.0) is None
    runs.noted("m", 100.0, None, 105.0)  # still running: nothing learnt
    assert runs.earliest_end("m", 100.0) is None
    runs.noted("m", 100.0, 108.0, 109.0)
    assert runs.earliest_end("m", 200.0) == 208.0
    assert runs.earliest_end("other", 200.0) is None  # per model


def test_run_times_keep_the_shortest_recent_run_a_fast_failure_included():
    runs = RunTimes()
    runs.noted("m", 0.0, 8.0, 9.0)
    runs.noted("m", 0.0, 1.5, 9.0)  # a failure after 1.5 s sets the bar
    runs.noted("m", 0.0, 9.0, 9.5)
    assert runs.earliest_end("m", 10.0) == 11.5
    for _ in range(RUN_TIMES_KEPT):  # only the most recent runs count
        runs.noted("m", 0.0, 8.0, 9.0)
    assert runs.earliest_end("m", 10.0) == 18.0


def test_run_times_ignore_a_run_without_both_ends_or_ending_before_it_began():
    runs = RunTimes()
    runs.noted("m", None, 8.0, 9.0)
    runs.noted("m", 5.0, 4.0, 9.0)
    assert runs.earliest_end("m", 10.0) is None


def test_a_service_clock_ahead_of_ours_stops_every_estimate():
    runs = RunTimes()
    runs.noted("m", 0.0, 8.0, 9.0)
    runs.noted("m", 20.0 + CLOCK_TOLERANCE + 0.5, None, 20.0)  # created "in the future"
    assert not runs.clocks_agree
    assert runs.earliest_end("m", 10.0) is None
    runs.noted("m", 0.0, 8.0, 9.0)
    assert runs.earliest_end("m", 10.0) is None  # for good: nothing is put off any more


def test_a_service_clock_a_little_ahead_or_behind_is_tolerated():
    runs = RunTimes()
    runs.noted("m", 10.0 + CLOCK_TOLERANCE - 0.1, None, 10.0)
    runs.noted("m", 0.0, 8.0, 30.0)  # behind: polls only come earlier than needed
    assert runs.clocks_agree and runs.earliest_end("m", 10.0) == 18.0
