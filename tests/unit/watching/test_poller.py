"""The shared poller against the real simulator on loopback, and its request budget on a fake clock."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import pytest
import requests

from airflow_provider_cometflux.exceptions import (
    CometAPIConnectionConfigError,
    CometAPIError,
    PredictionTimeoutError,
)
from airflow_provider_cometflux.hooks import connection as hook_connection
from airflow_provider_cometflux.models import Prediction
from airflow_provider_cometflux.testing.simulator import CometAPISimulator
from airflow_provider_cometflux.watching import poller as poller_module
from airflow_provider_cometflux.watching.poller import current_poller, watch_prediction

CONN_ID = "poller_test"


@pytest.fixture
def sim() -> Iterator[CometAPISimulator]:
    with CometAPISimulator("127.0.0.1", 0, run_seconds=0.3) as simulator:
        yield simulator


def point_at(monkeypatch: pytest.MonkeyPatch, sim: CometAPISimulator, conn_id: str = CONN_ID, **extra: object) -> str:
    conn: dict[str, object] = {"conn_type": "cometapi", "host": sim.base_url, "password": "sk-poller-test-key"}
    if extra:
        conn["extra"] = extra
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
    return conn_id


@pytest.fixture
def conn(monkeypatch: pytest.MonkeyPatch, sim: CometAPISimulator) -> str:
    return point_at(monkeypatch, sim)


def create(sim: CometAPISimulator, prompt: str = "a cat") -> str:
    url = f"{sim.base_url}/replicate/v1/models/black-forest-labs/flux-schnell/predictions"
    resp = requests.post(url, json={"input": {"prompt": prompt}}, headers={"Authorization": "Bearer k"}, timeout=10)
    resp.raise_for_status()
    return resp.json()["id"]


def watch(pid: str, conn_id: str = CONN_ID, *, interval: float = 0.1, end_in: float | None = 30, **kw) -> asyncio.Task:
    end_time = None if end_in is None else time.time() + end_in
    return asyncio.ensure_future(watch_prediction(conn_id, pid, poll_interval=interval, end_time=end_time, **kw))


async def until(condition, limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def stopped(conn_id: str = CONN_ID) -> None:
    await until(lambda: current_poller(conn_id) is None)


# -- against the simulator -----------------------------------------------------------------------------------


async def test_returns_the_terminal_prediction(sim, conn):
    ok, failed = create(sim), create(sim, "a cat [sim:failed]")
    first, second = await asyncio.wait_for(asyncio.gather(watch(ok), watch(failed)), 10)
    assert isinstance(first, Prediction) and first.status == "succeeded" and first.id == ok
    assert first.output_urls and all(url.startswith(sim.base_url) for url in first.output_urls)
    assert second.status == "failed" and second.id == failed
    await stopped()


async def test_an_unknown_status_is_in_flight(monkeypatch, caplog):
    from aiohttp import web

    answers = iter(["queued", "queued", "succeeded"])

    async def get(request: web.Request) -> web.Response:
        status = next(answers, "succeeded")
        return web.json_response({"id": request.match_info["pid"], "status": status, "output": ["http://x/1.png"]})

    app = web.Application()
    app.router.add_get("/replicate/v1/predictions/{pid}", get)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        conn = {"conn_type": "cometapi", "host": f"http://127.0.0.1:{port}", "password": "sk-poller-test-key"}
        monkeypatch.setenv("AIRFLOW_CONN_POLLER_ODD", json.dumps(conn))
        with caplog.at_level("WARNING"):
            prediction = await asyncio.wait_for(watch("p1odd", "poller_odd", interval=0.05), 10)
        assert prediction.status == "succeeded"
        assert sum("unknown status 'queued'" in r.getMessage() for r in caplog.records) == 1  # once per change
        await stopped("poller_odd")
    finally:
        await runner.cleanup()


async def test_timeout_says_how_long_it_waited_and_the_last_status(sim, conn):
    pid = create(sim, "a cat [sim:stuck]")
    started = time.monotonic()
    with pytest.raises(PredictionTimeoutError) as info:
        await asyncio.wait_for(watch(pid, end_in=1.0), 10)
    waited = time.monotonic() - started
    assert 0.9 <= waited < 3
    assert info.value.prediction_id == pid
    assert "gave up after 1s" in info.value.message and "last status 'processing'" in info.value.message
    assert "last poll failed" not in info.value.message
    await stopped()


async def test_timeout_names_the_last_poll_error(sim, conn):
    pid = create(sim, "a cat [sim:stuck]")
    sim.add_fault("get", "status", status=503, times=None)
    with pytest.raises(PredictionTimeoutError) as info:
        await asyncio.wait_for(watch(pid, end_in=1.0, max_consecutive_errors=100), 10)
    assert "the last poll failed" in info.value.message and "503" in info.value.message


async def test_a_deadline_already_past_polls_nothing(sim, conn):
    pid = create(sim)
    with pytest.raises(PredictionTimeoutError):
        await watch_prediction(CONN_ID, pid, poll_interval=1, end_time=time.time() - 1)
    assert sim.stats["gets"] == 0


async def test_a_non_transient_error_is_raised_at_once(sim, conn):
    sim_gets = sim.stats["gets"]
    with pytest.raises(CometAPIError) as info:
        await asyncio.wait_for(watch("doesnotexist", max_consecutive_errors=5), 5)
    assert info.value.http_status == 404 and not info.value.transient
    assert sim.stats["gets"] - sim_gets == 1


async def test_a_missing_connection_fails_every_watcher(sim, monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_NO_SUCH_CONN", raising=False)
    tasks = [watch(create(sim), "no_such_conn") for _ in range(3)]
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
    assert all(isinstance(r, CometAPIConnectionConfigError) for r in results)
    assert "no_such_conn" in str(results[0])
    assert sim.stats["gets"] == 0
    await stopped("no_such_conn")


async def test_transient_errors_are_tolerated_up_to_the_limit(sim, conn):
    pid = create(sim)
    sim.add_fault("get", "status", status=503, times=2)
    sim.add_fault("get", "drop", times=1)
    prediction = await asyncio.wait_for(watch(pid, max_consecutive_errors=4), 20)
    assert prediction.status == "succeeded"
    assert sim.stats["gets"] >= 4


async def test_n_transient_errors_in_a_row_raise_the_last(sim, conn):
    pid = create(sim)
    sim.add_fault("get", "status", status=503, times=None)
    with pytest.raises(CometAPIError) as info:
        await asyncio.wait_for(watch(pid, max_consecutive_errors=3), 20)
    assert info.value.http_status == 503 and "3 polls in a row" in info.value.message
    assert sim.stats["gets"] == 3  # the poller's hook retries nothing by itself


async def test_a_429_pauses_every_watcher(sim, conn):
    ids = [create(sim, "a cat [sim:stuck]") for _ in range(8)]
    sim.add_fault("get", "status", status=429, retry_after=1.5, times=1)
    tasks = [watch(pid) for pid in ids]
    await until(lambda: sim.stats["responses"].get("429", 0) >= 1)
    refused_at = time.monotonic()
    await asyncio.sleep(0.2)  # requests sent before the 429 came back are answered by now
    during = sim.stats["gets"]
    await asyncio.sleep(max(0.0, refused_at + 1.3 - time.monotonic()))
    assert sim.stats["gets"] == during, "a status request was sent during the pause"
    await until(lambda: sim.stats["gets"] > during + 3, limit=5)  # and polling resumes after it
    poller = current_poller(CONN_ID)
    assert poller is not None and poller.budget.refusals == 1 and poller.budget.rate is not None
    sim.finish(ids)
    results = await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert [r.status for r in results] == ["succeeded"] * len(ids)


async def test_429s_never_count_as_a_predictions_errors(sim, conn):
    pid = create(sim)
    sim.add_fault("get", "status", status=429, retry_after=0.1, times=4)
    prediction = await asyncio.wait_for(watch(pid, max_consecutive_errors=2), 20)
    assert prediction.status == "succeeded"


async def test_cancelling_one_watcher_leaves_the_others_and_requests_in_flight_alone(sim, conn):
    shared, alone = create(sim, "a cat [sim:stuck]"), create(sim, "a dog [sim:stuck]")
    first, second, third = watch(shared), watch(shared), watch(alone)
    await until(lambda: sim.stats["gets"] >= 2)
    poller = current_poller(CONN_ID)
    assert poller is not None
    sim.add_fault("get", "slow", delay=0.5, times=None)
    await until(lambda: poller.in_flight >= 2)
    in_flight_tasks = list(poller._tasks)
    first.cancel()  # one of two watchers of `shared`, while its poll is in flight
    third.cancel()  # the only watcher of `alone`, while its poll is in flight
    await asyncio.gather(first, third, return_exceptions=True)
    assert first.cancelled() and third.cancelled()
    assert set(poller.entries) == {shared}
    await asyncio.wait(in_flight_tasks, timeout=5)
    assert all(t.done() and not t.cancelled() for t in in_flight_tasks), "a request in flight was cancelled"
    sim.clear_faults()
    sim.finish([shared, alone])
    assert (await asyncio.wait_for(second, 10)).status == "succeeded"
    assert poller.answers == poller.requests
    await stopped()


async def test_watchers_of_one_id_share_one_registration(sim, conn):
    pid = create(sim, "a cat [sim:stuck]")
    slow = watch(pid, interval=5.0)
    await until(lambda: sim.stats["gets"] >= 1)
    fast = watch(pid, interval=0.1)
    await asyncio.sleep(0)  # the task registers
    poller = current_poller(CONN_ID)
    assert poller is not None and len(poller.entries) == 1
    assert poller.entries[pid].interval == 0.1 and len(poller.entries[pid].watchers) == 2
    await asyncio.sleep(1.0)
    gets = sim.stats["gets"]
    assert 5 <= gets <= 15  # one schedule at 0.1 s (quick-first delays), not one per watcher
    sim.finish([pid])
    first, second = await asyncio.wait_for(asyncio.gather(slow, fast), 10)
    assert first.status == second.status == "succeeded" and first.raw == second.raw
    await stopped()


async def test_the_connections_ceiling_paces_every_poll(sim, monkeypatch):
    conn_id = point_at(monkeypatch, sim, "poller_ceiling", requests_per_minute=120)
    ids = [create(sim, "a cat [sim:stuck]") for _ in range(6)]
    tasks = [watch(pid, conn_id) for pid in ids]
    await until(lambda: sim.stats["gets"] >= 1)
    started = time.monotonic()
    first = sim.stats["gets"]
    await asyncio.sleep(2.0)
    elapsed = time.monotonic() - started
    poller = current_poller(conn_id)
    assert poller is not None and poller.budget.ceiling == 2.0 and poller.budget.rate == 2.0
    sent = sim.stats["gets"] - first
    # 2 per second (unpaced, 6 predictions at 0.1 s would make about 100): a little burst tolerance aside
    assert 2 <= sent <= 2 * elapsed + 2
    sim.finish(ids)
    results = await asyncio.wait_for(asyncio.gather(*tasks), 20)
    assert all(r.status == "succeeded" for r in results)


async def test_a_bad_ceiling_is_a_connection_error(sim, monkeypatch):
    conn_id = point_at(monkeypatch, sim, "poller_bad_ceiling", requests_per_minute="fast")
    with pytest.raises(CometAPIConnectionConfigError, match="requests_per_minute"):
        await asyncio.wait_for(watch(create(sim), conn_id), 10)


async def test_the_poller_stops_when_nothing_is_watched(sim, conn):
    pid = create(sim)
    task = watch(pid)
    await until(lambda: current_poller(CONN_ID) is not None)
    poller = current_poller(CONN_ID)
    assert poller is not None
    await asyncio.wait_for(task, 10)
    await asyncio.wait_for(poller.task, 5)  # its dispatcher ended, and closed its hook
    assert current_poller(CONN_ID) is None and not poller.entries and poller.in_flight == 0
    assert asyncio.get_running_loop() not in hook_connection._ASYNC_SESSIONS  # the last user closed the pool
    again = await asyncio.wait_for(watch(create(sim)), 10)  # a new watcher gets a new poller
    assert again.status == "succeeded"
    await stopped()


async def test_a_cancelled_last_watcher_stops_the_poller(sim, conn):
    task = watch(create(sim, "a cat [sim:stuck]"), interval=0.1)
    await until(lambda: sim.stats["gets"] >= 2)
    poller = current_poller(CONN_ID)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert poller is not None
    await asyncio.wait_for(poller.task, 5)
    assert current_poller(CONN_ID) is None


async def test_many_watchers_earliest_due_first_under_a_tight_ceiling(sim, monkeypatch):
    conn_id = point_at(monkeypatch, sim, "poller_tight", requests_per_minute=600)  # 10 per second
    ids = [create(sim, "a cat [sim:stuck]") for _ in range(20)]
    tasks = [watch(pid, conn_id, interval=0.2) for pid in ids]
    await asyncio.sleep(1.0)
    sim.finish(ids)
    ended = time.monotonic()
    results = await asyncio.wait_for(asyncio.gather(*tasks), 20)
    took = time.monotonic() - ended
    assert all(r.status == "succeeded" for r in results)
    # every prediction needs one more poll at 10/s: about 2 s, however many were overdue before
    assert took < 2.0 + 2.5


async def test_behind_schedule_polls_wait_until_a_prediction_could_have_ended(sim, monkeypatch):
    conn_id = point_at(monkeypatch, sim, "poller_behind", requests_per_minute=240)  # 4 polls a second
    keeper = watch(create(sim, "a cat [sim:stuck]"), conn_id, interval=5)  # keeps the poller and what it learnt
    teacher = create(sim, "a cat [sim:slow=4]")
    first = await asyncio.wait_for(watch(teacher, conn_id, interval=0.2), 15)  # the model's runs take 4 s
    poller = current_poller(conn_id)
    assert first.status == "succeeded" and poller is not None
    assert poller.run_times.earliest_end(first.raw["model"], 0.0) == pytest.approx(4.0, abs=0.01)
    polls: dict[str, int] = {}
    ask = poller.hook.aget_prediction

    async def counted(pid: str, **kwargs):  # the network edge: count each prediction's polls
        polls[pid] = polls.get(pid, 0) + 1
        return await ask(pid, **kwargs)

    monkeypatch.setattr(poller.hook, "aget_prediction", counted)
    ids = [create(sim, "a cat [sim:slow=4]") for _ in range(4)]
    # each wants a poll every 0.01 s, 400 a second together against a ceiling of 4: always behind schedule
    results = await asyncio.wait_for(asyncio.gather(*(watch(pid, conn_id, interval=0.01) for pid in ids)), 30)
    assert all(r.status == "succeeded" for r in results)
    # polled in turn, each would be asked about once a second for 4 s; put off, each is asked once, then once
    # when it could have ended (a poll that happens to come in time is made: rarely a third)
    assert sum(polls[pid] for pid in ids) <= 3 * len(ids), polls
    assert poller.put_off >= len(ids) // 2
    keeper.cancel()
    await stopped(conn_id)


# -- the event loop's responsiveness ---------------------------------------------------------------------------


async def test_a_long_turn_full_of_answers_closes_the_window_a_short_one_lets_it_open(sim, conn):
    pid = create(sim, "a cat [sim:stuck]")
    task = watch(pid)
    await until(lambda: sim.stats["gets"] >= 1)
    poller = current_poller(CONN_ID)
    assert poller is not None
    loop = asyncio.get_running_loop()
    poller.window = 100
    poller._turn_started, poller._turn_answers = time.thread_time() - 1.0, 40  # 40 answers, 1 s of CPU
    poller._turn_over()
    assert poller.turn >= 1.0 and poller.window == max(poller_module.INITIAL_WINDOW, (poller.in_flight + 40) * 3 // 4)
    closed = poller.window
    poller._turn_started, poller._turn_answers = time.thread_time() - 1.0, 1  # someone else's long turn
    poller._turn_over()
    assert poller.window == closed
    for _ in range(20):  # answers in a long turn do not open it again
        poller._answered(
            poller.entries[pid], loop.time(), poller.budget.epoch, Prediction({"id": pid, "status": "processing"})
        )
    assert poller.window == closed
    poller._turn_started = None  # the measured turns are short again: each answer opens it by one
    poller.turn = 0.0
    poller._answered(
        poller.entries[pid], loop.time(), poller.budget.epoch, Prediction({"id": pid, "status": "processing"})
    )
    assert poller.window == closed + 1
    sim.finish([pid])
    assert (await asyncio.wait_for(task, 10)).status == "succeeded"
    await stopped()


async def test_a_loop_busy_all_along_halves_the_window_and_keeps_it_shut_an_idle_one_lets_it_open(
    sim, conn, monkeypatch
):
    pid = create(sim, "a cat [sim:stuck]")
    task = watch(pid)
    await until(lambda: sim.stats["gets"] >= 1)
    poller = current_poller(CONN_ID)
    assert poller is not None
    loop = asyncio.get_running_loop()
    busy = [0.0]
    monkeypatch.setattr(poller_module.time, "thread_time", lambda: busy[0])

    def period(busy_share: float) -> None:  # a whole period passes, the loop's thread busy for that share of it
        poller._period_started = (time.perf_counter() - 1.0, busy[0])
        busy[0] += busy_share
        poller._turn_started, poller._turn_answers = busy[0], 4
        poller._turn_over()
        poller.turn = 0.0

    def answer() -> None:
        poller._answered(
            poller.entries[pid], loop.time(), poller.budget.epoch, Prediction({"id": pid, "status": "processing"})
        )

    poller.window = 100
    period(1.0)  # on a CPU all along: answers wait for the loop, not for the service
    assert poller.saturated and poller.window == 50
    answer()
    assert poller.window == 50
    period(0.2)  # mostly idle: answers wait for the service, and each opens the window by one
    assert not poller.saturated and poller.window == 50
    answer()
    assert poller.window == 51
    sim.finish([pid])
    assert (await asyncio.wait_for(task, 10)).status == "succeeded"
    await stopped()


@pytest.mark.parametrize("enabled", [True, False])
async def test_the_first_poller_of_a_process_freezes_the_heap_once(sim, conn, monkeypatch, enabled):
    freezes: list[int] = []
    monkeypatch.setattr(poller_module.gc, "freeze", lambda: freezes.append(1))
    monkeypatch.setattr(poller_module, "_heap_frozen", False)
    monkeypatch.setattr(poller_module, "FREEZE_HEAP_AT_START", enabled)
    assert (await asyncio.wait_for(watch(create(sim)), 10)).status == "succeeded"
    await stopped()
    assert (await asyncio.wait_for(watch(create(sim)), 10)).status == "succeeded"  # a second poller
    assert freezes == ([1] if enabled else [])
