"""The batch engine, trigger and operator against the simulator on loopback, plus real ``airflow dags test`` runs."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_cometflux.exceptions import CometAPIError, CometFluxInputError, PredictionMayExistError
from airflow_provider_cometflux.hooks.cometapi import CometAPIHook, close_async_session
from airflow_provider_cometflux.operators.batch import (
    XCOM_FAILURES,
    XCOM_PREDICTION_IDS,
    CometFluxBatchFailedError,
    CometFluxBatchOperator,
)
from airflow_provider_cometflux.retries import RetryPolicy
from airflow_provider_cometflux.triggers.batch import (
    COMPLETE,
    LEARN_AFTER,
    SKIP_FRACTION,
    SUBMITTED,
    BatchRun,
    BatchState,
    CometFluxBatchTrigger,
    Pacer,
    _epoch,
)
from tests.integration.conftest import airflow_home, dags_test, recorded  # noqa: F401  (fixtures)

SCHNELL = "black-forest-labs/flux-schnell"


@pytest.fixture(autouse=True)
async def _close_shared_session():
    yield
    await close_async_session()


class FakeClock:
    """A clock that only moves when something sleeps on it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def engine(state: BatchState, **kwargs: Any) -> BatchRun:
    options: dict[str, Any] = {
        "model": SCHNELL,
        "poll_interval": 0.1,
        "end_time": time.time() + 30,
        "creates_per_minute": 6000,
    }
    options.update(kwargs)
    return BatchRun(CometAPIHook(), state, **options)


async def run(batch: BatchRun) -> str:
    try:
        return await asyncio.wait_for(batch.run(), 30)
    finally:
        await batch.hook.aclose()


def statuses(state: BatchState) -> list[str | None]:
    return [r["status"] if r else None for r in state.results]


def result(state: BatchState, index: int) -> dict[str, Any]:
    event = state.results[index]
    assert event is not None
    return event


# -- pacing ---------------------------------------------------------------------------------------------------


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
        pacer.answered(0.5)
        starts.append(clock.now)
    for i in range(len(starts) - 6):
        assert starts[i + 6] - starts[i] >= 60.5  # the answer of the call six starts ago, plus a full window


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
    pacer.answered(0.01)
    assert pacer.interval == pytest.approx(0.1)


def test_pacer_refuses_a_rate_of_zero():
    with pytest.raises(ValueError):
        Pacer(0)


def test_next_poll_skips_most_of_the_typical_run_time_once_learnt():
    batch = engine(BatchState.new(["a"]))
    created = time.time() - 1.0  # the service created it a second ago
    assert batch._next_poll(100.0, 1.0, created) == 101.0  # nothing learnt yet
    batch._durations = sorted([10.0, 11.0, 12.0, 10.5, 10.2][:LEARN_AFTER])
    assert batch._next_poll(100.0, 1.0, created) == 101.0  # no clock sample yet
    batch._offset = 0.0
    expected = 100.0 + SKIP_FRACTION * 10.0 - 1.0
    assert batch._next_poll(100.0, 1.0, created) == pytest.approx(expected, abs=0.05)
    assert batch._next_poll(100.0, 1.0, None) == 101.0  # created_at unknown: no estimate
    batch._offset = 2.5  # our clock runs 2.5 s ahead of the service's
    assert batch._next_poll(100.0, 1.0, created) == pytest.approx(expected + 2.5, abs=0.05)


def test_service_timestamps_are_read():
    assert _epoch("1970-01-01T00:00:10.500000Z") == 10.5
    assert _epoch("not a time") is None and _epoch(None) is None


@pytest.mark.cometapi_simulator(run_seconds=0.3)
async def test_run_times_and_the_clock_offset_are_learnt_from_the_service(cometapi_connection):
    state = BatchState.new([f"kite {i}" for i in range(8)])
    batch = engine(state, poll_interval=0.1)
    assert await run(batch) == COMPLETE
    assert len(batch._durations) == 8 and all(0.25 <= d <= 1.0 for d in batch._durations)
    assert abs(batch._offset) < 1.0  # the simulator shares our clock


