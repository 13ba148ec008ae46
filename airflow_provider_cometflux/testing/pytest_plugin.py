"""
Pytest fixtures that run the CometAPI simulator for your own DAG and task tests.

Enable them in your top-level ``conftest.py``::

    pytest_plugins = ["airflow_provider_cometflux.testing.pytest_plugin"]

then::

    def test_my_dag(cometapi_connection):
        sim = cometapi_connection  # the running simulator; cometapi_default now points at it
        ...  # run your task
        assert sim.stats["creates"] == 1

The simulator accepts only the key ``SIMULATOR_API_KEY`` (``sim-0123456789abcdef``), which
``cometapi_connection`` puts in the connection, and answers any other key 401, as CometAPI does. To test what your
DAG does with a wrong key, use ``cometapi_connection_wrong_key`` instead::

    def test_wrong_key(cometapi_connection_wrong_key):
        ...  # run your task: it fails with "CometAPI refused the API key of connection 'cometapi_default'"
        assert cometapi_connection_wrong_key.stats["responses"]["401"] >= 1

Simulator options can be changed per test with a marker (``api_key=None`` accepts any non-empty key)::

    @pytest.mark.cometapi_simulator(run_seconds=2, output_kind="string", api_key="sk-my-test-key-0001")
    def test_slow_service(cometapi_connection): ...

The simulator refuses models other than the FLUX ones (``known_models=None`` accepts any) and draws its images
with Pillow (the ``testing`` extra).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from airflow_provider_cometflux.testing.simulator import CometAPISimulator

__all__ = [
    "CONNECTION_ENV_VAR",
    "SIMULATOR_API_KEY",
    "WRONG_API_KEY",
    "cometapi_connection",
    "cometapi_connection_wrong_key",
    "cometapi_simulator",
]

#: The key the simulator accepts unless a marker says otherwise, and the password :func:`cometapi_connection` sets
#: (long enough for Airflow to mask it in logs).
SIMULATOR_API_KEY = "sim-0123456789abcdef"
#: A key the simulator refuses: the password :func:`cometapi_connection_wrong_key` sets.
WRONG_API_KEY = "sim-wrong-key-fedcba9876543210"
#: The environment variable that defines the ``cometapi_default`` connection.
CONNECTION_ENV_VAR = "AIRFLOW_CONN_COMETAPI_DEFAULT"
#: Simulator options used unless a ``cometapi_simulator`` marker overrides them.
DEFAULT_SIMULATOR_OPTIONS: dict[str, Any] = {"run_seconds": 0.3, "api_key": SIMULATOR_API_KEY}


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``cometapi_simulator`` marker."""
    config.addinivalue_line(
        "markers",
        "cometapi_simulator(**options): keyword arguments for the CometAPISimulator started by the "
        "cometapi_simulator fixture (run_seconds, api_key, output_kind, expire_after, known_models, "
        "requests_per_second, ...)",
    )


@pytest.fixture
def cometapi_simulator(request: pytest.FixtureRequest) -> Iterator[CometAPISimulator]:
    """
    A :class:`~airflow_provider_cometflux.testing.simulator.CometAPISimulator` on a free loopback port.

    Predictions take 0.3 s and only the key :data:`SIMULATOR_API_KEY` is accepted (any other answers 401), unless
    the test has a ``@pytest.mark.cometapi_simulator(**options)`` marker, whose options are passed to the simulator
    (``api_key=None`` accepts any non-empty key).
    """
    from airflow_provider_cometflux.testing.simulator import CometAPISimulator

    options = dict(DEFAULT_SIMULATOR_OPTIONS)
    marker = request.node.get_closest_marker("cometapi_simulator")
    if marker is not None:
        options.update(marker.kwargs)
    with CometAPISimulator("127.0.0.1", 0, **options) as simulator:
        yield simulator


@pytest.fixture
def cometapi_connection(
    cometapi_simulator: CometAPISimulator, monkeypatch: pytest.MonkeyPatch
) -> Iterator[CometAPISimulator]:
    """
    Point the ``cometapi_default`` Airflow connection at the simulator and yield the simulator.

    Sets ``AIRFLOW_CONN_COMETAPI_DEFAULT`` to ``{"conn_type": "cometapi", "host": <base url>,
    "password": <key>}``; the key is the simulator's ``api_key`` if it has one, else :data:`SIMULATOR_API_KEY`.
    """
    _point_at(cometapi_simulator, cometapi_simulator.api_key or SIMULATOR_API_KEY, monkeypatch)
    yield cometapi_simulator


@pytest.fixture
def cometapi_connection_wrong_key(
    cometapi_simulator: CometAPISimulator, monkeypatch: pytest.MonkeyPatch
) -> Iterator[CometAPISimulator]:
    """
    Point ``cometapi_default`` at the simulator with a key it refuses (:data:`WRONG_API_KEY`), and yield the simulator.

    Every API request then answers 401 in CometAPI's shape, as the service answers a wrong key. The simulator must
    check keys (its default); with ``api_key=None`` in a marker the test fails at once instead of passing silently.
    """
    if cometapi_simulator.api_key is None:
        pytest.fail("cometapi_connection_wrong_key needs a simulator that checks keys; remove api_key=None")
    if cometapi_simulator.api_key == WRONG_API_KEY:
        pytest.fail("cometapi_connection_wrong_key: the simulator's api_key is the wrong key itself")
    _point_at(cometapi_simulator, WRONG_API_KEY, monkeypatch)
    yield cometapi_simulator


def _point_at(simulator: CometAPISimulator, key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    connection = {"conn_type": "cometapi", "host": simulator.base_url, "password": key}
    monkeypatch.setenv(CONNECTION_ENV_VAR, json.dumps(connection))
