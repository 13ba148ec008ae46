"""The faces' argument checks: each names the field, the value and what is allowed."""

from __future__ import annotations

import math

import pytest

from airflow_provider_cometflux.checks import check_count, check_queue, check_rate, check_seconds
from airflow_provider_cometflux.exceptions import AirflowFailException, CometFluxInputError


@pytest.mark.parametrize("value", [0.5, 3, 600])
def test_seconds_above_zero_are_floats(value):
    assert check_seconds("timeout", value) == float(value)


@pytest.mark.parametrize("value", [0, -1, "10", True, None, math.nan])
def test_seconds_refuse_anything_but_a_number_above_zero(value):
    with pytest.raises(CometFluxInputError, match=r"timeout: .* is not allowed; expected a number above 0"):
        check_seconds("timeout", value)


def test_seconds_may_be_zero_when_asked():
    assert check_seconds("defer_after", 0, zero=True) == 0.0
    with pytest.raises(CometFluxInputError, match="expected a number of seconds >= 0"):
        check_seconds("defer_after", -0.1, zero=True)


@pytest.mark.parametrize("value", [0, -5, "600", False, math.nan])
def test_a_rate_is_a_number_per_minute_above_zero(value):
    with pytest.raises(CometFluxInputError) as caught:
        check_rate("creates_per_minute", value)
    assert str(caught.value) == f"creates_per_minute: {value!r} is not allowed; expected a number per minute above 0."
    assert "seconds" not in str(caught.value)


def test_a_rate_is_a_float():
    assert check_rate("creates_per_minute", 600) == 600.0


@pytest.mark.parametrize(("value", "high", "expected"), [(0, None, ">= 1"), (61, 60, "1..60"), (2.0, None, ">= 1")])
def test_counts_are_integers_in_their_span(value, high, expected):
    with pytest.raises(CometFluxInputError, match=f"expected an integer {expected}"):
        check_count("prefer_wait", value, high=high)


def test_a_count_in_its_span_is_returned():
    assert check_count("prefer_wait", 60, high=60) == 60


def test_a_bad_argument_fails_without_retries():
    with pytest.raises(AirflowFailException):
        check_count("download_concurrency", True)


def test_a_queue_is_none_or_one_name():
    assert check_queue("trigger_queue", None) is None
    assert check_queue("trigger_queue", "cometflux") == "cometflux"
    for bad in ("", " q", "a,b", 1):
        with pytest.raises(CometFluxInputError, match=f"trigger_queue: {bad!r} is not allowed"):
            check_queue("trigger_queue", bad)
