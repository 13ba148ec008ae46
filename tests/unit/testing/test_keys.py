"""The simulator checks the key as the README says: the fixtures' and the command line's key, 401 for any other."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import requests

from airflow_provider_cometflux.exceptions import CometAPIAuthError
from airflow_provider_cometflux.hooks.cometapi import CometAPIHook
from airflow_provider_cometflux.testing.pytest_plugin import SIMULATOR_API_KEY, WRONG_API_KEY
from airflow_provider_cometflux.testing.simulator.cli import DEFAULT_API_KEY

SCHNELL = "black-forest-labs/flux-schnell"


def create(base_url: str, key: str) -> requests.Response:
    return requests.post(
        f"{base_url}/replicate/v1/models/{SCHNELL}/predictions",
        json={"input": {"prompt": "a cat"}},
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )


def test_the_sample_key_is_long_enough_for_airflow_to_mask():
    assert SIMULATOR_API_KEY == DEFAULT_API_KEY == "sim-0123456789abcdef"
    assert len(SIMULATOR_API_KEY) > 5 and len(WRONG_API_KEY) > 5  # Airflow skips masking 5 characters or fewer


def test_the_fixture_checks_the_key(cometapi_connection):
    sim = cometapi_connection
    assert sim.api_key == SIMULATOR_API_KEY
    assert json.loads(os.environ["AIRFLOW_CONN_COMETAPI_DEFAULT"])["password"] == SIMULATOR_API_KEY
    assert create(sim.base_url, SIMULATOR_API_KEY).status_code == 201
    refused = create(sim.base_url, "sim-0123456789abcdeX")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    assert create(sim.base_url, "").status_code == 401
    assert sim.stats["created"] == 1


def test_the_wrong_key_fixture_fails_a_task_naming_the_connection(cometapi_connection_wrong_key):
    sim = cometapi_connection_wrong_key
    assert json.loads(os.environ["AIRFLOW_CONN_COMETAPI_DEFAULT"])["password"] == WRONG_API_KEY
    with pytest.raises(CometAPIAuthError) as info:
        CometAPIHook().create_prediction(SCHNELL, {"prompt": "a cat"})
    assert "connection 'cometapi_default'" in str(info.value) and WRONG_API_KEY not in str(info.value)
    assert sim.stats["created"] == 0 and sim.stats["responses"] == {"401": 1}


@pytest.mark.cometapi_simulator(api_key=None)
def test_a_marker_can_accept_any_key(cometapi_connection):
    assert create(cometapi_connection.base_url, "anything-at-all").status_code == 201


def test_the_wrong_key_fixture_refuses_a_simulator_that_accepts_any_key(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["airflow_provider_cometflux.testing.pytest_plugin"]\n')
    (tmp_path / "test_user.py").write_text(
        textwrap.dedent(
            """
            import pytest

            @pytest.mark.cometapi_simulator(api_key=None)
            def test_silently(cometapi_connection_wrong_key):
                pass
            """
        )
    )
    env = {key: value for key, value in os.environ.items() if key != "AIRFLOW_CONN_COMETAPI_DEFAULT"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and "needs a simulator that checks keys" in result.stdout


@pytest.mark.parametrize(
    ("args", "accepted", "refused", "says"),
    [
        ((), DEFAULT_API_KEY, "sim-other-key-0000", f"accepts only the API key {DEFAULT_API_KEY}"),
        (("--api-key", "sk-my-own-key-123"), "sk-my-own-key-123", DEFAULT_API_KEY, "accepts only the API key given"),
        (("--any-key",), "whatever-key", None, "accepts any non-empty API key"),
    ],
)
def test_the_command_line_checks_the_key_and_says_so(args, accepted, refused, says):
    env = {key: value for key, value in os.environ.items() if key != "COMETAPI_SIMULATOR_API_KEY"}
    command = [sys.executable, "-m", "airflow_provider_cometflux.testing.simulator", "--run-seconds", "0.1", *args]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().rsplit(" ", 1)[-1].strip()
        second = process.stdout.readline()
        assert says in second
        assert "sk-my-own-key-123" not in second  # a key of the caller's is never printed
        assert create(base_url, accepted).status_code == 201
        if refused is not None:
            assert create(base_url, refused).status_code == 401
    finally:
        process.terminate()
        process.communicate(timeout=20)