# -- the engine against the simulator ----------------------------------------------------------------------------


@pytest.mark.cometapi_simulator(run_seconds=0.2)
async def test_batch_creates_and_watches_every_prompt_in_order(cometapi_connection):
    sim = cometapi_connection
    prompts = [f"a kite number {i}" for i in range(12)]
    state = BatchState.new(prompts)
    batch = engine(state, input={"num_outputs": 2})
    assert await run(batch) == COMPLETE
    assert statuses(state) == ["succeeded"] * 12
    assert all(pid for pid in state.prediction_ids) and len(set(state.prediction_ids)) == 12
    for index, pid in enumerate(state.prediction_ids):
        event = result(state, index)
        assert event["prediction_id"] == pid and len(event["prediction"]["output"]) == 2
        assert sim.predictions[pid]["input"]["prompt"] == prompts[index]
    assert sim.stats["created"] == 12 and batch.stats["creates"] == 12
    assert sim.stats["gets"] == batch.stats["polls"]


@pytest.mark.cometapi_simulator(run_seconds=0.2)
async def test_a_failed_prompt_does_not_touch_the_others(cometapi_connection):
    state = BatchState.new(["one", "two [sim:failed=no kites]", "three [sim:canceled]", "four"])
    assert await run(engine(state)) == COMPLETE
    assert statuses(state) == ["succeeded", "failed", "canceled", "succeeded"]
    assert "no kites" in result(state, 1)["message"]


@pytest.mark.cometapi_simulator(run_seconds=0.1, rate_limit_per_minute=3, rate_limit_window=1.0)
async def test_429_pauses_creates_and_nothing_is_created_twice(cometapi_connection):
    sim = cometapi_connection
    state = BatchState.new([f"kite {i}" for i in range(6)])
    batch = engine(state, creates_per_minute=6000)
    assert await run(batch) == COMPLETE
    assert statuses(state) == ["succeeded"] * 6
    assert sim.stats["rate_limited"] >= 1 and batch.stats["rate_limited"] >= 1
    assert sim.stats["created"] == 6


@pytest.mark.cometapi_simulator(run_seconds=0.1)
async def test_a_create_whose_answer_is_lost_is_reported_never_resent(cometapi_connection):
    sim = cometapi_connection
    sim.add_fault("create", "drop_after_create", times=1)
    state = BatchState.new(["first", "second", "third"])
    assert await run(engine(state)) == COMPLETE
    assert statuses(state) == ["error", "succeeded", "succeeded"]
    assert "may exist" in result(state, 0)["message"] and state.prediction_ids[0] is None
    assert sim.stats["creates"] == 3  # the lost one was not sent again


@pytest.mark.cometapi_simulator(run_seconds=0.1)
async def test_transient_poll_errors_are_tolerated(cometapi_connection, monkeypatch):
    monkeypatch.setattr(CometAPIHook, "__init__", _fast_hook_init(CometAPIHook.__init__))
    cometapi_connection.add_fault("get", "status", status=503, times=4)
    state = BatchState.new(["a", "b"])
    assert await run(engine(state)) == COMPLETE
    assert statuses(state) == ["succeeded", "succeeded"]


@pytest.mark.cometapi_simulator(run_seconds=0.1)
async def test_deadline_cancels_what_still_runs_and_reports_timeouts(cometapi_connection):
    sim = cometapi_connection
    state = BatchState.new(["quick", "forever [sim:stuck]"])
    assert await run(engine(state, end_time=time.time() + 1.0)) == COMPLETE
    assert statuses(state) == ["succeeded", "timeout"]
    assert sim.predictions[state.prediction_ids[1]]["status"] == "canceled"


@pytest.mark.cometapi_simulator(run_seconds=0.1, api_key="the-right-key")
async def test_a_refused_key_stops_the_batch(cometapi_simulator, monkeypatch):
    sim = cometapi_simulator
    conn = {"conn_type": "cometapi", "host": sim.base_url, "password": "a-wrong-key"}
    monkeypatch.setenv("AIRFLOW_CONN_COMETAPI_DEFAULT", json.dumps(conn))
    state = BatchState.new([f"kite {i}" for i in range(5)])
    batch = engine(state, creates_per_minute=60)
    assert await run(batch) == "error"
    assert "401" in batch.message
    assert sim.stats["created"] == 0 and sim.stats["creates"] == 1


