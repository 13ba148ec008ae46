from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_provider_cometflux.pacing import RetryPolicy

# pytest_plugins = ["airflow_provider_cometflux.testing.pytest_plugin"]

TEST_KEY = "sk-test-0123456789abcdef"

_TESTS = Path(__file__).parent
_UNIT = _TESTS / "unit"
#: Tests whose subject does not depend on the Airflow release: the simulator (plain aiohttp and Pillow), the model
#: rules, the pacing rules, the HTTP transport, the contract's names; and, run through a real Airflow, the provider's
#: own answers to the service's wrong answers and faults (the transport, the downloads, the retry policy: the
#: Airflow path they take is the one tests/integration/test_dags.py proves on every release). Marked
#: ``any_release``, which ``make test`` runs on the newest release only (and the unit tests on every Python).
ANY_RELEASE = [
    _TESTS / "integration" / "test_wrong_answers.py",
    _TESTS / "reliability" / "test_policy.py",
    _TESTS / "reliability" / "test_fault_matrix.py",
    _UNIT / "testing",
    _UNIT / "test_schema.py",
    _UNIT / "test_models_table.py",
    _UNIT / "test_models.py",
    _UNIT / "test_pacing.py",
    _UNIT / "test_contract.py",
    _UNIT / "test_cost.py",
    _UNIT / "hooks" / "test_transport.py",
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if any(place == item.path or place in item.path.parents for place in ANY_RELEASE):
            item.add_marker(pytest.mark.any_release)


BASE = "https://api.cometapi.test"


@pytest.fixture
def api_connection(monkeypatch: pytest.MonkeyPatch) -> str:
    """A ``cometapi_default`` connection pointing at a fake host, for requests-mock tests."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_COMETAPI_DEFAULT", json.dumps({"conn_type": "cometapi", "host": BASE, "password": TEST_KEY})
    )
    return BASE


@pytest.fixture
def fast_retries() -> RetryPolicy:
    """A retry policy without real waiting, to give a hook (``CometAPIHook(retry_policy=...)``) in retry tests."""
    return RetryPolicy(max_retries=3, base_delay=0.001, max_delay=0.01)


def prediction_json(pid: str = "p1abc", status: str = "starting", output: object = None, **extra: object) -> dict:
    """A prediction as the service answers it."""
    body = {
        "id": pid,
        "model": "black-forest-labs/flux-schnell",
        "version": "",
        "input": {"prompt": "a cat"},
        "logs": "",
        "output": output,
        "data_removed": False,
        "error": None,
        "source": "api",
        "status": status,
        "created_at": "2026-11-25T10:00:00.000Z",
        "urls": {
            "get": f"https://api.replicate.com/v1/predictions/{pid}",
            "cancel": f"https://api.replicate.com/v1/predictions/{pid}/cancel",
            "stream": f"https://stream.replicate.com/v1/files/{pid}",
            "web": f"https://replicate.com/p/{pid}",
        },
    }
    body.update(extra)
    return body


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop the warm Airflow servers this process started (tests/airflow_cli.py), by PID, before it ends."""
    import sys

    airflow_cli = sys.modules.get("tests.airflow_cli")
    if airflow_cli is not None:
        airflow_cli.stop_servers()
