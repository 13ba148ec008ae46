"""Creating predictions in the worker: pacing, resume decisions, and never paying twice."""

from __future__ import annotations

import json
import time

import pytest

from airflow_provider_cometflux.exceptions import CometAPIAuthError, PredictionMayExistError
from airflow_provider_cometflux.hooks.cometapi import CometAPIHook, close_async_session
from airflow_provider_cometflux.pacing import RetryPolicy
from airflow_provider_cometflux.submission import submit

SCHNELL = "black-forest-labs/flux-schnell"
FAST = RetryPolicy(max_retries=3, base_delay=0.001, max_delay=0.01)


@pytest.fixture(autouse=True)
async def _close_shared_session():
    yield
    await close_async_session()


def payloads(*prompts: str) -> list[dict]:
    return [{"prompt": p} for p in prompts]


@pytest.mark.cometapi_simulator(run_seconds=0.1)
async def test_every_prompt_is_created_once_in_order_and_reported_as_it_comes(cometapi_connection):
    sim = cometapi_connection
    seen: list[list] = []
    result = await submit(CometAPIHook(), SCHNELL, payloads("a", "b", "c"), on_created=seen.append)
    assert all(result.ids) and len(set(result.ids)) == 3 and result.errors == {}
    assert [r["prompt"] for r in sim.create_requests] == ["a", "b", "c"]
    assert seen[-1] == result.ids and len(seen) == 3  # every new id reported at once, to be saved
    assert sim.stats["created"] == 3


@pytest.mark.cometapi_simulator(run_seconds=0.1, rate_limit_per_minute=3, rate_limit_window=1.0)
async def test_429_pauses_creates_and_nothing_is_created_twice(cometapi_connection):
    sim = cometapi_connection
    result = await submit(CometAPIHook(), SCHNELL, payloads(*(f"kite {i}" for i in range(6))), creates_per_minute=6000)
    assert all(result.ids) and result.rate_limited >= 1 and sim.stats["rate_limited"] >= 1
    assert sim.stats["created"] == 6


@pytest.mark.cometapi_simulator(run_seconds=0.1)
async def test_a_spent_limit_outlasting_the_hooks_retries_delays_creates_without_failing_them(cometapi_connection):
    sim = cometapi_connection
    sim.add_fault("create", "throttle", delay=1.5)  # Replicate's 429 without Retry-After, until it resets
    result = await submit(CometAPIHook(retry_policy=FAST), SCHNELL, payloads("a", "b"))
    assert all(result.ids) and result.errors == {}
    assert sim.stats["created"] == 2 and sim.stats["responses"]["429"] >= 2


@pytest.mark.cometapi_simulator(run_seconds=0.1)
async def test_a_create_whose_answer_is_lost_is_reported_never_resent(cometapi_connection):
    sim = cometapi_connection
    sim.add_fault("create", "drop_after_create", times=1)
    result = await submit(CometAPIHook(), SCHNELL, payloads("first", "second", "third"))
    assert result.ids[0] is None and isinstance(result.errors[0], PredictionMayExistError)
    assert "may exist" in result.errors[0].message and all(result.ids[1:])
    assert sim.stats["creates"] == 3  # the lost one was not sent again


@pytest.mark.cometapi_simulator(run_seconds=0.1)
async def test_a_refused_create_fails_its_prompt_only(cometapi_connection):
    cometapi_connection.add_fault("create", "status", status=422, message="input.seed: bad", times=1)
    result = await submit(CometAPIHook(retry_policy=FAST), SCHNELL, payloads("a", "b"))
    assert result.ids[0] is None and "input.seed: bad" in result.errors[0].message and result.ids[1]


@pytest.mark.cometapi_simulator(run_seconds=0.1, api_key="the-right-key")
async def test_a_refused_key_stops_creating_at_once(cometapi_simulator, monkeypatch):
    sim = cometapi_simulator
    conn = {"conn_type": "cometapi", "host": sim.base_url, "password": "a-wrong-key"}
    monkeypatch.setenv("AIRFLOW_CONN_COMETAPI_DEFAULT", json.dumps(conn))
    with pytest.raises(CometAPIAuthError):
        await submit(CometAPIHook(), SCHNELL, payloads(*(f"kite {i}" for i in range(5))), creates_per_minute=60)
    assert sim.stats["created"] == 0 and sim.stats["creates"] == 1


@pytest.mark.cometapi_simulator(run_seconds=0.3)
async def test_creating_stops_at_the_deadline(cometapi_connection):
    result = await submit(
        CometAPIHook(), SCHNELL, payloads(*(f"kite {i}" for i in range(30))), deadline=time.time() + 0.3
    )
    made = [pid for pid in result.ids if pid]
    assert 0 < len(made) < 30 and len(result.errors) == 30 - len(made)
    assert "timeout passed first" in next(iter(result.errors.values())).message
    assert cometapi_connection.stats["created"] == len(made)


@pytest.mark.cometapi_simulator(run_seconds=0.1)
async def test_resume_reconnects_keeps_successes_and_submits_failures_anew(cometapi_connection):
    sim = cometapi_connection
    earlier = await submit(CometAPIHook(), SCHNELL, payloads("kept", "lost [sim:failed]", "running [sim:stuck]"))
    sim.finish([earlier.ids[0], earlier.ids[1]])
    created = sim.stats["created"]
    retry = await submit(
        CometAPIHook(), SCHNELL, payloads("kept", "lost [sim:failed]", "running [sim:stuck]"), saved=earlier.ids
    )
    assert retry.ids[0] == earlier.ids[0] and retry.ids[2] == earlier.ids[2]  # succeeded, still running
    assert retry.ids[1] != earlier.ids[1]  # ended failed: created anew
    assert sim.stats["created"] == created + 1
    assert set(retry.known) == {0}


@pytest.mark.cometapi_simulator(run_seconds=0.1)
async def test_resume_submits_anew_a_prediction_that_is_gone(cometapi_connection):
    result = await submit(CometAPIHook(), SCHNELL, payloads("a"), saved=["doesnotexist"])
    assert result.ids[0] not in (None, "doesnotexist") and cometapi_connection.stats["created"] == 1


@pytest.mark.cometapi_simulator(run_seconds=0.1)
async def test_creating_stops_before_spent_plus_in_flight_passes_the_budget(cometapi_connection):
    from airflow_provider_cometflux.cost import BUDGET_STOP, CreateBudget, price_table

    sim = cometapi_connection
    prompts = payloads(*(f"kite {i}" for i in range(5)))
    budget = CreateBudget(0.0075, SCHNELL, prompts, price_table())  # $0.003 an image: two fit
    result = await submit(CometAPIHook(), SCHNELL, prompts, budget=budget)
    assert all(result.ids[:2]) and result.ids[2:] == [None, None, None]
    assert sorted(result.errors) == [2, 3, 4]
    assert all(error.message.startswith(BUDGET_STOP) for error in result.errors.values())
    assert "$0.0075 would be passed" in result.errors[2].message
    assert sim.stats["creates"] == 2  # the rest never sent


@pytest.mark.cometapi_simulator(run_seconds=0.1)
async def test_reused_positions_are_never_created(cometapi_connection):
    result = await submit(CometAPIHook(), SCHNELL, payloads("a", "b", "c"), skip={0, 2})
    assert result.ids[0] is None and result.ids[2] is None and result.ids[1] and result.errors == {}
    assert [r["prompt"] for r in cometapi_connection.create_requests] == ["b"]