@pytest.mark.cometapi_simulator(run_seconds=0.5)
async def test_stop_when_submitted_hands_over_ids_then_a_watch_completes(cometapi_connection):
    state = BatchState.new(["a", "b", "c"])
    assert await run(engine(state, stop_when_submitted=True)) == SUBMITTED
    assert all(state.prediction_ids) and state.to_create == [] and not state.done
    watch = BatchState([None] * 3, list(state.prediction_ids), [None] * 3)
    assert await run(engine(watch, model=None)) == COMPLETE
    assert statuses(watch) == ["succeeded"] * 3


@pytest.mark.cometapi_simulator(run_seconds=0.1)
async def test_reattached_predictions_are_watched_and_only_failed_ones_created_anew(cometapi_connection):
    sim = cometapi_connection
    earlier = BatchState.new(["kept", "lost [sim:failed]"])
    await run(engine(earlier))
    created = sim.stats["created"]
    # a retry: prompts known, ids of the earlier attempt recorded
    retry = BatchState(["kept", "lost"], list(earlier.prediction_ids), [None, None])
    assert await run(engine(retry)) == COMPLETE
    assert statuses(retry) == ["succeeded", "succeeded"]
    assert retry.prediction_ids[0] == earlier.prediction_ids[0]
    assert retry.prediction_ids[1] != earlier.prediction_ids[1]
    assert sim.stats["created"] == created + 1


@pytest.mark.cometapi_simulator(run_seconds=0.3)
async def test_stop_at_pauses_with_every_id_recorded(cometapi_connection):
    state = BatchState.new([f"kite {i}" for i in range(30)])
    outcome = await run(engine(state, creates_per_minute=600, stop_at=time.time() + 0.35))
    assert outcome == "paused"
    created = [pid for pid in state.prediction_ids if pid]
    assert 0 < len(created) < 30
    assert len(state.to_create) == 30 - len(created)
    assert cometapi_connection.stats["created"] == len(created)


@pytest.mark.cometapi_simulator(run_seconds=0.1)
async def test_the_connection_is_read_once_per_batch(cometapi_connection, monkeypatch):
    fetches = []
    original = CometAPIHook._aget_credentials

    async def counted(self: CometAPIHook) -> Any:
        if self._async_credentials is None:
            fetches.append(1)
        return await original(self)

    monkeypatch.setattr(CometAPIHook, "_aget_credentials", counted)
    state = BatchState.new([f"kite {i}" for i in range(20)])
    assert await run(engine(state, max_concurrency=10)) == COMPLETE
    assert len(fetches) == 1


# -- the async create --------------------------------------------------------------------------------------------


@pytest.mark.cometapi_simulator(run_seconds=0.1)
async def test_acreate_retries_a_429_and_reports_it(cometapi_connection, monkeypatch):
    monkeypatch.setattr(CometAPIHook, "__init__", _fast_hook_init(CometAPIHook.__init__))
    cometapi_connection.add_fault("create", "status", status=429, retry_after=0, times=1)
    seen: list[tuple[int | None, float]] = []
    hook = CometAPIHook()
    try:
        raw = await hook.acreate_prediction(
            SCHNELL, {"prompt": "a kite"}, on_retry=lambda e, d: seen.append((e.http_status, d))
        )
    finally:
        await hook.aclose()
    assert raw["status"] == "starting" and [s for s, _ in seen] == [429]
    assert cometapi_connection.stats["created"] == 1


@pytest.mark.cometapi_simulator(run_seconds=0.1)
async def test_acreate_lost_answer_raises_may_exist(cometapi_connection):
    cometapi_connection.add_fault("create", "drop_after_create", times=1)
    hook = CometAPIHook()
    try:
        with pytest.raises(PredictionMayExistError):
            await hook.acreate_prediction(SCHNELL, {"prompt": "a kite"})
    finally:
        await hook.aclose()
    assert cometapi_connection.stats["creates"] == 1


async def test_acreate_retries_when_nothing_was_sent(monkeypatch):
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    conn = {"conn_type": "cometapi", "host": f"http://127.0.0.1:{port}", "password": "sk-unused-key"}
    monkeypatch.setenv("AIRFLOW_CONN_COMETAPI_DEFAULT", json.dumps(conn))
    monkeypatch.setattr(CometAPIHook, "__init__", _fast_hook_init(CometAPIHook.__init__))
    hook = CometAPIHook()
    tries: list[float] = []
    try:
        with pytest.raises(CometAPIError) as caught:
            await hook.acreate_prediction(SCHNELL, {"prompt": "a kite"}, on_retry=lambda e, d: tries.append(d))
    finally:
        await hook.aclose()
    assert not isinstance(caught.value, PredictionMayExistError) and caught.value.transient
    assert len(tries) == hook.retry_policy.max_retries


def _fast_hook_init(init: Any) -> Any:
    def fast(self: CometAPIHook, *args: Any, **kwargs: Any) -> None:
        kwargs["retry_policy"] = RetryPolicy(max_retries=3, base_delay=0.001, max_delay=0.01)
        init(self, *args, **kwargs)

    return fast


# -- the trigger -------------------------------------------------------------------------------------------------


def test_a_watching_trigger_serialises_ids_and_numbers_only():
    trigger = CometFluxBatchTrigger(["p1", None, "p3"], poll_interval=3, end_time=1234.5)
    path, kwargs = trigger.serialize()
    assert path == "airflow_provider_cometflux.triggers.batch.CometFluxBatchTrigger"
    assert kwargs == {
        "prediction_ids": ["p1", None, "p3"],
        "cometapi_conn_id": "cometapi_default",
        "poll_interval": 3.0,
        "end_time": 1234.5,
        "max_consecutive_errors": 5,
        "polls_per_minute": 2400.0,
        "max_concurrency": 64,
    }
    assert CometFluxBatchTrigger(**kwargs).serialize() == (path, kwargs)


def test_a_creating_trigger_holds_prompts_input_and_model_but_no_secret():
    trigger = CometFluxBatchTrigger(
        [None, "p2"], model=SCHNELL, input={"seed": 1}, prompts=["a", None], creates_per_minute=100
    )
    _, kwargs = trigger.serialize()
    assert kwargs["prompts"] == ["a", None] and kwargs["model"] == SCHNELL and kwargs["input"] == {"seed": 1}
    assert kwargs["creates_per_minute"] == 100.0
    assert CometFluxBatchTrigger(**kwargs).serialize()[1] == kwargs
    assert "password" not in json.dumps(kwargs)


@pytest.mark.cometapi_simulator(run_seconds=0.2)
async def test_creating_trigger_fires_submitted_then_watching_trigger_completes(cometapi_connection):
    prompts = ["a", "b [sim:failed]", "c"]
    creating = CometFluxBatchTrigger([None] * 3, model=SCHNELL, prompts=prompts, poll_interval=0.1)
    first = await asyncio.wait_for(anext(aiter(creating.run())), 20)
    assert first.payload["status"] == SUBMITTED and all(first.payload["prediction_ids"])
    ids = first.payload["prediction_ids"]
    watching = CometFluxBatchTrigger(ids, poll_interval=0.1, end_time=time.time() + 20)
    last = await asyncio.wait_for(anext(aiter(watching.run())), 20)
    payload = last.payload
    assert payload["status"] == COMPLETE and payload["end_time"] is not None
    assert [r["status"] for r in payload["results"]] == ["succeeded", "failed", "succeeded"]
    assert set(payload["stats"]) == {"creates", "polls", "rate_limited"}


@pytest.mark.cometapi_simulator(run_seconds=0.1)
async def test_on_kill_cancels_every_running_prediction(cometapi_connection):
    sim = cometapi_connection
    state = BatchState.new(["x [sim:stuck]", "y [sim:stuck]"])
    await run(engine(state, stop_when_submitted=True))
    await CometFluxBatchTrigger(list(state.prediction_ids)).on_kill()
    assert {p["status"] for p in sim.predictions.values()} == {"canceled"}


# -- the operator ------------------------------------------------------------------------------------------------


class FakeTI:
    def __init__(self) -> None:
        self.xcoms: dict[str, Any] = {}
        self.task_id = "generate"
        self.map_index = -1
        self.try_number = 1

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = json.loads(json.dumps(value))

    def xcom_pull(self, task_ids: str, key: str, map_indexes: int) -> Any:
        return self.xcoms.get(key)


class FakeStore:
    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.values[key] = json.loads(json.dumps(value))


def context(store: FakeStore | None = None) -> Any:
    ctx: dict[str, Any] = {"ti": FakeTI()}
    if store is not None:
        ctx["task_state_store"] = store
    return ctx


def batch_operator(**kwargs: Any) -> CometFluxBatchOperator:
    options: dict[str, Any] = {"task_id": "generate", "poll_interval": 0.1, "deferrable": False}
    options.update(kwargs)
    return CometFluxBatchOperator(**options)


@pytest.mark.parametrize(
    ("prompts", "fragment"),
    [
        ("a kite", "JSON list"),
        (42, "expected a list"),
        (["ok", ""], "prompts[1]"),
        (["ok", 3], "prompts[1]"),
    ],
)
def test_prompts_are_checked_before_any_request(prompts, fragment):
    with pytest.raises(CometFluxInputError, match=None) as caught:
        batch_operator(prompts=prompts)._prompt_list()
    assert fragment in str(caught.value)


def test_every_prompts_input_is_validated_with_its_index():
    op = batch_operator(prompts=["a", "b"], input={"num_outputs": 9})
    with pytest.raises(CometFluxInputError, match=r"prompts\[0\].*num_outputs"):
        op._prompt_list()


def test_a_json_list_in_a_string_is_read():
    assert batch_operator(prompts='["a", "b"]')._prompt_list() == ["a", "b"]


@pytest.mark.parametrize(
    "bad", [{"creates_per_minute": 0}, {"timeout": -1}, {"defer_after": -1}, {"max_concurrency": 0}]
)
def test_bad_arguments_fail_at_parse_time(bad):
    with pytest.raises(CometFluxInputError):
        batch_operator(prompts=["a"], **bad)


@pytest.mark.cometapi_simulator(run_seconds=0.1)
def test_inline_batch_returns_images_per_prompt_in_order(cometapi_connection):
    ctx = context()
    result = batch_operator(prompts=["a", "b", "c"], input={"num_outputs": 2}).execute(ctx)
    assert [len(urls) for urls in result] == [2, 2, 2]
    ids = ctx["ti"].xcoms[XCOM_PREDICTION_IDS]
    for urls, pid in zip(result, ids, strict=True):
        assert all(f"/files/{pid}/" in url for url in urls)
    assert ctx["ti"].xcoms[XCOM_FAILURES] == []


@pytest.mark.cometapi_simulator(run_seconds=0.1)
def test_failed_prompts_fail_the_task_after_pushing_every_result(cometapi_connection):
    ctx = context()
    with pytest.raises(CometFluxBatchFailedError, match=r"(?s)1 of 3 prompts failed.*#1 'b \[sim:failed"):
        batch_operator(prompts=["a", "b [sim:failed]", "c"]).execute(ctx)
    xcoms = ctx["ti"].xcoms
    assert [len(urls) for urls in xcoms["return_value"]] == [1, 0, 1]
    (failure,) = xcoms[XCOM_FAILURES]
    assert (
        failure["index"] == 1
        and failure["status"] == "failed"
        and failure["prediction_id"] == xcoms[XCOM_PREDICTION_IDS][1]
    )


@pytest.mark.cometapi_simulator(run_seconds=0.1)
def test_fail_on_error_false_returns_empty_lists_for_failures(cometapi_connection):
    ctx = context()
    result = batch_operator(prompts=["a [sim:aborted]", "b"], fail_on_error=False).execute(ctx)
    assert [len(urls) for urls in result] == [0, 1]
    assert ctx["ti"].xcoms[XCOM_FAILURES][0]["status"] == "aborted"


