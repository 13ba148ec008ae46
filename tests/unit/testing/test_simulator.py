"""Tests of the CometAPI simulator itself, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_cometflux.testing import CometAPISimulator
from airflow_provider_cometflux.testing.simulator import (
    DEFAULT_FAILURE_MESSAGE,
    FaultRule,
    _parse_duration,
    _parse_prefer_wait,
    parse_fault_directives,
)

KEY = "sim-key-5f1e2d"
AUTH = {"Authorization": f"Bearer {KEY}"}
RUN = 0.05
SCHNELL = "black-forest-labs/flux-schnell"
DEV = "black-forest-labs/flux-dev"
PRO = "black-forest-labs/flux-1.1-pro"
KONTEXT = "black-forest-labs/flux-kontext-pro"
ID_RE = re.compile(r"^[a-z2-7]{26}$")
ISO_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


# ------------------------------------------------------------------------------------------------ helpers


@pytest.fixture
def sim() -> Iterator[CometAPISimulator]:
    with CometAPISimulator(run_seconds=RUN, api_key=KEY) as simulator:
        yield simulator


def create(
    sim: CometAPISimulator,
    prompt: str | None = "a red fox",
    model: str = SCHNELL,
    *,
    headers: dict[str, str] | None = None,
    **inputs: Any,
) -> requests.Response:
    body_input = dict(inputs)
    if prompt is not None:
        body_input["prompt"] = prompt
    return requests.post(
        f"{sim.base_url}/replicate/v1/models/{model}/predictions",
        json={"input": body_input},
        headers={**AUTH, **(headers or {})},
        timeout=10,
    )


def create_id(sim: CometAPISimulator, prompt: str = "a red fox", model: str = SCHNELL, **inputs: Any) -> str:
    response = create(sim, prompt, model, **inputs)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def get(sim: CometAPISimulator, prediction_id: str, headers: dict[str, str] | None = None) -> requests.Response:
    return requests.get(f"{sim.base_url}/replicate/v1/predictions/{prediction_id}", headers=headers or AUTH, timeout=10)


def cancel(sim: CometAPISimulator, prediction_id: str) -> requests.Response:
    return requests.post(f"{sim.base_url}/replicate/v1/predictions/{prediction_id}/cancel", headers=AUTH, timeout=10)


def wait_done(sim: CometAPISimulator, prediction_id: str, limit: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + limit
    while True:
        prediction: dict[str, Any] = get(sim, prediction_id).json()
        if prediction["status"] in ("succeeded", "failed", "canceled", "aborted"):
            return prediction
        assert time.monotonic() < deadline, prediction
        time.sleep(0.02)


def decode(data: bytes) -> tuple[str, tuple[int, int]]:
    """Decode an image file completely with Pillow; return its format and size."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return str(image.format), image.size


PIL_FORMATS = {"png": "PNG", "jpg": "JPEG", "webp": "WEBP"}


# ----------------------------------------------------------------------------------------- create / get


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


