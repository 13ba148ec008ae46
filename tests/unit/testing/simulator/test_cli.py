"""The simulator's command line (:mod:`~airflow_provider_cometflux.testing.simulator.cli`)."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest
import requests

from tests.unit.testing.conftest import AUTH, KEY, SCHNELL


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
