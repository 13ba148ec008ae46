"""Helpers shared by the simulator's own tests: a simulator on loopback and small HTTP clients for it."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from airflow_provider_cometflux.testing.simulator import CometAPISimulator

KEY = "sim-key-7c21"
AUTH = {"Authorization": f"Bearer {KEY}"}
SCHNELL = "black-forest-labs/flux-schnell"
DEV = "black-forest-labs/flux-dev"
PRO = "black-forest-labs/flux-1.1-pro"
KONTEXT_PRO = "black-forest-labs/flux-kontext-pro"
KONTEXT_MAX = "black-forest-labs/flux-kontext-max"
#: Pillow's name of each output format.
PIL_FORMATS = {"png": "PNG", "jpg": "JPEG", "webp": "WEBP"}


@pytest.fixture
def strict_sim() -> Iterator[CometAPISimulator]:
    """A simulator with its default strictness, a key, and 0.05 s predictions."""
    with CometAPISimulator(run_seconds=0.05, api_key=KEY) as simulator:
        yield simulator


def post_create(
    sim: CometAPISimulator, model: str = SCHNELL, headers: dict[str, str] | None = None, **inputs: Any
) -> requests.Response:
    """``POST`` a create with ``inputs`` as the ``input`` object."""
    return requests.post(
        f"{sim.base_url}/replicate/v1/models/{model}/predictions",
        json={"input": inputs},
        headers={**AUTH, **(headers or {})},
        timeout=30,
    )


def get_prediction(
    sim: CometAPISimulator, prediction_id: str, headers: dict[str, str] | None = None
) -> requests.Response:
    """``GET`` a prediction (with the simulator's key unless ``headers`` say otherwise)."""
    url = f"{sim.base_url}/replicate/v1/predictions/{prediction_id}"
    return requests.get(url, headers=headers or AUTH, timeout=30)


def finished(sim: CometAPISimulator, prediction_id: str, limit: float = 10.0) -> dict[str, Any]:
    """Poll until the prediction is terminal; return it."""
    deadline = time.monotonic() + limit
    while True:
        prediction = get_prediction(sim, prediction_id).json()
        if prediction["status"] in ("succeeded", "failed", "canceled", "aborted"):
            return prediction
        assert time.monotonic() < deadline, prediction
        time.sleep(0.02)


def decode(data: bytes) -> tuple[str, tuple[int, int]]:
    """Decode an image file completely with Pillow; return its format and size."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return str(image.format), image.size
