"""The retry policy and deadlines, in the sync and async halves of the hook, in the worker's inline wait (what the
operators run: ``PredictionJob.wait_or_defer``) and in the trigger: Retry-After is honoured (seconds or HTTP date,
even above the backoff cap), no wait passes a deadline (slow polls included), a bounded run of failed polls is
tolerated, answers are checked, and a key the service echoes is blanked out."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Iterator
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from airflow_provider_cometflux.exceptions import (
    CometAPIAuthError,
    CometAPIError,
    PredictionMayExistError,
)
from airflow_provider_cometflux.hooks import cometapi
from airflow_provider_cometflux.hooks.cometapi import CometAPIHook, close_async_session
from airflow_provider_cometflux.job import PredictionJob
from airflow_provider_cometflux.pacing import RetryPolicy
from airflow_provider_cometflux.submission import Submitted
from airflow_provider_cometflux.triggers.prediction import CometFluxPredictionTrigger
from airflow_provider_cometflux.watching import poller
from tests.conftest import BASE, TEST_KEY, prediction_json

SCHNELL = "black-forest-labs/flux-schnell"
CREATE = f"{BASE}/replicate/v1/models/{SCHNELL}/predictions"
GET = f"{BASE}/replicate/v1/predictions/p1abc"
RATE_LIMITED = {"status_code": 429, "json": {"error": {"message": "slow down", "code": "rate_limit_exceeded"}}}


@pytest.fixture(autouse=True)
async def _close_shared_session():
    yield
    await close_async_session()


@pytest.fixture
def hook(api_connection: str) -> CometAPIHook:
    return CometAPIHook(retry_policy=RetryPolicy(max_retries=3, base_delay=0.001, max_delay=0.01))


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The hook's sync sleeps, recorded instead of slept."""
    delays: list[float] = []
    monkeypatch.setattr(cometapi.time, "sleep", delays.append)
    return delays


# -- Retry-After -----------------------------------------------------------------------------------------------


def test_retry_after_above_the_backoff_cap_is_waited_in_full(hook, requests_mock, slept):
    requests_mock.post(
        CREATE, [{**RATE_LIMITED, "headers": {"Retry-After": "45"}}, {"status_code": 201, "json": prediction_json()}]
    )
    assert hook.create_prediction(SCHNELL, {"prompt": "a"})["id"] == "p1abc"
    assert len(slept) == 1 and 45 <= slept[0] <= 46
    assert requests_mock.call_count == 2


def test_retry_after_as_an_http_date(hook, requests_mock, slept):
    when = formatdate(time.time() + 20, usegmt=True)
    requests_mock.get(GET, [{**RATE_LIMITED, "headers": {"Retry-After": when}}, {"json": prediction_json()}])
    hook.get_prediction("p1abc")
    assert len(slept) == 1 and 18 <= slept[0] <= 21


def test_retry_after_beyond_what_the_policy_waits_gives_up_as_transient(hook, requests_mock, slept):
    requests_mock.post(CREATE, [{**RATE_LIMITED, "headers": {"Retry-After": "3600"}}])
    with pytest.raises(CometAPIError, match="slow down") as info:
        hook.create_prediction(SCHNELL, {"prompt": "a"})
    assert info.value.transient and info.value.http_status == 429
    assert slept == [] and requests_mock.call_count == 1


def test_no_retry_wait_passes_the_deadline(hook, requests_mock, slept):
    requests_mock.get(GET, [{**RATE_LIMITED, "headers": {"Retry-After": "30"}}])
    with pytest.raises(CometAPIError) as info:
        hook.get_prediction("p1abc", timeout=5)
    assert info.value.transient and slept == [] and requests_mock.call_count == 1


async def test_async_retry_after_is_honoured(cometapi_connection):
    sim = cometapi_connection
    pid = create(sim, "a cat [sim:fault=get,status,status=429,retry_after=1]")
    started = time.monotonic()
    assert (await CometAPIHook().aget_prediction(pid))["id"] == pid
    assert time.monotonic() - started >= 1.0
    assert sim.stats["responses"]["429"] == 1


# -- deadlines -------------------------------------------------------------------------------------------------


def create(sim, prompt: str) -> str:
    resp = requests.post(
        f"{sim.base_url}/replicate/v1/models/{SCHNELL}/predictions",
        json={"input": {"prompt": prompt}},
        headers={"Authorization": f"Bearer {sim.api_key or 'k'}"},  # the fixture's simulator checks its key
        timeout=10,
    )
    resp.raise_for_status()
    return str(resp.json()["id"])


def slow_polls_from_now_on(sim, after: float) -> threading.Timer:
    """From ``after`` seconds on, every poll takes 30 s (CometAPI's GET can be that slow)."""
    timer = threading.Timer(after, lambda: sim.add_fault("get", "slow", delay=30, times=None))
    timer.start()
    return timer


