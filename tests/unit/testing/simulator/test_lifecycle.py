"""A prediction's life in the simulator (``simulator.lifecycle``): output shapes, directives, header parsing."""

from __future__ import annotations

import time

import pytest

from airflow_provider_cometflux.testing import CometAPISimulator
from airflow_provider_cometflux.testing.simulator import (
    DEFAULT_FAILURE_MESSAGE,
    _parse_duration,
    _parse_prefer_wait,
)
from tests.unit.testing.conftest import DEV, PRO, SCHNELL
from tests.unit.testing.simulator.conftest import KONTEXT, cancel, create_id, get, wait_done


def test_output_shapes_and_formats_per_model(sim: CometAPISimulator) -> None:
    cases = {
        create_id(sim, "a", SCHNELL, num_outputs=3): (list, 3, "webp"),
        create_id(sim, "b", DEV): (list, 1, "webp"),
        create_id(sim, "c", PRO, output_format="jpg"): (str, 1, "jpg"),
        create_id(sim, "d", KONTEXT): (str, 1, "png"),
        create_id(sim, "e", "black-forest-labs/flux-kontext-max", output_format="jpg"): (str, 1, "jpg"),
        create_id(sim, "g [sim:output=string]", SCHNELL, num_outputs=2): (str, 1, "webp"),
        create_id(sim, "h [sim:output=list]", PRO, output_format="png"): (list, 1, "png"),
    }
    for pid, (shape, count, ext) in cases.items():
        prediction = wait_done(sim, pid)
        output = prediction["output"]
        assert isinstance(output, shape), prediction
        urls = output if isinstance(output, list) else [output]
        assert urls == [f"{sim.base_url}/files/{pid}/{i}.{ext}" for i in range(count)]
        assert prediction["metrics"]["image_count"] == count


@pytest.mark.parametrize(("kind", "model", "shape"), [("list", PRO, list), ("string", SCHNELL, str)])
def test_output_kind_forces_the_shape(kind: str, model: str, shape: type) -> None:
    with CometAPISimulator(run_seconds=0.05, output_kind=kind) as sim:
        pid = create_id(sim, "a cat", model)
        assert isinstance(wait_done(sim, pid)["output"], shape)


def test_output_kind_is_checked() -> None:
    with pytest.raises(ValueError, match="output_kind"):
        CometAPISimulator(output_kind="tuple")


def test_directives(sim: CometAPISimulator) -> None:
    ids = {
        name: create_id(sim, f"a cat {directive}")
        for name, directive in {
            "failed": "[sim:failed]",
            "custom": "[sim:failed=Prediction interrupted; please retry (code: PA)]",
            "canceled": "[sim:canceled]",
            "aborted": "[SIM:aborted]",
            "stuck": "[sim:stuck]",
            "slow": "[sim:slow=3]",
            "unknown": "[sim:whatever=1] [sim:slow=abc]",
        }.items()
    }
    time.sleep(0.35)  # every other one done (0.05 s), the slow one past its start (10% of 3 s) with time to spare
    state = {name: get(sim, pid).json() for name, pid in ids.items()}
    assert state["failed"]["status"] == "failed"
    assert state["failed"]["error"] == DEFAULT_FAILURE_MESSAGE and state["failed"]["output"] is None
    assert DEFAULT_FAILURE_MESSAGE in state["failed"]["logs"]
    assert state["custom"]["error"] == "Prediction interrupted; please retry (code: PA)"
    assert state["canceled"]["status"] == "canceled" and state["canceled"]["error"] is None
    assert state["aborted"]["status"] == "aborted" and "started_at" not in state["aborted"]
    assert state["stuck"]["status"] == "processing"
    assert state["slow"]["status"] == "processing"
    assert state["unknown"]["status"] == "succeeded"

    for name in ("failed", "canceled"):  # terminal: total_time, and predict_time as they had started
        assert "completed_at" in state[name] and set(state[name]["metrics"]) == {"total_time", "predict_time"}
    assert "completed_at" in state["aborted"] and set(state["aborted"]["metrics"]) == {"total_time"}
    assert cancel(sim, ids["stuck"]).json()["status"] == "canceled"


def test_an_aborted_prediction_starts_as_any_other() -> None:
    """Until its time is up an aborted prediction looks like any other (a simulator whose time never comes here)."""
    with CometAPISimulator(run_seconds=60) as slow:
        pid = create_id(slow, "a cat [sim:aborted]")
        assert get(slow, pid).json()["status"] == "starting"


def test_header_parsers() -> None:
    assert _parse_prefer_wait("wait=10") == 10
    assert _parse_prefer_wait("respond-async, wait=5") == 5
    assert _parse_prefer_wait("wait") == 60
    assert _parse_prefer_wait("wait=0") == 1
    assert _parse_prefer_wait("wait=600") == 60
    assert _parse_prefer_wait("return=minimal") is None
    assert _parse_prefer_wait(None) is None
    assert _parse_duration("5m") == 300
    assert _parse_duration("1h30m") == 5400
    assert _parse_duration("250ms") == 0.25
    assert _parse_duration("90") == 90
    assert _parse_duration("5 minutes") is None
    assert _parse_duration("") is None
