"""The simulator refuses what the real service refuses and answers in its shapes, over real HTTP on loopback."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from airflow_provider_cometflux.models import KNOWN_MODELS
from airflow_provider_cometflux.testing.simulator import DEFAULT_KNOWN_MODELS, CometAPISimulator
from tests.unit.testing.conftest import (
    DEV,
    KONTEXT_MAX,
    KONTEXT_PRO,
    PRO,
    SCHNELL,
    finished,
    get_prediction,
    post_create,
)
from tests.unit.testing.simulator.conftest import KONTEXT, RUN, create

# ------------------------------------------------------------------------------------------ unknown models


def test_the_default_known_models_are_the_flux_models() -> None:
    """The ten FLUX models CometAPI serves, and flux-2-max (Replicate's), all from the schema."""
    flux_2 = {f"black-forest-labs/flux-2-{name}" for name in ("pro", "dev", "flex", "max")}
    others = {"black-forest-labs/flux-pro", "black-forest-labs/flux-1.1-pro-ultra"}
    assert {SCHNELL, DEV, PRO, KONTEXT_PRO, KONTEXT_MAX} | flux_2 | others == DEFAULT_KNOWN_MODELS
    # the provider's list of the service's models (a 404 suggests the nearest) is the schema's, less flux-2-max
    assert set(KNOWN_MODELS) == DEFAULT_KNOWN_MODELS - {"black-forest-labs/flux-2-max"} and len(KNOWN_MODELS) == 10


@pytest.mark.parametrize("model", ["nobody/nomodel", "black-forest-labs/flux-schnel", "black-forest-labs/FLUX-dev"])
def test_an_unknown_model_is_refused_as_the_service_refuses_it(strict_sim: CometAPISimulator, model: str) -> None:
    response = post_create(strict_sim, model, prompt="a cat")
    assert response.status_code == 404
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert response.json() == {"detail": "The requested resource could not be found.", "status": 404}
    assert not strict_sim.predictions and strict_sim.stats["created"] == 0
    assert strict_sim.create_requests[-1]["status"] == 404


def test_known_models_is_configurable() -> None:
    with CometAPISimulator(run_seconds=0.05, known_models=["acme/painter"]) as sim:
        assert post_create(sim, "acme/painter", prompt="a cat", anything="goes").status_code == 201
        assert post_create(sim, SCHNELL, prompt="a cat").status_code == 404
    with CometAPISimulator(run_seconds=0.05, known_models=None) as sim:
        response = post_create(sim, "nobody/nomodel", prompt="a cat", output_format="tiff")
        assert response.status_code == 201
        assert finished(sim, response.json()["id"])["status"] == "succeeded"


def test_an_unknown_model_is_checked_after_the_key() -> None:
    with CometAPISimulator(run_seconds=0.05, api_key="right") as sim:
        response = post_create(sim, "nobody/nomodel", headers={"Authorization": "Bearer wrong"}, prompt="a")
        assert response.status_code == 401


# ---------------------------------------------------------------------------------------------- validation

INVALID: list[tuple[str, dict[str, Any], list[dict[str, str]]]] = [
    (SCHNELL, {}, [{"type": "required", "field": "input", "description": "prompt is required"}]),
    (
        SCHNELL,
        {"prompt": 7},
        [
            {
                "type": "invalid_type",
                "field": "input.prompt",
                "description": "Invalid type. Expected: string, given: integer",
            }
        ],
    ),
    (
        SCHNELL,
        {"prompt": "a", "aspect_ratio": "7:5"},
        [
            {
                "type": "enum",
                "field": "input.aspect_ratio",
                "description": 'aspect_ratio must be one of the following: "1:1", "16:9", "21:9", "3:2", "2:3", '
                '"4:5", "5:4", "3:4", "4:3", "9:16", "9:21"',
            }
        ],
    ),
    (
        SCHNELL,
        {"prompt": "a", "num_inference_steps": 5},
        [
            {
                "type": "number_lte",
                "field": "input.num_inference_steps",
                "description": "Must be less than or equal to 4",
            }
        ],
    ),
    (
        DEV,
        {"prompt": "a", "num_inference_steps": 0},
        [
            {
                "type": "number_gte",
                "field": "input.num_inference_steps",
                "description": "Must be greater than or equal to 1",
            }
        ],
    ),
    (
        DEV,
        {"prompt": "a", "guidance": 10.5},
        [{"type": "number_lte", "field": "input.guidance", "description": "Must be less than or equal to 10"}],
    ),
    (
        DEV,
        {"prompt": "a", "prompt_strength": -0.1},
        [{"type": "number_gte", "field": "input.prompt_strength", "description": "Must be greater than or equal to 0"}],
    ),
    (
        SCHNELL,
        {"prompt": "a", "megapixels": 1},
        [
            {
                "type": "invalid_type",
                "field": "input.megapixels",
                "description": "Invalid type. Expected: string, given: integer",
            }
        ],
    ),
    (
        SCHNELL,
        {"prompt": "a", "megapixels": "2"},
        [
            {
                "type": "enum",
                "field": "input.megapixels",
                "description": 'megapixels must be one of the following: "1", "0.25"',
            }
        ],
    ),
    (
        SCHNELL,
        {"prompt": "a", "output_quality": 101},
        [{"type": "number_lte", "field": "input.output_quality", "description": "Must be less than or equal to 100"}],
    ),
    (
        SCHNELL,
        {"prompt": "a", "go_fast": "yes"},
        [
            {
                "type": "invalid_type",
                "field": "input.go_fast",
                "description": "Invalid type. Expected: boolean, given: string",
            }
        ],
    ),
    (
        SCHNELL,
        {"prompt": "a", "seed": 1.5},
        [
            {
                "type": "invalid_type",
                "field": "input.seed",
                "description": "Invalid type. Expected: integer, given: number",
            }
        ],
    ),
    (
        PRO,
        {"prompt": "a", "safety_tolerance": 0},
        [
            {
                "type": "number_gte",
                "field": "input.safety_tolerance",
                "description": "Must be greater than or equal to 1",
            }
        ],
    ),
    (
        PRO,
        {"prompt": "a", "aspect_ratio": "custom", "width": 2048, "height": 100},
        [
            {"type": "number_lte", "field": "input.width", "description": "Must be less than or equal to 1440"},
            {"type": "number_gte", "field": "input.height", "description": "Must be greater than or equal to 256"},
        ],
    ),
    (
        PRO,
        {"prompt": "a", "aspect_ratio": "21:9"},
        [
            {
                "type": "enum",
                "field": "input.aspect_ratio",
                "description": 'aspect_ratio must be one of the following: "custom", "1:1", "16:9", "3:2", "2:3", '
                '"4:5", "5:4", "9:16", "3:4", "4:3"',
            }
        ],
    ),
    (
        KONTEXT_PRO,
        {"prompt": "a", "safety_tolerance": 7, "output_format": "webp"},
        [
            {
                "type": "enum",
                "field": "input.output_format",
                "description": 'output_format must be one of the following: "jpg", "png"',
            },
            {"type": "number_lte", "field": "input.safety_tolerance", "description": "Must be less than or equal to 6"},
        ],
    ),
    (
        KONTEXT_MAX,
        {"prompt": "a", "prompt_upsampling": 1},
        [
            {
                "type": "invalid_type",
                "field": "input.prompt_upsampling",
                "description": "Invalid type. Expected: boolean, given: integer",
            }
        ],
    ),
]


@pytest.mark.parametrize(("model", "inputs", "expected"), INVALID)
def test_invalid_inputs_answer_422_in_replicates_wording(
    strict_sim: CometAPISimulator, model: str, inputs: dict[str, Any], expected: list[dict[str, str]]
) -> None:
    response = post_create(strict_sim, model, **inputs)
    assert response.status_code == 422
    assert response.headers["Content-Type"].startswith("application/problem+json")
    body = response.json()
    assert body["title"] == "Input validation failed" and body["status"] == 422
    assert sorted(body["invalid_fields"], key=lambda item: item["field"]) == sorted(
        expected, key=lambda item: item["field"]
    )
    lines = body["detail"].splitlines()
    assert sorted(lines) == sorted(f"- {item['field']}: {item['description']}" for item in expected)
    assert body["detail"].endswith("\n")
    assert not strict_sim.predictions


VALID: list[tuple[str, dict[str, Any]]] = [
    (
        SCHNELL,
        {
            "prompt": "",
            "aspect_ratio": "9:21",
            "num_outputs": 4,
            "num_inference_steps": 4,
            "seed": 3,
            "output_format": "png",
            "output_quality": 0,
            "go_fast": True,
            "megapixels": "0.25",
            "disable_safety_checker": True,
            "not_in_the_schema": {"ignored": True},
        },
    ),
    (DEV, {"prompt": "a", "num_inference_steps": 50, "guidance": 0, "prompt_strength": 1, "image": "https://x/y"}),
    (DEV, {"prompt": "a", "guidance": 3, "seed": 4.0}),
    (PRO, {"prompt": "a", "aspect_ratio": "custom", "width": 256, "height": 1440, "safety_tolerance": 6}),
    (PRO, {"prompt": "a", "image_prompt": "https://x/y", "prompt_upsampling": False, "output_quality": 100}),
    (KONTEXT_PRO, {"prompt": "a", "input_image": "https://x/y", "aspect_ratio": "match_input_image"}),
    (KONTEXT_MAX, {"prompt": "a", "aspect_ratio": "2:1", "safety_tolerance": 0, "output_format": "jpg"}),
]


@pytest.mark.parametrize(("model", "inputs"), VALID)
def test_valid_inputs_are_accepted(strict_sim: CometAPISimulator, model: str, inputs: dict[str, Any]) -> None:
    response = post_create(strict_sim, model, **inputs)
    assert response.status_code == 201, response.text
    assert finished(strict_sim, response.json()["id"])["status"] == "succeeded"


def test_validation_can_be_turned_off() -> None:
    with CometAPISimulator(run_seconds=0.05, validate_input=False) as sim:
        assert post_create(sim, SCHNELL, num_inference_steps=99).status_code == 201
        assert post_create(sim, "nobody/nomodel", prompt="a").status_code == 404  # still an unknown model


# ---------------------------------------------------------------------------------- version and metrics


def test_version_is_hidden_and_metrics_appear_when_terminal(strict_sim: CometAPISimulator) -> None:
    created = post_create(strict_sim, DEV, prompt="a fox [sim:slow=0.5]", num_outputs=2).json()
    assert created["version"] == "hidden" and "metrics" not in created
    time.sleep(0.1)
    running = get_prediction(strict_sim, created["id"]).json()
    assert running["status"] == "processing" and "metrics" not in running
    done = finished(strict_sim, created["id"])
    assert done["version"] == "hidden"
    assert set(done["metrics"]) == {"predict_time", "total_time", "image_count"}
    assert done["metrics"]["total_time"] == pytest.approx(0.5)
    assert done["metrics"]["predict_time"] == pytest.approx(0.45)
    assert done["metrics"]["total_time"] > done["metrics"]["predict_time"]
    assert done["metrics"]["image_count"] == 2
    failed = finished(strict_sim, post_create(strict_sim, prompt="x [sim:failed]").json()["id"])
    assert set(failed["metrics"]) == {"predict_time", "total_time"}


# -------------------------------------------------------------------------------------------- data removal


def test_data_removal_as_the_service_does_it() -> None:
    with CometAPISimulator(run_seconds=0.05, expire_after=0.2) as sim:
        pid = post_create(sim, SCHNELL, prompt="a kept cat", num_outputs=2).json()["id"]
        before = finished(sim, pid)
        assert before["data_removed"] is False and len(before["output"]) == 2
        assert before["input"]["prompt"] == "a kept cat" and before["logs"]
        assert requests.get(before["output"][0], timeout=10).status_code == 200
        time.sleep(0.3)
        after = get_prediction(sim, pid).json()
        assert after["status"] == "succeeded"
        assert after["output"] is None and after["data_removed"] is True
        assert "input" not in after and "logs" not in after
        assert after["id"] == pid and after["completed_at"] == before["completed_at"]
        assert requests.get(before["output"][0], timeout=10).status_code == 404
        assert sim.predictions[pid]["data_removed"] is True


# --------------------------------------------------------------------------------------- empty successes


def test_output_empty_and_null_succeed_without_images(strict_sim: CometAPISimulator) -> None:
    empty_id = post_create(strict_sim, SCHNELL, prompt="a [sim:output=empty]", num_outputs=2).json()["id"]
    null_id = post_create(strict_sim, PRO, prompt="a [sim:output=null]").json()["id"]
    empty, null = finished(strict_sim, empty_id), finished(strict_sim, null_id)
    assert empty["status"] == "succeeded" and empty["output"] == [] and empty["data_removed"] is False
    assert null["status"] == "succeeded" and null["output"] is None and null["data_removed"] is False
    assert empty["metrics"]["image_count"] == 0 and null["metrics"]["image_count"] == 0
    assert requests.get(f"{strict_sim.base_url}/files/{empty_id}/0.webp", timeout=10).status_code == 404


@pytest.mark.parametrize(
    ("model", "inputs", "field"),
    [
        (SCHNELL, {"prompt": None}, "input"),
        (PRO, {"prompt": 3}, "input.prompt"),
        (KONTEXT, {"output_format": "webp"}, "input.output_format"),
        (SCHNELL, {"output_format": "gif"}, "input.output_format"),
        (DEV, {"num_outputs": 5}, "input.num_outputs"),
        (SCHNELL, {"num_outputs": "2"}, "input.num_outputs"),
    ],
)
def test_known_models_validate_inputs(sim: CometAPISimulator, model: str, inputs: dict[str, Any], field: str) -> None:
    inputs = {"prompt": "a cat", **inputs}
    response = create(sim, inputs.pop("prompt"), model, **inputs)
    assert response.status_code == 422
    assert response.headers["Content-Type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == 422 and field in body["detail"]
    assert [item["field"] for item in body["invalid_fields"]] == [field]


def test_validation_can_be_turned_off_and_skips_other_models() -> None:
    with CometAPISimulator(run_seconds=RUN, validate_input=False) as sim:
        assert create(sim, None, SCHNELL, num_outputs=9).status_code == 201
    with CometAPISimulator(run_seconds=RUN, known_models=None) as sim:
        assert create(sim, None, "acme/anything", output_format="tiff").status_code == 201
