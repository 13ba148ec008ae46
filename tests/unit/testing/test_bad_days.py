"""The service's bad days: trickling answers, endless downloads, redirects, hostile text, a request rate limit."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import pytest
import requests

from airflow_provider_cometflux.testing.simulator import (
    FAULT_KINDS,
    HUGE_SIZE,
    THROTTLE_DETAIL,
    CometAPISimulator,
    FaultRule,
    parse_fault_directives,
)
from tests.unit.testing.conftest import AUTH, PRO, SCHNELL, finished, get_prediction, post_create

HOSTILE = "\x1b[31mboom\x1b[0m\nINFO - Task succeeded\r\x07"


def raw_get(port: int, path: str, *, read_seconds: float, headers: str = "") -> tuple[bytes, list[float]]:
    """Read a raw HTTP answer for ``read_seconds``; return the bytes and the times each piece arrived."""
    arrivals: list[float] = []
    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n".encode())
        sock.settimeout(0.2)
        started = time.monotonic()
        while time.monotonic() - started < read_seconds:
            try:
                piece = sock.recv(65536)
            except TimeoutError:
                continue
            if not piece:
                break
            arrivals.append(time.monotonic() - started)
            data += piece
    return data, arrivals


# ------------------------------------------------------------------------------------------------- trickle


def test_trickle_sends_the_answer_one_byte_at_a_time(strict_sim: CometAPISimulator) -> None:
    pid = post_create(strict_sim, prompt="a cat").json()["id"]
    strict_sim.add_fault("get", "trickle", delay=0.05)
    data, arrivals = raw_get(
        strict_sim.port,
        f"/replicate/v1/predictions/{pid}",
        read_seconds=1.0,
        headers=f"Authorization: {AUTH['Authorization']}\r\n",
    )
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    declared = int(
        next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")).split(b":")[1]
    )
    assert declared > 100
    assert 5 <= len(body) < declared  # after a second, only a few bytes of the whole answer have come
    assert len(arrivals) >= 5 and arrivals[-1] - arrivals[1] >= 0.2


def test_trickle_default_delay_is_one_second_and_the_answer_is_whole(strict_sim: CometAPISimulator) -> None:
    rule = strict_sim.add_fault("cancel", "trickle")
    assert rule.delay is None  # one second between bytes
    strict_sim.add_fault("create", "trickle", delay=0.001)
    response = post_create(strict_sim, prompt="a cat")
    assert response.status_code == 201 and response.json()["status"] == "starting"
    assert [r.kind for r in parse_fault_directives("[sim:fault=file,trickle,delay=2]")] == ["trickle"]


# --------------------------------------------------------------------------------------------- huge, endless


def test_huge_declares_three_gigabytes_and_sends_while_read(strict_sim: CometAPISimulator) -> None:
    pid = post_create(strict_sim, prompt="a cat [sim:fault=file,huge]").json()["id"]
    url = finished(strict_sim, pid)["output"][0]
    with requests.get(url, stream=True, timeout=10) as response:
        assert response.status_code == 200
        assert int(response.headers["Content-Length"]) == HUGE_SIZE == 3 * 1024**3
        received = 0
        for chunk in response.iter_content(1 << 20):
            received += len(chunk)
            if received >= 20 * 1024 * 1024:
                break
    assert received >= 20 * 1024 * 1024


def test_huge_takes_a_size(strict_sim: CometAPISimulator) -> None:
    pid = post_create(strict_sim, prompt="a cat").json()["id"]
    url = finished(strict_sim, pid)["output"][0]
    strict_sim.add_fault("file", "huge", size=5_000_000)
    with requests.get(url, stream=True, timeout=10) as response:
        assert response.headers["Content-Length"] == "5000000"
        assert len(response.content) == 5_000_000


def test_endless_has_no_length_and_does_not_end(strict_sim: CometAPISimulator) -> None:
    pid = post_create(strict_sim, prompt="a cat").json()["id"]
    url = finished(strict_sim, pid)["output"][0]
    strict_sim.add_fault("file", "endless")
    with requests.get(url, stream=True, timeout=10) as response:
        assert response.status_code == 200 and "Content-Length" not in response.headers
        received = 0
        started = time.monotonic()
        for chunk in response.iter_content(1 << 20):
            received += len(chunk)
            if time.monotonic() - started > 1.0:
                break
    assert received > 10 * 1024 * 1024
    assert requests.get(url, timeout=30).status_code == 200  # the next download is normal again


# -------------------------------------------------------------------------------------------------- redirect


def test_redirect_points_an_api_call_at_another_host() -> None:
    with CometAPISimulator(run_seconds=0.05) as elsewhere, CometAPISimulator(run_seconds=0.05) as sim:
        foreign = post_create(elsewhere, prompt="not yours").json()
        location = f"{elsewhere.base_url}/replicate/v1/predictions/{foreign['id']}"
        mine = post_create(sim, prompt="a cat").json()["id"]
        sim.add_fault("get", "redirect", location=location)
        response = requests.get(
            f"{sim.base_url}/replicate/v1/predictions/{mine}", headers=AUTH, allow_redirects=False, timeout=10
        )
        assert response.status_code == 307 and response.headers["Location"] == location
        followed = get_prediction(sim, mine)  # requests follows the next one (and drops the key on a new host)
        assert followed.status_code == 200 and followed.json()["id"] == mine
        sim.add_fault("create", "redirect", status=302, location=location)
        redirected = requests.post(
            f"{sim.base_url}/replicate/v1/models/{SCHNELL}/predictions",
            json={"input": {"prompt": "x"}},
            headers=AUTH,
            allow_redirects=False,
            timeout=10,
        )
        assert redirected.status_code == 302 and redirected.headers["Location"] == location


def test_redirect_needs_a_location_and_fits_api_routes_only() -> None:
    with pytest.raises(ValueError, match="location"):
        FaultRule(route="get", kind="redirect")
    with pytest.raises(ValueError, match="does not apply"):
        FaultRule(route="file", kind="redirect", location="http://127.0.0.1:1/")
    assert set(FAULT_KINDS["redirect"]) == {"create", "get", "cancel"}
    (rule,) = parse_fault_directives("x [sim:fault=get,redirect,status=308,location=http://127.0.0.1:9/p?q=1]")
    assert (rule.status, rule.location) == (308, "http://127.0.0.1:9/p?q=1")


def test_redirect_through_a_prompt_directive_and_the_control_route(strict_sim: CometAPISimulator) -> None:
    pid = post_create(strict_sim, prompt="a [sim:fault=get,redirect,location=http://127.0.0.1:9/x]").json()["id"]
    response = requests.get(
        f"{strict_sim.base_url}/replicate/v1/predictions/{pid}", headers=AUTH, allow_redirects=False, timeout=10
    )
    assert response.status_code == 307 and response.headers["Location"] == "http://127.0.0.1:9/x"
    added = requests.post(
        f"{strict_sim.base_url}/_sim/faults",
        json={"route": "cancel", "kind": "redirect", "location": "http://127.0.0.1:9/y"},
        timeout=10,
    )
    assert added.status_code == 201 and added.json()["added"][0]["location"] == "http://127.0.0.1:9/y"


# -------------------------------------------------------------------------------------------- hostile text


def test_control_characters_survive_in_failure_messages(strict_sim: CometAPISimulator) -> None:
    pid = post_create(strict_sim, prompt=f"a cat [sim:failed={HOSTILE}]").json()["id"]
    response = get_prediction(strict_sim, pid)
    while response.json()["status"] != "failed":
        time.sleep(0.02)
        response = get_prediction(strict_sim, pid)
    assert "\\u001b[31m" in response.text and "\\n" in response.text  # escaped on the wire, valid JSON
    assert response.json()["error"] == HOSTILE


def test_control_characters_survive_in_status_fault_messages(strict_sim: CometAPISimulator) -> None:
    strict_sim.add_fault("get", "status", status=500, message=HOSTILE)
    response = get_prediction(strict_sim, "anything")
    assert response.status_code == 500
    assert response.json()["error"]["message"].startswith(HOSTILE)
    pid = post_create(strict_sim, prompt="a [sim:fault=get,status,status=503,message=\x1b[2J\nERROR - forged]").json()[
        "id"
    ]
    forged = get_prediction(strict_sim, pid)
    assert forged.status_code == 503 and forged.json()["error"]["message"].startswith("\x1b[2J\nERROR - forged")


# ------------------------------------------------------------------------------------------- rate limiting


def test_requests_per_second_refuses_api_requests_as_replicate_does() -> None:
    with CometAPISimulator(run_seconds=0.05, requests_per_second=5) as sim:
        time.sleep(1 - time.monotonic() % 1 + 0.01)  # start at the beginning of a one-second window
        answers = [post_create(sim, prompt=f"cat {i}") for i in range(3)]
        pid = answers[0].json()["id"]
        answers += [get_prediction(sim, pid) for _ in range(4)]
        statuses = [answer.status_code for answer in answers]
        assert statuses == [201, 201, 201, 200, 200, 429, 429]
        refused = answers[-1]
        assert refused.headers["Retry-After"] == "1"
        assert refused.headers["Content-Type"].startswith("application/problem+json")
        assert refused.json() == {"detail": "Request was throttled. Your rate limit resets in ~1s.", "status": 429}
        assert refused.json()["detail"] == THROTTLE_DETAIL
        assert requests.get(f"{sim.base_url}/_sim/stats", timeout=10).ok  # control routes are not limited
        # nor files (one that never exists: whether image 0 is drawn yet depends on how busy the machine is)
        assert requests.get(f"{sim.base_url}/files/{pid}/9.webp", timeout=10).status_code == 404
        stats = sim.stats
        assert stats["rate_limited"] == 2 and stats["gets"] == 4 and stats["creates"] == 3
        assert stats["api_requests"] == 7 and stats["answered"] == 8 and stats["refused"] == 3  # + the file 404
        time.sleep(1.05)  # the next window
        assert get_prediction(sim, pid).status_code == 200


def test_a_throttled_create_is_still_a_create_request() -> None:
    with CometAPISimulator(run_seconds=0.05, requests_per_second=1) as sim:
        time.sleep(1 - time.monotonic() % 1 + 0.01)
        assert post_create(sim, prompt="tag-a").status_code == 201
        assert post_create(sim, prompt="tag-b").status_code == 429
        assert sim.creates_for("tag-b") == (1, 0)
        assert sim.create_requests[-1] == {"prompt": "tag-b", "status": 429, "prediction_id": None}


def test_requests_per_second_is_checked() -> None:
    for bad in (0, -1, True):
        with pytest.raises(ValueError, match="requests_per_second"):
            CometAPISimulator(requests_per_second=bad)


def test_requests_per_second_holds_under_concurrency() -> None:
    """Hundreds of concurrent polls: never more than the limit answered in one window (how fast is benchmark (f)'s)."""
    import aiohttp

    limit = 50

    async def hammer(sim: CometAPISimulator, pid: str, count: int) -> list[tuple[int, int]]:
        url = f"{sim.base_url}/replicate/v1/predictions/{pid}"
        connector = aiohttp.TCPConnector(limit=100)
        async with aiohttp.ClientSession(connector=connector, headers=AUTH) as session:

            async def one() -> tuple[int, int]:
                async with session.get(url) as response:
                    await response.read()
                    return int(time.monotonic()), response.status

            return await asyncio.gather(*(one() for _ in range(count)))

    with CometAPISimulator(run_seconds=0.05, requests_per_second=limit) as sim:
        pid = post_create(sim, prompt="a cat").json()["id"]
        time.sleep(1 - time.monotonic() % 1 + 0.01)
        first = int(time.monotonic())
        results = asyncio.run(hammer(sim, pid, 2000))
    per_window: dict[int, int] = {}
    for window, status in results:
        if status == 200:
            per_window[window] = per_window.get(window, 0) + 1
    refused = sum(1 for _, status in results if status == 429)
    # An answer is read in the second it was accepted or later (later on a loaded machine), so by the end of each
    # second at most the limit for every second so far was read (+1: the create's second).
    read = 0
    for window in range(first, max(per_window) + 1):
        read += per_window.get(window, 0)
        assert read <= limit * (window - first + 1) + 1, (window, per_window)
    assert refused >= 2000 - limit * (max(per_window) - first + 2)
    assert sim.stats["rate_limited"] == refused


def test_requests_per_second_from_the_command_line(tmp_path: Any) -> None:
    import subprocess
    import sys

    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_provider_cometflux.testing.simulator",
            *("--requests-per-second", "2", "--any-key"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        base = line.rsplit(" ", 1)[-1].strip()
        assert base.startswith("http://127.0.0.1:")
        time.sleep(1 - time.monotonic() % 1 + 0.01)
        statuses = [
            requests.get(f"{base}/replicate/v1/predictions/x", headers=AUTH, timeout=10).status_code for _ in range(3)
        ]
        assert statuses == [404, 404, 429]
        stats = json.loads(requests.get(f"{base}/_sim/stats", timeout=10).text)
        assert stats["rate_limited"] == 1
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_an_unknown_model_from_the_command_line_and_any_model() -> None:
    import subprocess
    import sys

    for args, expected in (
        (["--known-model", "acme/painter"], {"acme/painter": 201, PRO: 404}),
        (["--any-model"], {"x/y": 201}),
    ):
        process = subprocess.Popen(
            [sys.executable, "-m", "airflow_provider_cometflux.testing.simulator", *args, "--any-key"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert process.stdout is not None
            base = process.stdout.readline().rsplit(" ", 1)[-1].strip()
            for model, status in expected.items():
                response = requests.post(
                    f"{base}/replicate/v1/models/{model}/predictions",
                    json={"input": {"prompt": "a"}},
                    headers=AUTH,
                    timeout=10,
                )
                assert response.status_code == status, (args, model)
        finally:
            process.terminate()
            process.wait(timeout=20)
