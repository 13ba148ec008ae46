"""
A local simulator of CometAPI's Replicate-format API for FLUX image models.

A real HTTP server on loopback that refuses what the service refuses (unknown models, invalid inputs, bad keys,
request rates above a limit) and misbehaves on demand (fault rules and prompt directives), serving real image
files of FLUX's sizes. Start it from Python::

    with CometAPISimulator(run_seconds=0.5, api_key="sim-0123456789abcdef") as sim:  # any other key: 401
        ...  # point the cometapi connection's host at sim.base_url
        assert sim.stats["creates"] == 1

or as a process (prints ``CometAPI simulator listening on http://127.0.0.1:PORT``, then which key it accepts:
``sim-0123456789abcdef`` unless ``--api-key``/``$COMETAPI_SIMULATOR_API_KEY`` gives another or ``--any-key``)::

    python -m airflow_provider_cometflux.testing.simulator --port 8765 --run-seconds 2

The README's "The simulator" section introduces it; ``docs/simulator.md`` lists its routes, control routes,
counters, prompt directives and fault kinds. Modules: :mod:`.app` (the server), :mod:`.lifecycle` (predictions),
:mod:`.validation` (model schemas), :mod:`.faults`, :mod:`.images` (Pillow), :mod:`.responses`, :mod:`.cli`.
"""

from __future__ import annotations

from airflow_provider_cometflux.testing.simulator.app import CometAPISimulator
from airflow_provider_cometflux.testing.simulator.cli import main
from airflow_provider_cometflux.testing.simulator.faults import (
    FAULT_KINDS,
    FAULT_ROUTES,
    HUGE_SIZE,
    STREAM_SECONDS,
    FaultRule,
    parse_fault_directives,
)
from airflow_provider_cometflux.testing.simulator.lifecycle import (
    DEFAULT_FAILURE_MESSAGE,
    LIST_OUTPUT_MODELS,
    OUTPUT_KINDS,
    TERMINAL_STATUSES,
    parse_duration,
    parse_prefer_wait,
)
from airflow_provider_cometflux.testing.simulator.responses import THROTTLE_DETAIL
from airflow_provider_cometflux.testing.simulator.validation import DEFAULT_KNOWN_MODELS, MODEL_SCHEMAS

# the names the single-module simulator had
_parse_duration = parse_duration
_parse_prefer_wait = parse_prefer_wait

__all__ = [
    "DEFAULT_FAILURE_MESSAGE",
    "DEFAULT_KNOWN_MODELS",
    "FAULT_KINDS",
    "FAULT_ROUTES",
    "HUGE_SIZE",
    "LIST_OUTPUT_MODELS",
    "MODEL_SCHEMAS",
    "OUTPUT_KINDS",
    "STREAM_SECONDS",
    "TERMINAL_STATUSES",
    "THROTTLE_DETAIL",
    "CometAPISimulator",
    "FaultRule",
    "main",
    "parse_fault_directives",
]
