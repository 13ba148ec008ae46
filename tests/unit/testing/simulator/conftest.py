"""Helpers of the simulator's own tests: creates, gets and cancels over real HTTP on loopback."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from airflow_provider_cometflux.testing import CometAPISimulator
from tests.unit.testing.conftest import AUTH, KONTEXT_PRO, SCHNELL, finished, get_prediction

RUN = 0.05
KONTEXT = KONTEXT_PRO
ID_RE = re.compile(r"^[a-z2-7]{26}$")
ISO_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
get = get_prediction
wait_done = finished


@pytest.fixture
def sim(strict_sim: CometAPISimulator) -> Iterator[CometAPISimulator]:
    """A simulator with a key and 0.05 s predictions (the package's ``strict_sim``)."""
    yield strict_sim


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


def cancel(sim: CometAPISimulator, prediction_id: str) -> requests.Response:
    return requests.post(f"{sim.base_url}/replicate/v1/predictions/{prediction_id}/cancel", headers=AUTH, timeout=10)
