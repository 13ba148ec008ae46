"""One table of model rules: the provider's validation and the simulator refuse the same inputs, naming the same field.

Every covered model's example passes both; every rule of the table (type, enumeration, range, image format, array
limit, required input, cross-field rule and limit) is broken once and sent to both, which must name the same input.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import requests

from airflow_provider_cometflux import schema
from airflow_provider_cometflux.exceptions import CometFluxInputError
from airflow_provider_cometflux.models import validate_input
from airflow_provider_cometflux.schema import MODELS, Input
from airflow_provider_cometflux.testing.pytest_plugin import SIMULATOR_API_KEY
from airflow_provider_cometflux.testing.simulator import CometAPISimulator


@pytest.fixture(scope="module")
def simulator() -> Iterator[CometAPISimulator]:
    """One simulator for the many refusals (the examples use the pytest plugin's ``cometapi_simulator``)."""
    with CometAPISimulator("127.0.0.1", 0, run_seconds=0.3) as sim:
        yield sim


WRONG_TYPE = {"string": 5, "integer": "1", "number": "1.5", "boolean": "yes", "array": "x"}


def _item(rule: Input) -> Any:
    """A valid value of ``rule`` (for filling arrays)."""
    if rule.enum:
        return rule.enum[0]
    if rule.format == schema.URI:
        return "https://example.com/a.png"
    return {"string": "x", "boolean": True}.get(rule.type, rule.minimum or 0)


def _bad_values(rule: Input) -> Iterator[tuple[str, Any]]:
    """One refused value per check the rule makes."""
    yield schema.TYPE, WRONG_TYPE[rule.type]
    if rule.enum is not None:
        yield schema.ENUM, "not-a-choice"
    if rule.format == schema.URI:
        yield schema.FORMAT, "/local/file.png"
    if rule.minimum is not None:
        yield schema.MINIMUM, rule.minimum - 1
    if rule.maximum is not None:
        yield schema.MAXIMUM, rule.maximum + 1
    if rule.max_items is not None and rule.items is not None:
        yield schema.MAX_ITEMS, [_item(rule.items)] * (rule.max_items + 1)


def _refusals() -> Iterator[Any]:
    for model, table in MODELS.items():
        short = model.rpartition("/")[2]
        yield pytest.param(model, {}, "prompt", id=f"{short}-prompt-required")
        for name, rule in table.inputs.items():
            for kind, value in _bad_values(rule):
                yield pytest.param(model, {"prompt": "a cat", name: value}, name, id=f"{short}-{name}-{kind}")
        for needs in table.needs:
            bad = {"prompt": "a cat", needs.field: needs.value}
            yield pytest.param(model, bad, needs.field, id=f"{short}-{needs.field}-needs")
        for limit in table.limits:
            bad = {"prompt": "a cat", limit.when: _item(table.inputs[limit.when]), limit.field: limit.maximum + 1}
            yield pytest.param(model, bad, limit.field, id=f"{short}-{limit.field}-limit")


def _post(sim: CometAPISimulator, model: str, model_input: Mapping[str, Any]) -> requests.Response:
    url = f"{sim.base_url}/replicate/v1/models/{model}/predictions"
    return requests.post(url, json={"input": dict(model_input)}, headers=_auth(sim), timeout=30)


def _auth(sim: CometAPISimulator) -> dict[str, str]:
    return {"Authorization": f"Bearer {sim.api_key or SIMULATOR_API_KEY}"}


def _named(entry: Mapping[str, str]) -> str:
    """The input an ``invalid_fields`` entry names (Replicate names a missing one in its description)."""
    if entry["type"] == "required":
        return entry["description"].split()[0]
    return entry["field"].removeprefix("input.")


@pytest.mark.parametrize("model", sorted(MODELS))
def test_each_models_example_passes_both(cometapi_simulator: CometAPISimulator, model: str) -> None:
    example = MODELS[model].example
    validate_input(model, example)
    assert schema.problems(model, example) == []
    response = _post(cometapi_simulator, model, example)
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(("model", "model_input", "field"), list(_refusals()))
def test_each_rule_is_refused_by_both_naming_the_same_field(
    simulator: CometAPISimulator, model: str, model_input: dict[str, Any], field: str
) -> None:
    with pytest.raises(CometFluxInputError) as refused:
        validate_input(model, model_input)
    assert str(refused.value).startswith(f"input.{field}: ")
    response = _post(simulator, model, model_input)
    assert response.status_code == 422, response.text
    assert [_named(entry) for entry in response.json()["invalid_fields"]] == [field]


@pytest.mark.parametrize(
    ("model", "aspect_ratio", "allowed"),
    [
        ("black-forest-labs/flux-kontext-pro", "2:1", True),
        ("black-forest-labs/flux-kontext-max", "1:2", True),
        ("black-forest-labs/flux-1.1-pro", "21:9", False),
        ("black-forest-labs/flux-1.1-pro", "9:21", False),
    ],
)
def test_the_aspect_ratios_the_service_takes(model: str, aspect_ratio: str, allowed: bool) -> None:
    """flux-models.md: kontext takes 2:1 and 1:2 (§8, §9); flux-1.1-pro has no 21:9 nor 9:21 (§6)."""
    found = schema.problems(model, {"prompt": "a", "aspect_ratio": aspect_ratio})
    assert found == ([] if allowed else [schema.Problem("aspect_ratio", schema.ENUM, aspect_ratio, found[0].rule)])


def test_output_shape_and_default_format_come_from_the_table() -> None:
    assert {"black-forest-labs/flux-schnell", "black-forest-labs/flux-dev"} == schema.LIST_OUTPUT_MODELS
    assert schema.default_output_format("black-forest-labs/flux-kontext-pro") == "png"
    assert schema.default_output_format("acme/other") == "webp"
    assert schema.IMAGE_INPUTS == ("image", "image_prompt", "input_image")
    assert all(len(table.checked) == 10 and table.source for table in MODELS.values())
    assert schema.default_output_format("black-forest-labs/flux-1.1-pro-ultra") == "jpg"


COMETAPI_MODELS = {
    f"black-forest-labs/{name}"
    for name in (
        "flux-2-pro",
        "flux-2-dev",
        "flux-2-flex",
        "flux-kontext-max",
        "flux-kontext-pro",
        "flux-schnell",
        "flux-pro",
        "flux-dev",
        "flux-1.1-pro-ultra",
        "flux-1.1-pro",
    )
}


def test_every_model_cometapi_serves_is_in_the_table_and_flux_2_max_is_marked() -> None:
    """DESIGN.md: CometAPI serves ten FLUX models; flux-2-max is Replicate's only (flux-models.md §4)."""
    served = {name for name, table in MODELS.items() if table.served_by_cometapi}
    assert served == COMETAPI_MODELS
    assert set(MODELS) - served == {"black-forest-labs/flux-2-max"}


@pytest.mark.parametrize(
    ("model", "count", "allowed"),
    [
        ("black-forest-labs/flux-2-pro", 8, True),
        ("black-forest-labs/flux-2-pro", 9, False),
        ("black-forest-labs/flux-2-max", 9, False),
        ("black-forest-labs/flux-2-flex", 10, True),
        ("black-forest-labs/flux-2-flex", 11, False),
        ("black-forest-labs/flux-2-dev", 4, True),
        ("black-forest-labs/flux-2-dev", 5, False),
    ],
)
def test_flux_2_input_images_limits(model: str, count: int, allowed: bool) -> None:
    """flux-models.md §1-4: at most 8 (pro, max), 10 (flex), 4 (dev) input images."""
    found = schema.problems(model, {"prompt": "a", "input_images": ["https://example.com/a.png"] * count})
    assert [(p.field, p.kind) for p in found] == ([] if allowed else [("input_images", schema.MAX_ITEMS)])


def test_kontext_safety_tolerance_is_at_most_2_with_an_input_image() -> None:
    """flux-models.md §8: "2 is currently the maximum allowed when input images are used" (0-6 otherwise)."""
    model = "black-forest-labs/flux-kontext-pro"
    assert schema.problems(model, {"prompt": "a", "safety_tolerance": 6}) == []
    assert (
        schema.problems(model, {"prompt": "a", "input_image": "https://example.com/a.png", "safety_tolerance": 2}) == []
    )
    with pytest.raises(
        CometFluxInputError, match=r"^input.safety_tolerance: 3 is out of range; expected at most 2 when"
    ):
        validate_input(model, {"prompt": "a", "input_image": "https://example.com/a.png", "safety_tolerance": 3})


def test_resolution_with_a_custom_aspect_ratio_is_flagged_not_refused(caplog: pytest.LogCaptureFixture) -> None:
    """flux-models.md §1: resolution is "Not used when aspect_ratio='custom'"."""
    model_input = {"prompt": "a", "aspect_ratio": "custom", "width": 512, "height": 512, "resolution": "4 MP"}
    with caplog.at_level("WARNING", logger="airflow_provider_cometflux.models"):
        validate_input("black-forest-labs/flux-2-pro", model_input)
    assert "input.resolution is ignored when input.aspect_ratio is 'custom'" in caplog.text
    assert schema.problems("black-forest-labs/flux-2-pro", model_input) == []


@pytest.mark.parametrize(
    ("model_input", "overridden"),
    [
        ({"prompt": "a", "num_outputs": 8}, "input.num_outputs: 8 is out of range"),
        ({"prompt": "a", "aspect_ratio": "7:5"}, "input.aspect_ratio: '7:5' is not allowed"),
    ],
)
def test_unchecked_inputs_send_a_refused_input_with_a_warning(
    caplog: pytest.LogCaptureFixture, model_input: dict[str, Any], overridden: str
) -> None:
    model = "black-forest-labs/flux-schnell"
    with pytest.raises(CometFluxInputError):
        validate_input(model, model_input)
    field = overridden.split(":")[0].removeprefix("input.")
    with caplog.at_level("WARNING", logger="airflow_provider_cometflux.models"):
        validate_input(model, model_input, unchecked=[field])
    assert overridden in caplog.text and "unchecked_inputs overrides" in caplog.text
    assert MODELS[model].checked in caplog.text
    with pytest.raises(CometFluxInputError, match=r"input\.prompt"):
        validate_input(model, {"prompt": "", "num_outputs": 8}, unchecked=["prompt", "num_outputs"])


def test_unchecked_inputs_override_only_the_inputs_named() -> None:
    model_input = {"prompt": "a", "num_outputs": 8, "aspect_ratio": "7:5"}
    with pytest.raises(CometFluxInputError, match=r"^input.aspect_ratio"):
        validate_input("black-forest-labs/flux-schnell", model_input, unchecked=["num_outputs"])
    images = {"prompt": "a", "input_images": ["https://example.com/a.png", "/local.png"]}
    validate_input("black-forest-labs/flux-2-pro", images, unchecked=["input_images"])


def test_arrays_and_their_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """The array checks on a table of their own (FLUX.2's ``input_images`` use them: see the parametrised tests)."""
    images = Input("array", items=Input("string", format=schema.URI), max_items=2)
    table = schema.ModelSchema({"prompt": Input("string"), "input_images": images}, {"prompt": "a"}, "2026-04-23", "x")
    monkeypatch.setitem(MODELS, "acme/flux-2-like", table)
    url = "https://example.com/a.png"
    assert schema.problems("acme/flux-2-like", {"prompt": "a", "input_images": [url, url]}) == []
    kinds = [(p.field, p.kind) for p in schema.problems("acme/flux-2-like", {"prompt": "a", "input_images": [url] * 3})]
    assert kinds == [("input_images", schema.MAX_ITEMS)]
    (bad,) = schema.problems("acme/flux-2-like", {"prompt": "a", "input_images": [url, "/x.png"]})
    assert (bad.field, bad.kind, bad.where) == ("input_images.1", schema.FORMAT, "input.input_images.1")
    with pytest.raises(CometFluxInputError, match=r"^input.input_images: .* a list of at most 2 \(an http"):
        validate_input("acme/flux-2-like", {"prompt": "a", "input_images": [url] * 3})


@pytest.mark.parametrize("model", sorted(MODELS))
def test_the_simulators_images_follow_the_models_output_shape_and_format(
    simulator: CometAPISimulator, model: str
) -> None:
    example = {key: value for key, value in MODELS[model].example.items() if key != "output_format"}
    prediction_id = _post(simulator, model, example).json()["id"]
    simulator.finish([prediction_id])
    output = simulator.predictions[prediction_id]["output"]
    if MODELS[model].output == schema.OUTPUT_URI_LIST:
        assert isinstance(output, list) and len(output) == example.get("num_outputs", 1)
        url = output[0]
    else:
        assert isinstance(output, str)
        url = output
    assert url.endswith("." + MODELS[model].default_output_format)


def test_flux_2_resolution_and_custom_sizes() -> None:
    """flux-models.md §1: resolution sets the area (at most 2048 a side), ignored with custom; custom rounds to 16."""
    from airflow_provider_cometflux.testing.simulator.images import flux_size

    assert flux_size("1:1", resolution="1 MP") == (1024, 1024)
    assert flux_size("1:1", resolution="4 MP") == (2048, 2048)
    assert flux_size("16:9", resolution="4 MP") == (2048, 1168)
    assert flux_size("1:1", resolution="0.5 MP") == (720, 720)
    assert flux_size("custom", resolution="4 MP", width=1010, height=600, step=16) == (1008, 608)
    assert flux_size("custom", width=1010, height=600) == (1024, 608)
