"""Injected faults (``simulator.faults``): server-wide rules and per-prediction directives."""

from __future__ import annotations

import json
import re
import socket
import time

import pytest
import requests

from airflow_provider_cometflux.testing import CometAPISimulator
from airflow_provider_cometflux.testing.simulator import (
    FaultRule,
    parse_fault_directives,
)
from tests.unit.testing.conftest import PRO
from tests.unit.testing.simulator.conftest import cancel, create, create_id, get, wait_done


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


def test_server_wide_faults_come_before_per_prediction_ones(sim: CometAPISimulator) -> None:
    pid = create_id(sim, "a cat [sim:fault=get,status,status=502]")
    sim.add_fault("get", "status", status=503)
    assert [get(sim, pid).status_code for _ in range(3)] == [503, 502, 200]
    cancel(sim, pid)
    sim.reset()
    assert sim.create_requests == [] and sim.creates_for("a cat") == (0, 0) and sim.cancel_requests == []