@pytest.mark.cometapi_simulator(run_seconds=0.1)
def test_output_path_stores_every_image(cometapi_connection, tmp_path):
    ctx = context()
    result = batch_operator(prompts=["a", "b"], input={"output_format": "png"}, output_path=str(tmp_path)).execute(ctx)
    for uris in result:
        (uri,) = uris
        assert uri.startswith("file://") and Path(uri.removeprefix("file://")).read_bytes().startswith(b"\x89PNG")
    assert [len(images) for images in ctx["ti"].xcoms["images"]] == [1, 1]


@pytest.mark.cometapi_simulator(run_seconds=0.3)
def test_deferrable_batch_defers_then_completes_through_the_trigger(cometapi_connection):
    try:
        from airflow.sdk.exceptions import TaskDeferred
    except ImportError:  # Airflow 3.0
        from airflow.exceptions import TaskDeferred  # type: ignore[no-redef,attr-defined]

    ctx = context()
    op = batch_operator(prompts=["a", "b"], deferrable=True, defer_after=0)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(ctx)
    trigger = deferred.value.trigger
    assert isinstance(trigger, CometFluxBatchTrigger) and trigger.prompts == ["a", "b"]
    for _ in range(3):  # creating, then watching
        event = asyncio.run(_first_event(trigger))
        try:
            result = op.execute_complete(ctx, event)
            break
        except TaskDeferred as again:
            trigger = again.trigger
            assert trigger.prompts is None  # a watching trigger: ids only
    assert [len(urls) for urls in result] == [1, 1]
    assert cometapi_connection.stats["created"] == 2


async def _first_event(trigger: CometFluxBatchTrigger) -> dict[str, Any]:
    try:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("no event")
    finally:
        await close_async_session()


@pytest.mark.cometapi_simulator(run_seconds=0.1)
def test_a_retry_reattaches_to_the_earlier_attempts_predictions(cometapi_connection):
    sim = cometapi_connection
    store = FakeStore()
    op = batch_operator(prompts=["a", "b"])
    first = op.execute(context(store))
    assert sim.stats["created"] == 2 and store.values["cometflux_batch"]["prediction_ids"]
    retry = context(store)
    retry["ti"].try_number = 2
    assert batch_operator(prompts=["a", "b"]).execute(retry) == first
    assert sim.stats["created"] == 2  # nothing paid twice
    batch_operator(prompts=["a", "c"]).execute(context(store))  # another batch: created anew
    assert sim.stats["created"] == 4


# -- real Airflow ------------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_dags_test_deferred_batch_keeps_every_success(dags_test, cometapi_simulator, tmp_path):  # noqa: F811
    result = dags_test("it_batch_deferred")
    assert result.returncode == 0, result.output[-4000:]
    assert result.states == {"generate": "success", "record": "success"}
    assert "new_state=deferred" in result.output
    seen = recorded(tmp_path, "it_batch_deferred")
    ids = seen["prediction_ids"]
    assert [len(uris) for uris in seen["return_value"]] == [2, 0, 2, 2]
    for uris, pid in zip(seen["return_value"], ids, strict=True):
        assert [Path(uri).name for uri in uris] == [f"{pid}-{i}.png" for i in range(len(uris))]
    (failure,) = seen["failures"]
    assert failure["index"] == 1 and "kite refused" in failure["message"]
    assert cometapi_simulator.stats["created"] == 4


@pytest.mark.integration
def test_dags_test_inline_batch_fails_after_recording_the_others(dags_test, cometapi_simulator, tmp_path):  # noqa: F811
    result = dags_test("it_batch_inline")
    assert result.states == {"generate": "failed", "record": "success"}
    assert "1 of 4 prompts failed" in result.output
    seen = recorded(tmp_path, "it_batch_inline")
    assert [len(urls) for urls in seen["return_value"]] == [1, 0, 1, 1]
    assert "new_state=deferred" not in result.output
