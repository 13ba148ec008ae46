"""The simulator's server (``simulator.app``): routes, auth, cancel, Prefer: wait, service-wide settings, stop."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
import requests

from airflow_provider_cometflux.testing import CometAPISimulator
from tests.unit.testing.conftest import AUTH, KEY, PRO, SCHNELL
from tests.unit.testing.simulator.conftest import ID_RE, ISO_RE, RUN, cancel, create, create_id, get, wait_done


def test_create_answers_a_starting_prediction(sim: CometAPISimulator) -> None:
    response = create(sim, "a lighthouse", num_outputs=2, seed=7)
    assert response.status_code == 201
    assert response.headers["Content-Type"].startswith("application/json")
    prediction = response.json()
    pid = prediction["id"]
    assert ID_RE.match(pid)
    assert prediction["model"] == SCHNELL
    assert prediction["version"] == "hidden"
    assert "metrics" not in prediction
    assert prediction["input"] == {"prompt": "a lighthouse", "num_outputs": 2, "seed": 7}
    assert prediction["status"] == "starting"
    assert prediction["output"] is None and prediction["error"] is None
    assert prediction["data_removed"] is False and prediction["source"] == "api"
    assert prediction["logs"] == ""
    assert ISO_RE.match(prediction["created_at"])
    assert "started_at" not in prediction and "completed_at" not in prediction
    assert prediction["urls"] == {
        "get": f"https://api.replicate.com/v1/predictions/{pid}",
        "cancel": f"https://api.replicate.com/v1/predictions/{pid}/cancel",
        "stream": f"https://stream.replicate.com/v1/files/{pid}",
        "web": f"https://replicate.com/p/{pid}",
    }
    assert sim.predictions[pid]["id"] == pid


def test_lifecycle_starting_processing_succeeded(sim: CometAPISimulator) -> None:
    pid = create_id(sim, "a fox [sim:slow=0.6]", num_outputs=2, seed=42)
    assert get(sim, pid).json()["status"] == "starting"
    time.sleep(0.1)
    processing = get(sim, pid).json()
    assert processing["status"] == "processing"
    assert ISO_RE.match(processing["started_at"]) and "completed_at" not in processing
    assert processing["logs"].startswith("Using seed: 42\n") and processing["output"] is None
    time.sleep(0.2)
    later = get(sim, pid).json()
    assert later["status"] == "processing" and len(later["logs"]) > len(processing["logs"])
    done = wait_done(sim, pid)
    assert done["status"] == "succeeded" and done["error"] is None
    assert done["started_at"] == processing["started_at"]
    assert done["created_at"] < done["started_at"] < done["completed_at"]
    assert "metrics" not in processing
    assert done["metrics"]["image_count"] == 2
    assert done["metrics"]["predict_time"] == pytest.approx(0.54)
    assert done["metrics"]["total_time"] == pytest.approx(0.6)
    assert done["output"] == [f"{sim.base_url}/files/{pid}/{i}.webp" for i in range(2)]
    assert "100%" in done["logs"]


def test_get_unknown_prediction_is_problem_json(sim: CometAPISimulator) -> None:
    response = get(sim, "doesnotexist")
    assert response.status_code == 404
    assert response.headers["Content-Type"].startswith("application/problem+json")
    body = response.json()
    assert set(body) == {"title", "detail", "status"} and body["status"] == 404


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"", "application/json"),
        (b"{not json", "application/json"),
        (b"[1, 2]", "application/json"),
        (b'{"prompt": "no input wrapper"}', "application/json"),
        (b'{"input": "a string"}', "application/json"),
        (b"\xff\xfe", "text/plain"),
    ],
)
def test_create_rejects_bad_bodies(sim: CometAPISimulator, body: bytes, content_type: str) -> None:
    response = requests.post(
        f"{sim.base_url}/replicate/v1/models/{SCHNELL}/predictions",
        data=body,
        headers={**AUTH, "Content-Type": content_type},
        timeout=10,
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_request"
    assert not sim.predictions


def test_file_route_answers_404_when_there_is_no_such_file(sim: CometAPISimulator) -> None:
    pid = create_id(sim, "a cat", SCHNELL, num_outputs=2)
    string_pid = create_id(sim, "a cat", PRO, num_outputs=3)
    running = create_id(sim, "a cat [sim:slow=60]", SCHNELL)
    assert requests.get(f"{sim.base_url}/files/{running}/0.webp", timeout=10).status_code == 404  # not yet done
    wait_done(sim, pid)
    wait_done(sim, string_pid)
    for path in [f"{pid}/2.webp", f"{pid}/0.png", "unknown/0.webp", f"{string_pid}/1.webp"]:
        assert requests.get(f"{sim.base_url}/files/{path}", timeout=10).status_code == 404, path
    assert requests.get(f"{sim.base_url}/files/{pid}/1.webp", timeout=10).status_code == 200


def test_files_need_no_auth_and_head_works(sim: CometAPISimulator) -> None:
    pid = create_id(sim, "a cat")
    url = wait_done(sim, pid)["output"][0]
    head = requests.head(url, timeout=10)
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == len(sim.file_bytes(pid))


def test_cancel_in_flight_and_terminal(sim: CometAPISimulator) -> None:
    running = create_id(sim, "a cat [sim:slow=5]")
    response = cancel(sim, running)
    assert response.status_code == 200
    canceled = response.json()
    assert canceled["status"] == "canceled" and canceled["output"] is None and "completed_at" in canceled
    time.sleep(0.05)
    assert get(sim, running).json()["status"] == "canceled"

    finished = create_id(sim, "a dog")
    assert wait_done(sim, finished)["status"] == "succeeded"
    again = cancel(sim, finished)
    assert again.status_code == 200 and again.json()["status"] == "succeeded"

    unknown = cancel(sim, "nope")
    assert unknown.status_code == 404 and unknown.json()["status"] == 404
    assert sim.stats["cancels"] == 3


def test_cancel_while_starting_never_starts(sim: CometAPISimulator) -> None:
    pid = create_id(sim, "a cat [sim:slow=10]")
    prediction = cancel(sim, pid).json()
    assert prediction["status"] == "canceled" and "started_at" not in prediction


def test_cancel_unsupported_answers_html_404() -> None:
    with CometAPISimulator(run_seconds=RUN, cancel_supported=False) as sim:
        pid = create(sim, "a cat [sim:slow=5]", headers={"Authorization": "Bearer anything"}).json()["id"]
        response = cancel(sim, pid)
        assert response.status_code == 404
        assert response.headers["Content-Type"].startswith("text/html")
        assert sim.predictions[pid]["status"] in ("starting", "processing")


def test_auth_with_a_configured_key(sim: CometAPISimulator) -> None:
    pid = create_id(sim)
    wrong_token = "not-the-key-123"
    attempts = [
        requests.post(f"{sim.base_url}/replicate/v1/models/{SCHNELL}/predictions", json={"input": {}}, timeout=10),
        create(sim, headers={"Authorization": f"Bearer {wrong_token}"}),
        create(sim, headers={"Authorization": f"Basic {KEY}"}),
        get(sim, pid, headers={"Authorization": f"Bearer {wrong_token}"}),
        requests.post(f"{sim.base_url}/replicate/v1/predictions/{pid}/cancel", timeout=10),
    ]
    for response in attempts:
        assert response.status_code == 401
        error = response.json()["error"]
        assert error["message"].startswith("Invalid token")
        assert error["type"] == "invalid_request_error" and error["param"] is None
        assert error["code"] == "invalid_api_key"
        assert KEY not in response.text and wrong_token not in response.text
    assert sim.stats["responses"]["401"] == 5
    assert get(sim, pid).status_code == 200


def test_echo_key_quotes_a_refused_key_only() -> None:
    with CometAPISimulator(run_seconds=RUN, api_key=KEY, echo_key=True) as sim:
        refused = create(sim, headers={"Authorization": "Bearer sk-wrong-123"})
        assert refused.status_code == 401 and "sk-wrong-123" in refused.json()["error"]["message"]
        accepted = create(sim)
        assert accepted.status_code == 201 and KEY not in accepted.text


def test_auth_without_a_configured_key_accepts_any_bearer() -> None:
    with CometAPISimulator(run_seconds=RUN) as sim:
        assert create(sim, headers={"Authorization": "Bearer whatever"}).status_code == 201
        assert create(sim, headers={"Authorization": "Bearer "}).status_code == 401
        missing = requests.post(
            f"{sim.base_url}/replicate/v1/models/{SCHNELL}/predictions", json={"input": {}}, timeout=10
        )
        assert missing.status_code == 401


def test_unknown_paths_and_methods_answer_html_404(sim: CometAPISimulator) -> None:
    for method, path in [
        ("GET", "/"),
        ("GET", "/v1/predictions"),
        ("GET", f"/replicate/v1/models/{SCHNELL}/predictions"),
        ("DELETE", "/replicate/v1/predictions/abc"),
        ("POST", "/replicate/v1/predictions"),
    ]:
        response = requests.request(method, f"{sim.base_url}{path}", headers=AUTH, timeout=10)
        assert response.status_code == 404, path
        assert response.headers["Content-Type"].startswith("text/html")
        assert "<html>" in response.text
    assert sim.stats["not_found"] == 5


def test_prefer_wait_returns_a_finished_prediction(sim: CometAPISimulator) -> None:
    started = time.monotonic()
    response = create(sim, headers={"Prefer": "wait=5"})
    assert response.status_code == 201 and response.json()["status"] == "succeeded"
    assert RUN <= time.monotonic() - started < 2
    assert create(sim, "[sim:failed]", headers={"Prefer": "wait"}).json()["status"] == "failed"


def test_prefer_wait_gives_up_after_n_seconds(sim: CometAPISimulator) -> None:
    started = time.monotonic()
    response = create(sim, "[sim:slow=5]", headers={"Prefer": "wait=1"})
    assert 1 <= time.monotonic() - started < 2.5
    assert response.json()["status"] == "processing"


def test_prefer_wait_ends_early_on_cancel(sim: CometAPISimulator) -> None:
    result: dict[str, Any] = {}

    def slow_create() -> None:
        result["response"] = create(sim, "[sim:stuck]", headers={"Prefer": "wait=30"})

    thread = threading.Thread(target=slow_create)
    started = time.monotonic()
    thread.start()
    while not sim.predictions:
        time.sleep(0.01)
    (pid,) = sim.predictions
    time.sleep(0.1)
    cancel(sim, pid)
    thread.join(10)
    assert time.monotonic() - started < 3
    assert result["response"].json()["status"] == "canceled"


def test_cancel_after_deadline(sim: CometAPISimulator) -> None:
    late = create_id_with_headers(sim, "[sim:slow=0.5]", {"Cancel-After": "100ms"})
    early = create_id_with_headers(sim, "[sim:slow=0.5]", {"Cancel-After": "10ms"})
    harmless = create_id_with_headers(sim, "a cat", {"Cancel-After": "5m"})
    time.sleep(0.2)
    assert get(sim, late).json()["status"] == "canceled"
    assert get(sim, early).json()["status"] == "aborted"
    assert get(sim, harmless).json()["status"] == "succeeded"


def create_id_with_headers(sim: CometAPISimulator, prompt: str, headers: dict[str, str]) -> str:
    response = create(sim, prompt, headers=headers)
    assert response.status_code == 201
    return str(response.json()["id"])


def test_rate_limit_per_minute() -> None:
    with CometAPISimulator(run_seconds=RUN, rate_limit_per_minute=2) as sim:
        assert create(sim).status_code == 201
        assert create(sim).status_code == 201
        limited = create(sim)
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        assert limited.json()["error"]["code"] == "rate_limit_exceeded"
        assert sim.stats["rate_limited"] == 1 and len(sim.predictions) == 2
    with CometAPISimulator(run_seconds=RUN, rate_limit_per_minute=1, rate_limit_window=0.2) as sim:
        assert create(sim).status_code == 201
        assert create(sim).status_code == 429
        time.sleep(0.25)
        assert create(sim).status_code == 201


def test_expire_after() -> None:
    with CometAPISimulator(run_seconds=0.05, expire_after=0.15) as sim:
        pid = create_id(sim)
        prediction = wait_done(sim, pid)
        assert prediction["data_removed"] is False
        assert requests.get(prediction["output"][0], timeout=10).status_code == 200
        time.sleep(0.2)
        assert requests.get(prediction["output"][0], timeout=10).status_code == 404
        assert get(sim, pid).json()["data_removed"] is True


def test_poll_delay_and_create_status() -> None:
    with CometAPISimulator(run_seconds=RUN, poll_delay=0.1, create_status=202) as sim:
        response = create(sim)
        assert response.status_code == 202
        started = time.monotonic()
        assert get(sim, response.json()["id"]).status_code == 200
        assert time.monotonic() - started >= 0.1


def test_stats_counts_routes_and_statuses(sim: CometAPISimulator) -> None:
    pid = create_id(sim)
    get(sim, pid)
    get(sim, "missing")
    url = wait_done(sim, pid)["output"][0]
    cancel(sim, pid)
    requests.get(url, timeout=10)
    requests.get(f"{sim.base_url}/_sim/stats", timeout=10)
    stats = sim.stats
    assert stats["creates"] == 1 and stats["cancels"] == 1 and stats["downloads"] == 1
    assert stats["gets"] >= 3 and stats["created"] == 1
    assert stats["requests"] == stats["creates"] + stats["gets"] + stats["cancels"] + stats["downloads"]
    assert stats["responses"]["201"] == 1 and stats["responses"]["404"] == 1
    assert sum(stats["responses"].values()) == stats["requests"]
    assert stats["in_flight"] == 0 and stats["max_in_flight"] >= 1


def test_control_routes(sim: CometAPISimulator) -> None:
    base = sim.base_url
    added = requests.post(f"{base}/_sim/faults", json={"route": "get", "kind": "status", "status": 503}, timeout=10)
    assert added.status_code == 201 and added.json()["added"][0]["remaining"] == 1
    batch = [{"route": "create", "kind": "status", "status": 429, "retry_after": 2, "times": 1}]
    assert requests.post(f"{base}/_sim/faults", json=batch, timeout=10).status_code == 201
    listed = requests.get(f"{base}/_sim/faults", timeout=10).json()["faults"]
    assert [(rule["route"], rule["status"]) for rule in listed] == [("get", 503), ("create", 429)]
    for bad in [
        {"route": "get"},
        {"route": "get", "kind": "nope"},
        {"route": "get", "kind": "drop", "x": 1},
        5,
    ]:
        response = requests.post(f"{base}/_sim/faults", json=bad, timeout=10)
        assert response.status_code == 400 and "error" in response.json()
    assert requests.post(f"{base}/_sim/faults", data=b"{", timeout=10).status_code == 400

    assert get(sim, "x").status_code == 503
    limited = create(sim)
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "2"
    pid = create_id(sim)
    assert list(requests.get(f"{base}/_sim/predictions", timeout=10).json()) == [pid]
    stats = requests.get(f"{base}/_sim/stats", timeout=10).json()
    assert stats["creates"] == 2 and stats["gets"] == 1 and stats["requests"] == 3

    assert requests.post(f"{base}/_sim/reset", timeout=10).json() == {"reset": True}
    assert sim.stats["requests"] == 0 and not sim.predictions and not sim.faults
    assert get(sim, pid).status_code == 404


def test_finish_ends_in_flight_predictions_now(sim: CometAPISimulator) -> None:
    stuck = create_id(sim, "a cat [sim:stuck]")
    slow = create_id(sim, "a dog [sim:slow=60]")
    failing = create_id(sim, "a bird [sim:failed] [sim:slow=60]")
    done = create_id(sim, "a fish")
    wait_done(sim, done)
    assert sim.finish([stuck]) == [stuck]
    state = get(sim, stuck).json()
    assert state["status"] == "succeeded" and state["output"] and get(sim, slow).json()["status"] == "starting"
    assert sorted(sim.finish()) == sorted([slow, failing])
    assert get(sim, slow).json()["status"] == "succeeded" and get(sim, failing).json()["status"] == "failed"
    assert requests.get(state["output"][0], timeout=10).status_code == 200
    assert sim.finish() == []


def test_start_stop_and_errors() -> None:
    simulator = CometAPISimulator(run_seconds=RUN)
    with pytest.raises(RuntimeError):
        _ = simulator.base_url
    simulator.start()
    try:
        assert simulator.running and simulator.base_url == f"http://127.0.0.1:{simulator.port}"
        with pytest.raises(RuntimeError):
            simulator.start()
        with pytest.raises(OSError), CometAPISimulator(port=simulator.port, run_seconds=RUN):
            pass
    finally:
        simulator.stop()
    simulator.stop()
    assert not simulator.running
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{simulator.base_url}/_sim/stats", timeout=2)


def test_stop_does_not_hang_on_requests_in_flight() -> None:
    simulator = CometAPISimulator(run_seconds=RUN).start()

    def blocked_create() -> None:
        with pytest.raises(requests.RequestException):
            create(simulator, "[sim:stuck]", headers={"Prefer": "wait=60"})

    thread = threading.Thread(target=blocked_create, daemon=True)
    thread.start()
    while not simulator.predictions:
        time.sleep(0.01)
    started = time.monotonic()
    simulator.stop()
    assert time.monotonic() - started < 3
    thread.join(5)


def test_async_context_manager() -> None:
    async def scenario() -> int:
        async with CometAPISimulator(run_seconds=RUN) as simulator:
            return await asyncio.to_thread(lambda: create(simulator, headers={"Authorization": "Bearer a"}).status_code)

    assert asyncio.run(scenario()) == 201
