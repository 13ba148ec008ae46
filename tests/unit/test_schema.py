"""One table of model rules: the provider's validation and the simulator refuse the same inputs, naming the same field.

Every covered model's example passes both; every rule of the table (type, enumeration, range, image format, array
limit, required input, cross-field rule) is broken once and sent to both, which must name the same input.
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


def _post(sim: CometAPISimulator, model: str, model_input: Mapping[str, Any]) -> requests.Response:
    url = f"{sim.base_url}/replicate/v1/models/{model}/predictions"
    return requests.post(url, json={"input": dict(model_input)}, headers={"Authorization": "Bearer k"}, timeout=30)


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


def test_arrays_and_their_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """No covered model takes a list yet (FLUX.2's ``input_images`` will): the checks are ready for it."""
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
