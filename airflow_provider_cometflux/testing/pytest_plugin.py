"""
Pytest fixtures that run the CometAPI simulator for your own DAG and task tests.

Enable them in your top-level ``conftest.py``::

    pytest_plugins = ["airflow_provider_cometflux.testing.pytest_plugin"]

then::

    def test_my_dag(cometapi_connection):
        sim = cometapi_connection  # the running simulator; cometapi_default now points at it
        ...  # run your task
        assert sim.stats["creates"] == 1

Simulator options can be changed per test with a marker::

    @pytest.mark.cometapi_simulator(run_seconds=2, output_kind="string", api_key="sim-test-key")
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

__all__ = ["CONNECTION_ENV_VAR", "SIMULATOR_API_KEY", "cometapi_connection", "cometapi_simulator"]

#: The password of the connection set by :func:`cometapi_connection`.
SIMULATOR_API_KEY = "sim-test-key"
#: The environment variable that defines the ``cometapi_default`` connection.
CONNECTION_ENV_VAR = "AIRFLOW_CONN_COMETAPI_DEFAULT"
#: Simulator options used unless a ``cometapi_simulator`` marker overrides them.
DEFAULT_SIMULATOR_OPTIONS: dict[str, Any] = {"run_seconds": 0.3, "api_key": None}


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

    Predictions take 0.3 s and any non-empty bearer token is accepted, unless the test has a
    ``@pytest.mark.cometapi_simulator(**options)`` marker, whose options are passed to the simulator.
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
    "password": <key>}``; the key is the simulator's ``api_key`` if it has one, else ``sim-test-key``.
    """
    password = cometapi_simulator.api_key or SIMULATOR_API_KEY
    connection = {"conn_type": "cometapi", "host": cometapi_simulator.base_url, "password": password}
    monkeypatch.setenv(CONNECTION_ENV_VAR, json.dumps(connection))
    yield cometapi_simulator