def inline_wait(pid: str, *, poll_interval: float, seconds: float) -> dict[str, Any]:
    """Wait for a created prediction as an operator with ``deferrable=False`` does: ``wait_or_defer``."""
    job = PredictionJob(
        CometAPIHook(), SCHNELL, [{"prompt": "a"}], "test", poll_interval=poll_interval, end_time=time.time() + seconds
    )
    job.submitted = Submitted(ids=[pid])
    waited = job.wait_or_defer("cometapi_default", deferrable=False, defer_after=0)
    assert not waited.defer and waited.events[0] is not None
    return waited.events[0]


@pytest.fixture
def fast_poll_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Failed polls back off without real waiting (the poller's hook still retries nothing itself)."""
    monkeypatch.setattr(poller, "POLL_ERRORS", RetryPolicy(max_retries=0, base_delay=0.001, max_delay=0.01))


def test_inline_wait_deadline_cuts_a_slow_poll(cometapi_connection):
    sim = cometapi_connection
    pid = create(sim, "a cat [sim:stuck]")
    slow_polls_from_now_on(sim, 0.3)
    started = time.monotonic()
    event = inline_wait(pid, poll_interval=0.2, seconds=1.5)
    assert event["status"] == "timeout"
    assert re.search(r"gave up after \ds; last status 'processing'", event["message"])
    assert time.monotonic() - started < 3


async def test_trigger_deadline_cuts_a_slow_poll(cometapi_connection):
    sim = cometapi_connection
    pid = create(sim, "a cat [sim:stuck]")
    slow_polls_from_now_on(sim, 0.3)
    started = time.monotonic()
    trigger = CometFluxPredictionTrigger(pid, poll_interval=0.2, end_time=time.time() + 1.5)
    event = await asyncio.wait_for(trigger.run().__anext__(), 10)
    assert event.payload["status"] == "timeout"
    assert "last status 'processing'" in event.payload["message"]
    assert time.monotonic() - started < 3


# -- a bounded run of failed polls -----------------------------------------------------------------------------


def test_inline_wait_tolerates_failed_polls_then_gives_up(cometapi_connection, fast_poll_backoff):
    sim = cometapi_connection
    pid = create(sim, "a cat [sim:stuck]")
    sim.add_fault("get", "status", status=503, message="overloaded", times=None)
    event = inline_wait(pid, poll_interval=0.05, seconds=30)
    assert event["status"] == "error" and event["error_kind"] == "service"
    assert re.search(r"overloaded.*\(5 polls in a row failed\)", event["message"])
    assert sim.stats["gets"] == 5  # one request per poll: the poller decides about retries, its hook does not


def test_inline_wait_recovers_after_failed_polls(cometapi_connection, fast_poll_backoff):
    sim = cometapi_connection
    pid = create(sim, "a cat [sim:fault=get,html,times=3][sim:fault=get,malformed]")  # four failed polls in a row
    event = inline_wait(pid, poll_interval=0.05, seconds=30)
    assert event["status"] == "succeeded"
    assert sim.stats["responses"]["502"] == 3


def test_inline_wait_pauses_on_a_429_without_counting_it_as_a_failed_poll(cometapi_connection):
    sim = cometapi_connection
    pid = create(sim, "a cat")
    sim.add_fault("get", "status", status=429, retry_after=1, times=6)  # more refusals than failed polls tolerated
    started = time.monotonic()
    event = inline_wait(pid, poll_interval=0.05, seconds=30)
    assert event["status"] == "succeeded"
    assert time.monotonic() - started >= 1.0  # Retry-After is waited out
    assert sim.stats["responses"]["429"] == 6


# -- answers are checked ---------------------------------------------------------------------------------------


def test_create_answer_without_an_id_means_a_prediction_may_exist(hook, requests_mock):
    requests_mock.post(CREATE, status_code=201, json={"status": "starting"})
    with pytest.raises(PredictionMayExistError, match="no usable prediction id"):
        hook.create_prediction(SCHNELL, {"prompt": "a"})
    assert requests_mock.call_count == 1


@pytest.fixture
def odd_service(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """A service on loopback whose every status poll answers the body appended to the list it yields."""
    answers: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(answers[-1]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    conn = {"conn_type": "cometapi", "host": f"http://127.0.0.1:{server.server_address[1]}", "password": TEST_KEY}
    monkeypatch.setenv("AIRFLOW_CONN_COMETAPI_DEFAULT", json.dumps(conn))
    try:
        yield answers
    finally:
        server.shutdown()
        server.server_close()


def test_poll_answer_about_another_prediction_is_refused(odd_service):
    odd_service.append(prediction_json(pid="../../etc/passwd", status="succeeded"))
    event = inline_wait("p1abc", poll_interval=0.05, seconds=5)
    assert event["status"] == "error" and "answered about" in event["message"]
    assert "polls in a row" not in event["message"]  # not transient: the first such answer ends the wait


def test_poll_answer_without_an_id_gets_the_one_asked_for(hook, requests_mock):
    body = prediction_json(status="processing")
    del body["id"]
    requests_mock.get(GET, json=body)
    assert hook.get_prediction("p1abc")["id"] == "p1abc"


def test_cancel_answered_without_a_body_is_done(hook, requests_mock):
    requests_mock.post(f"{GET}/cancel", status_code=204)
    assert hook.cancel_prediction("p1abc") == {}
    assert requests_mock.call_count == 1


# -- the key stays secret --------------------------------------------------------------------------------------


def test_a_key_the_service_echoes_is_blanked_out(hook, requests_mock):
    requests_mock.get(GET, status_code=401, json={"error": {"message": f"Incorrect API key provided: {TEST_KEY}"}})
    with pytest.raises(CometAPIAuthError) as info:
        hook.get_prediction("p1abc")
    assert TEST_KEY not in str(info.value) and TEST_KEY not in repr(info.value)
    assert "Incorrect API key provided: ***" in str(info.value)


@pytest.mark.cometapi_simulator(api_key="sk-the-right-one", echo_key=True)
async def test_a_key_the_service_echoes_is_blanked_out_async(cometapi_simulator, monkeypatch):
    import json

    wrong = "sk-wrong-0123456789"
    conn = {"conn_type": "cometapi", "host": cometapi_simulator.base_url, "password": wrong}
    monkeypatch.setenv("AIRFLOW_CONN_COMETAPI_DEFAULT", json.dumps(conn))
    with pytest.raises(CometAPIAuthError) as info:
        await CometAPIHook().aget_prediction("p1abc")
    assert wrong not in str(info.value) and "Incorrect API key provided: ***" in str(info.value)


# -- kill means cancel, a redistribution does not ----------------------------------------------------------------


class FakeComms:
    """Answers the trigger's question about its task instance's state, as the triggerer's supervisor does."""

    def __init__(self, state: str | None) -> None:
        self.state = state
        self.asked: list[object] = []

    async def asend(self, msg: object) -> object:
        from types import SimpleNamespace

        self.asked.append(msg)
        return SimpleNamespace(task_states={"run1": {"predict": self.state}})

    def send(self, msg: object) -> None:  # what older Airflow's mask_secret calls
        self.asked.append(msg)


@pytest.mark.parametrize(
    ("state", "cancelled"), [("failed", True), ("success", True), (None, True), ("deferred", False)]
)
async def test_trigger_on_kill_cancels_unless_the_task_is_still_deferred(
    cometapi_connection, monkeypatch, state, cancelled
):
    from types import SimpleNamespace

    from airflow.sdk.execution_time import task_runner

    sim = cometapi_connection
    pid = create(sim, "a cat [sim:stuck]")
    comms = FakeComms(state)
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", comms, raising=False)
    trigger = CometFluxPredictionTrigger(pid)
    trigger.task_instance = SimpleNamespace(dag_id="d", run_id="run1", task_id="predict", map_index=-1)
    await trigger.on_kill()
    assert [type(msg).__name__ for msg in comms.asked].count("GetTaskStates") == 1
    assert sim.cancel_requests == ([pid] if cancelled else [])
    assert (sim.predictions[pid]["status"] == "canceled") is cancelled


async def test_trigger_on_kill_cancels_when_the_state_cannot_be_read(cometapi_connection, monkeypatch):
    from types import SimpleNamespace

    from airflow.sdk.execution_time import task_runner

    class Broken(FakeComms):
        async def asend(self, msg: object) -> object:
            raise RuntimeError("no supervisor")

    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", Broken("failed"), raising=False)
    pid = create(cometapi_connection, "a cat [sim:stuck]")
    trigger = CometFluxPredictionTrigger(pid)
    trigger.task_instance = SimpleNamespace(dag_id="d", run_id="run1", task_id="predict", map_index=-1)
    await trigger.on_kill()
    assert cometapi_connection.cancel_requests == [pid]


async def test_trigger_on_kill_finishes_its_cancel_even_when_cancelled_itself(cometapi_connection, monkeypatch):
    """The triggerer repeats its cancel request at each state sync, which can cancel a slow ``on_kill``."""
    from types import SimpleNamespace

    from airflow.sdk.execution_time import task_runner

    class SlowComms(FakeComms):
        async def asend(self, msg: object) -> object:
            await asyncio.sleep(0.5)  # e.g. the supervisor building its API client on first use
            return await super().asend(msg)

    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", SlowComms("failed"), raising=False)
    pid = create(cometapi_connection, "a cat [sim:stuck]")
    trigger = CometFluxPredictionTrigger(pid)
    trigger.task_instance = SimpleNamespace(dag_id="d", run_id="run1", task_id="predict", map_index=-1)
    killing = asyncio.ensure_future(trigger.on_kill())
    await asyncio.sleep(0.1)
    killing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await killing
    for _ in range(50):
        if cometapi_connection.cancel_requests:
            break
        await asyncio.sleep(0.1)
    assert cometapi_connection.cancel_requests == [pid]


async def test_trigger_on_kill_leaves_a_finished_prediction_alone(cometapi_connection, monkeypatch):
    from types import SimpleNamespace

    from airflow.sdk.execution_time import task_runner

    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", FakeComms("success"), raising=False)
    pid = create(cometapi_connection, "a cat")
    cometapi_connection.finish([pid])
    trigger = CometFluxPredictionTrigger(pid)
    trigger.task_instance = SimpleNamespace(dag_id="d", run_id="run1", task_id="predict", map_index=-1)
    await trigger.on_kill()
    assert cometapi_connection.cancel_requests == []