@pytest.mark.parametrize(
    ("model", "inputs", "field"),
    [
        (SCHNELL, {"prompt": None}, "input"),
        (PRO, {"prompt": 3}, "input.prompt"),
        (KONTEXT, {"output_format": "webp"}, "input.output_format"),
        (SCHNELL, {"output_format": "gif"}, "input.output_format"),
        (DEV, {"num_outputs": 5}, "input.num_outputs"),
        (SCHNELL, {"num_outputs": "2"}, "input.num_outputs"),
    ],
)
def test_known_models_validate_inputs(sim: CometAPISimulator, model: str, inputs: dict[str, Any], field: str) -> None:
    inputs = {"prompt": "a cat", **inputs}
    response = create(sim, inputs.pop("prompt"), model, **inputs)
    assert response.status_code == 422
    assert response.headers["Content-Type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == 422 and field in body["detail"]
    assert [item["field"] for item in body["invalid_fields"]] == [field]


def test_validation_can_be_turned_off_and_skips_other_models() -> None:
    with CometAPISimulator(run_seconds=RUN, validate_input=False) as sim:
        assert create(sim, None, SCHNELL, num_outputs=9).status_code == 201
    with CometAPISimulator(run_seconds=RUN, known_models=None) as sim:
        assert create(sim, None, "acme/anything", output_format="tiff").status_code == 201


# --------------------------------------------------------------------------------------------- outputs


def test_output_shapes_and_formats_per_model(sim: CometAPISimulator) -> None:
    cases = {
        create_id(sim, "a", SCHNELL, num_outputs=3): (list, 3, "webp"),
        create_id(sim, "b", DEV): (list, 1, "webp"),
        create_id(sim, "c", PRO, output_format="jpg"): (str, 1, "jpg"),
        create_id(sim, "d", KONTEXT): (str, 1, "png"),
        create_id(sim, "e", "black-forest-labs/flux-kontext-max", output_format="jpg"): (str, 1, "jpg"),
        create_id(sim, "g [sim:output=string]", SCHNELL, num_outputs=2): (str, 1, "webp"),
        create_id(sim, "h [sim:output=list]", PRO, output_format="png"): (list, 1, "png"),
    }
    for pid, (shape, count, ext) in cases.items():
        prediction = wait_done(sim, pid)
        output = prediction["output"]
        assert isinstance(output, shape), prediction
        urls = output if isinstance(output, list) else [output]
        assert urls == [f"{sim.base_url}/files/{pid}/{i}.{ext}" for i in range(count)]
        assert prediction["metrics"]["image_count"] == count


@pytest.mark.parametrize(("kind", "model", "shape"), [("list", PRO, list), ("string", SCHNELL, str)])
def test_output_kind_forces_the_shape(kind: str, model: str, shape: type) -> None:
    with CometAPISimulator(run_seconds=0.05, output_kind=kind) as sim:
        pid = create_id(sim, "a cat", model)
        assert isinstance(wait_done(sim, pid)["output"], shape)


def test_output_kind_is_checked() -> None:
    with pytest.raises(ValueError, match="output_kind"):
        CometAPISimulator(output_kind="tuple")


@pytest.mark.parametrize(
    ("fmt", "content_type", "aspect_ratio", "size"),
    [
        ("webp", "image/webp", "16:9", (1344, 768)),
        ("jpg", "image/jpeg", "2:3", (832, 1216)),
        ("png", "image/png", None, (1024, 1024)),
    ],
)
def test_downloads_are_real_stable_images(
    sim: CometAPISimulator, fmt: str, content_type: str, aspect_ratio: str | None, size: tuple[int, int]
) -> None:
    inputs: dict[str, Any] = {"output_format": fmt, "num_outputs": 2}
    if aspect_ratio:
        inputs["aspect_ratio"] = aspect_ratio
    pid = create_id(sim, "a cat", SCHNELL, **inputs)
    first_url, second_url = wait_done(sim, pid)["output"]
    first = requests.get(first_url, timeout=10)
    assert first.status_code == 200
    assert first.headers["Content-Type"] == content_type
    assert int(first.headers["Content-Length"]) == len(first.content)
    assert decode(first.content) == (PIL_FORMATS[fmt], size)
    assert requests.get(first_url, timeout=10).content == first.content
    second = requests.get(second_url, timeout=10).content
    assert second != first.content and decode(second) == (PIL_FORMATS[fmt], size)
    assert sim.file_bytes(pid, 0) == first.content


def test_large_images(tmp_path: Path) -> None:
    with CometAPISimulator(run_seconds=0.05, image_bytes=8 * 1024 * 1024) as sim:
        pid = create_id(sim, "a big cat", PRO, output_format="png")
        response = requests.get(wait_done(sim, pid)["output"], timeout=10)
        assert len(response.content) == 8 * 1024 * 1024
        assert decode(response.content) == ("PNG", (1024, 1024))


def test_file_route_answers_404_when_there_is_no_such_file(sim: CometAPISimulator) -> None:
    pid = create_id(sim, "a cat", SCHNELL, num_outputs=2)
    string_pid = create_id(sim, "a cat", PRO, num_outputs=3)
    assert requests.get(f"{sim.base_url}/files/{pid}/0.webp", timeout=10).status_code == 404  # not yet done
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


# ---------------------------------------------------------------------------------------------- cancel


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


# ------------------------------------------------------------------------------------------------ auth


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


# ------------------------------------------------------------------------------------------ directives


def test_directives(sim: CometAPISimulator) -> None:
    ids = {
        name: create_id(sim, f"a cat {directive}")
        for name, directive in {
            "failed": "[sim:failed]",
            "custom": "[sim:failed=Prediction interrupted; please retry (code: PA)]",
            "canceled": "[sim:canceled]",
            "aborted": "[SIM:aborted]",
            "stuck": "[sim:stuck]",
            "slow": "[sim:slow=0.6]",
            "unknown": "[sim:whatever=1] [sim:slow=abc]",
        }.items()
    }
    early = get(sim, ids["aborted"]).json()
    time.sleep(RUN + 0.05)
    state = {name: get(sim, pid).json() for name, pid in ids.items()}
    assert state["failed"]["status"] == "failed"
    assert state["failed"]["error"] == DEFAULT_FAILURE_MESSAGE and state["failed"]["output"] is None
    assert DEFAULT_FAILURE_MESSAGE in state["failed"]["logs"]
    assert state["custom"]["error"] == "Prediction interrupted; please retry (code: PA)"
    assert state["canceled"]["status"] == "canceled" and state["canceled"]["error"] is None
    assert state["aborted"]["status"] == "aborted" and "started_at" not in state["aborted"]
    assert early["status"] == "starting"
    assert state["stuck"]["status"] == "processing"
    assert state["slow"]["status"] == "processing"
    assert state["unknown"]["status"] == "succeeded"
    for name in ("failed", "canceled"):  # terminal: total_time, and predict_time as they had started
        assert "completed_at" in state[name] and set(state[name]["metrics"]) == {"total_time", "predict_time"}
    assert "completed_at" in state["aborted"] and set(state["aborted"]["metrics"]) == {"total_time"}
    assert cancel(sim, ids["stuck"]).json()["status"] == "canceled"


# --------------------------------------------------------------------------------------- Prefer: wait


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


def test_header_parsers() -> None:
    assert _parse_prefer_wait("wait=10") == 10
    assert _parse_prefer_wait("respond-async, wait=5") == 5
    assert _parse_prefer_wait("wait") == 60
    assert _parse_prefer_wait("wait=0") == 1
    assert _parse_prefer_wait("wait=600") == 60
    assert _parse_prefer_wait("return=minimal") is None
    assert _parse_prefer_wait(None) is None
    assert _parse_duration("5m") == 300
    assert _parse_duration("1h30m") == 5400
    assert _parse_duration("250ms") == 0.25
    assert _parse_duration("90") == 90
    assert _parse_duration("5 minutes") is None
    assert _parse_duration("") is None


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


# ------------------------------------------------------------------------------------------------ faults


def test_fault_status_json_with_retry_after(sim: CometAPISimulator) -> None:
    rule = sim.add_fault("create", "status", status=429, retry_after=7, times=2)
    for remaining in (1, 0):
        response = create(sim)
        assert response.status_code == 429 and response.headers["Retry-After"] == "7"
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
        assert rule.remaining == remaining
    assert create(sim).status_code == 201
    assert not sim.faults


def test_fault_status_defaults_and_overrides(sim: CometAPISimulator) -> None:
    pid = create_id(sim)
    sim.add_fault("get", "status")
    sim.add_fault("get", "status", status=500, code="invalid_request", message="bad model parameters")
    plain = get(sim, pid)
    assert plain.status_code == 500 and "Retry-After" not in plain.headers
    assert plain.json()["error"]["code"] != "invalid_request"
    custom = get(sim, pid).json()["error"]
    assert custom["code"] == "invalid_request" and custom["message"].startswith("bad model parameters")
    assert get(sim, pid).status_code == 200
    assert create(sim).status_code == 201  # other routes are untouched


@pytest.mark.parametrize("status", [502, 524])
def test_fault_html(sim: CometAPISimulator, status: int) -> None:
    sim.add_fault("get", "html", status=status)
    response = get(sim, "anything")
    assert response.status_code == status
    assert response.headers["Content-Type"].startswith("text/html")
    with pytest.raises(ValueError):
        response.json()
    sim.add_fault("cancel", "html")
    assert cancel(sim, "anything").status_code == 502


def test_fault_drop(sim: CometAPISimulator) -> None:
    pid = create_id(sim)
    sim.add_fault("get", "drop")
    with pytest.raises(requests.ConnectionError):
        get(sim, pid)
    assert get(sim, pid).status_code == 200
    stats = sim.stats
    assert stats["dropped"] == 1 and stats["gets"] == 2 and stats["faults_applied"] == 1


def test_fault_drop_after_create_still_creates(sim: CometAPISimulator) -> None:
    sim.add_fault("create", "drop_after_create")
    with pytest.raises(requests.ConnectionError):
        create(sim, "lost answer")
    (prediction,) = sim.predictions.values()
    assert prediction["input"]["prompt"] == "lost answer"
    assert sim.stats["created"] == 1 and sim.stats["dropped"] == 1


def test_fault_slow(sim: CometAPISimulator) -> None:
    pid = create_id(sim)
    sim.add_fault("get", "slow", delay=0.15)
    started = time.monotonic()
    response = get(sim, pid)
    assert response.status_code == 200 and response.json()["id"] == pid
    assert time.monotonic() - started >= 0.15
    sim.add_fault("create", "status", status=503, delay=0.1)
    started = time.monotonic()
    assert create(sim).status_code == 503 and time.monotonic() - started >= 0.1


def test_fault_malformed(sim: CometAPISimulator) -> None:
    sim.add_fault("create", "malformed")
    response = create(sim)
    assert response.status_code == 200
    with pytest.raises(ValueError):
        json.loads(response.text)
    pid = create_id(sim)
    url = wait_done(sim, pid)["output"][0]
    sim.add_fault("file", "malformed")
    page = requests.get(url, timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")


def test_fault_truncate(sim: CometAPISimulator) -> None:
    pid = create_id(sim, "a cat", PRO, output_format="png")
    url = wait_done(sim, pid)["output"]
    full = sim.file_bytes(pid)
    sim.add_fault("file", "truncate")
    with socket.create_connection(("127.0.0.1", sim.port), timeout=5) as conn:
        conn.sendall(f"GET {url.split(str(sim.port), 1)[1]} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert b"200 OK" in head and f"Content-Length: {len(full)}".encode() in head
    assert body == full[: len(full) // 2]
    sim.add_fault("file", "truncate")
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(url, timeout=10)
    assert requests.get(url, timeout=10).content == full
    assert sim.stats["truncated"] == 2


@pytest.mark.parametrize(("status", "expected"), [(None, 404), (410, 410), (403, 403)])
def test_fault_expired(sim: CometAPISimulator, status: int | None, expected: int) -> None:
    pid = create_id(sim)
    url = wait_done(sim, pid)["output"][0]
    sim.add_fault("file", "expired", status=status)
    assert requests.get(url, timeout=10).status_code == expected
    assert requests.get(url, timeout=10).status_code == 200


def test_fault_rules_are_validated_and_can_be_unlimited(sim: CometAPISimulator) -> None:
    for route, kind, kwargs in [
        ("upload", "status", {}),
        ("get", "explode", {}),
        ("get", "truncate", {}),
        ("file", "drop_after_create", {}),
        ("get", "status", {"times": 0}),
        ("get", "status", {"status": 99}),
        ("get", "slow", {"delay": -1}),
    ]:
        with pytest.raises(ValueError):
            sim.add_fault(route, kind, **kwargs)
    rule = sim.add_fault("get", "status", status=503, times=None)
    for _ in range(3):
        assert get(sim, "x").status_code == 503
    assert rule.remaining is None and rule.applied == 3
    sim.clear_faults()
    assert get(sim, "x").status_code == 404
    assert isinstance(rule, FaultRule)


# -------------------------------------------------------------------------------- service-wide behaviour


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


# ---------------------------------------------------------------------------------- per-prediction faults


def test_fault_directives_parse() -> None:
    rules = parse_fault_directives(
        "a cat [sim:fault=get,status,status=503,times=2,retry_after=1.5] [sim:slow=1] "
        "[sim:fault=create,html] [SIM:FAULT=file,expired,status=410,times=all,delay=0]"
    )
    assert [(r.route, r.kind, r.status, r.times, r.retry_after) for r in rules] == [
        ("get", "status", 503, 2, 1.5),
        ("create", "html", 502, 1, None),
        ("file", "expired", 410, None, None),
    ]
    assert parse_fault_directives("a cat [sim:failed]") == []
    for bad in (
        "[sim:fault=get]",
        "[sim:fault=get,explode]",
        "[sim:fault=get,status,colour=red]",
        "[sim:fault=get,status,times=0]",
        "[sim:fault=get,status,status=abc]",
        "[sim:fault=]",
    ):
        with pytest.raises(ValueError, match=re.escape(bad)):
            parse_fault_directives(f"x {bad}")


def test_create_fault_directive_applies_to_that_prompt_only(sim: CometAPISimulator) -> None:
    prompt = "a cat [sim:fault=create,status,status=429,retry_after=3,times=2]"
    first = create(sim, prompt)
    assert first.status_code == 429 and first.headers["Retry-After"] == "3"
    assert create(sim, "a dog").status_code == 201  # another prompt is untouched
    assert create(sim, prompt).status_code == 429
    made = create(sim, prompt)  # the rule is used up: this retry of the same create gets through
    assert made.status_code == 201
    assert sim.creates_for("a cat") == (3, 1) and sim.creates_for("a dog") == (1, 1)
    log = sim.create_requests
    assert [entry["status"] for entry in log] == [429, 201, 429, 201]
    assert log[3]["prediction_id"] == made.json()["id"] and log[0]["prediction_id"] is None


def test_create_fault_directive_drops(sim: CometAPISimulator) -> None:
    with pytest.raises(requests.ConnectionError):
        create(sim, "lost [sim:fault=create,drop_after_create]")
    with pytest.raises(requests.ConnectionError):
        create(sim, "never made [sim:fault=create,drop]")
    assert sim.creates_for("lost") == (1, 1) and sim.creates_for("never made") == (1, 0)
    assert [entry["status"] for entry in sim.create_requests] == [None, None]


def test_bad_fault_directive_answers_400(sim: CometAPISimulator) -> None:
    response = create(sim, "a cat [sim:fault=get,status,status=abc]")
    assert response.status_code == 400
    assert "[sim:fault=get,status,status=abc]" in response.json()["error"]["message"]
    assert not sim.predictions


def test_get_cancel_and_file_fault_directives_apply_to_one_prediction(sim: CometAPISimulator) -> None:
    faulty = create_id(sim, "a cat [sim:fault=get,html,status=504,times=2] [sim:fault=get,malformed]")
    plain = create_id(sim, "a dog")
    assert get(sim, plain).status_code == 200
    assert [get(sim, faulty).status_code for _ in range(2)] == [504, 504]
    assert plain in requests.get(f"{sim.base_url}/_sim/predictions", timeout=10).text
    with pytest.raises(ValueError):
        get(sim, faulty).json()
    assert get(sim, faulty).json()["id"] == faulty

    no_cancel = create_id(sim, "stuck [sim:stuck] [sim:fault=cancel,html,status=404,times=all]")
    assert [cancel(sim, no_cancel).status_code for _ in range(2)] == [404, 404]
    assert get(sim, no_cancel).json()["status"] in ("starting", "processing")  # not canceled
    assert cancel(sim, plain).status_code == 200
    assert sim.cancel_requests == [no_cancel, no_cancel, plain]

    expired = create_id(sim, "gone [sim:fault=file,expired,status=410,times=all]")
    cut = create_id(sim, "cut [sim:fault=file,truncate]")
    gone_url, cut_url = wait_done(sim, expired)["output"][0], wait_done(sim, cut)["output"][0]
    assert requests.get(gone_url, timeout=10).status_code == 410
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(cut_url, timeout=10)
    assert requests.get(cut_url, timeout=10).content == sim.file_bytes(cut)


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


def test_server_wide_faults_come_before_per_prediction_ones(sim: CometAPISimulator) -> None:
    pid = create_id(sim, "a cat [sim:fault=get,status,status=502]")
    sim.add_fault("get", "status", status=503)
    assert [get(sim, pid).status_code for _ in range(3)] == [503, 502, 200]
    cancel(sim, pid)
    sim.reset()
    assert sim.create_requests == [] and sim.creates_for("a cat") == (0, 0) and sim.cancel_requests == []


# ---------------------------------------------------------------------------------------------- lifecycle


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


@pytest.fixture
def cli() -> Iterator[Callable[..., tuple[subprocess.Popen[str], str]]]:
    """Start ``python -m ...simulator`` and return the process and the URL from its first line."""
    processes: list[subprocess.Popen[str]] = []

    def start(*args: str) -> tuple[subprocess.Popen[str], str]:
        command = [sys.executable, "-m", "airflow_provider_cometflux.testing.simulator", *args]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        processes.append(process)
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        match = re.fullmatch(r"CometAPI simulator listening on (http://127\.0\.0\.1:\d+)", line)
        assert match, line
        return process, match.group(1)

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.communicate()


def test_cli(cli: Callable[..., tuple[subprocess.Popen[str], str]]) -> None:
    process, base_url = cli("--port", "0", "--run-seconds", "0.1", "--api-key", KEY, "--output-kind", "string")
    response = requests.post(
        f"{base_url}/replicate/v1/models/{SCHNELL}/predictions",
        json={"input": {"prompt": "a cat"}},
        headers={**AUTH, "Prefer": "wait=5"},
        timeout=10,
    )
    assert response.status_code == 201
    prediction = response.json()
    assert prediction["status"] == "succeeded" and isinstance(prediction["output"], str)
    assert requests.get(prediction["output"], timeout=10).status_code == 200
    assert get_url(f"{base_url}/replicate/v1/predictions/{prediction['id']}", "wrong").status_code == 401
    assert requests.post(f"{base_url}/_sim/faults", json={"route": "get", "kind": "drop"}, timeout=10).ok
    with pytest.raises(requests.ConnectionError):
        get_url(f"{base_url}/replicate/v1/predictions/{prediction['id']}", KEY)
    assert requests.get(f"{base_url}/_sim/stats", timeout=10).json()["dropped"] == 1
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=10)
    assert process.returncode == 0
    assert KEY not in stdout + stderr


def test_cli_stops_on_sigint_and_takes_a_fixed_port(
    cli: Callable[..., tuple[subprocess.Popen[str], str]],
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process, base_url = cli("--port", str(port), "--host", "127.0.0.1", "--no-cancel", "--api-key", KEY)
    assert base_url == f"http://127.0.0.1:{port}"
    assert requests.post(f"{base_url}/replicate/v1/predictions/x/cancel", headers=AUTH, timeout=10).status_code == 404
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=10)
    assert process.returncode == 0


def get_url(url: str, key: str) -> requests.Response:
    return requests.get(url, headers={"Authorization": f"Bearer {key}"}, timeout=10)


# ---------------------------------------------------------------------------------------- pytest plugin


def test_pytest_plugin_fixtures(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["airflow_provider_cometflux.testing.pytest_plugin"]\n')
    (tmp_path / "test_user.py").write_text(
        textwrap.dedent(
            """
            import json
            import os

            import pytest
            import requests


            def test_connection(cometapi_connection, cometapi_simulator):
                assert cometapi_connection is cometapi_simulator
                conn = json.loads(os.environ["AIRFLOW_CONN_COMETAPI_DEFAULT"])
                assert conn == {
                    "conn_type": "cometapi",
                    "host": cometapi_simulator.base_url,
                    "password": "sim-0123456789abcdef",
                }
                assert cometapi_simulator.run_seconds == 0.3
                response = requests.post(
                    conn["host"] + "/replicate/v1/models/black-forest-labs/flux-schnell/predictions",
                    json={"input": {"prompt": "a cat"}},
                    headers={"Authorization": "Bearer " + conn["password"], "Prefer": "wait=5"},
                )
                assert response.json()["status"] == "succeeded"
                assert cometapi_simulator.stats["creates"] == 1


            def test_no_leak():
                assert "AIRFLOW_CONN_COMETAPI_DEFAULT" not in os.environ


            @pytest.mark.cometapi_simulator(run_seconds=0.05, api_key="strict", output_kind="string")
            def test_marker(cometapi_connection):
                assert cometapi_connection.api_key == "strict"
                assert json.loads(os.environ["AIRFLOW_CONN_COMETAPI_DEFAULT"])["password"] == "strict"
                assert cometapi_connection.output_kind == "string"
            """
        )
    )
    env = {key: value for key, value in os.environ.items() if key != "AIRFLOW_CONN_COMETAPI_DEFAULT"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--strict-markers", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout
