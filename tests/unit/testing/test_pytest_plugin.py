"""The pytest plugin (:mod:`~airflow_provider_cometflux.testing.pytest_plugin`) in a pytest run of its own."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path


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
