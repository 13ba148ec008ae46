"""
The input schemas of the FLUX models the simulator knows, checked as Replicate checks them.

Replicate validates ``input`` against the model's JSON schema and answers 422 ``application/problem+json``::

    {"title": "Input validation failed", "status": 422,
     "detail": "- input.num_outputs: Must be less than or equal to 4\\n",
     "invalid_fields": [{"type": "number_lte", "field": "input.num_outputs",
                         "description": "Must be less than or equal to 4"}]}

with one ``invalid_fields`` entry (and one ``detail`` line) per problem, in the wording of its JSON-schema
validator: ``prompt is required`` (``required``, field ``input``), ``Invalid type. Expected: integer, given:
string`` (``invalid_type``), ``aspect_ratio must be one of the following: "1:1", "16:9", ...`` (``enum``),
``Must be greater than or equal to 1`` (``number_gte``), ``Must be less than or equal to 4`` (``number_lte``).
Inputs a schema does not name are ignored, as the service ignores them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_KNOWN_MODELS",
    "MODEL_SCHEMAS",
    "Field",
    "invalid_fields",
    "model_not_found_body",
    "validation_problem_body",
]


@dataclass(frozen=True)
class Field:
    """
    One input of a model's schema.

    :param type: the JSON-schema type: ``string``, ``integer``, ``number`` or ``boolean``.
    :param enum: the allowed values, if the input is a choice.
    :param minimum: the smallest allowed number.
    :param maximum: the largest allowed number.
    """

    type: str
    enum: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None


_FLUX_RATIOS = ("1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21")
_PRO_RATIOS = ("custom", "1:1", "16:9", "3:2", "2:3", "4:5", "5:4", "9:16", "3:4", "4:3")
_KONTEXT_RATIOS = (
    "match_input_image",
    "1:1",
    "16:9",
    "9:16",
    "4:3",
    "3:4",
    "3:2",
    "2:3",
    "4:5",
    "5:4",
    "21:9",
    "9:21",
    "2:1",
    "1:2",
)

_SCHNELL: dict[str, Field] = {
    "prompt": Field("string"),
    "aspect_ratio": Field("string", enum=_FLUX_RATIOS),
    "num_outputs": Field("integer", minimum=1, maximum=4),
    "num_inference_steps": Field("integer", minimum=1, maximum=4),
    "seed": Field("integer"),
    "output_format": Field("string", enum=("webp", "jpg", "png")),
    "output_quality": Field("integer", minimum=0, maximum=100),
    "disable_safety_checker": Field("boolean"),
    "go_fast": Field("boolean"),
    "megapixels": Field("string", enum=("1", "0.25")),
}
_DEV: dict[str, Field] = {
    **_SCHNELL,
    "num_inference_steps": Field("integer", minimum=1, maximum=50),
    "guidance": Field("number", minimum=0, maximum=10),
    "image": Field("string"),
    "prompt_strength": Field("number", minimum=0, maximum=1),
}
_PRO: dict[str, Field] = {
    "prompt": Field("string"),
    "aspect_ratio": Field("string", enum=_PRO_RATIOS),
    "width": Field("integer", minimum=256, maximum=1440),
    "height": Field("integer", minimum=256, maximum=1440),
    "image_prompt": Field("string"),
    "safety_tolerance": Field("integer", minimum=1, maximum=6),
    "seed": Field("integer"),
    "prompt_upsampling": Field("boolean"),
    "output_format": Field("string", enum=("webp", "jpg", "png")),
    "output_quality": Field("integer", minimum=0, maximum=100),
}
_KONTEXT: dict[str, Field] = {
    "prompt": Field("string"),
    "input_image": Field("string"),
    "aspect_ratio": Field("string", enum=_KONTEXT_RATIOS),
    "output_format": Field("string", enum=("jpg", "png")),
    "safety_tolerance": Field("integer", minimum=0, maximum=6),
    "seed": Field("integer"),
    "prompt_upsampling": Field("boolean"),
}

#: Each known model's inputs (``prompt`` is required by all of them).
MODEL_SCHEMAS: dict[str, dict[str, Field]] = {
    "black-forest-labs/flux-schnell": _SCHNELL,
    "black-forest-labs/flux-dev": _DEV,
    "black-forest-labs/flux-1.1-pro": _PRO,
    "black-forest-labs/flux-kontext-pro": _KONTEXT,
    "black-forest-labs/flux-kontext-max": _KONTEXT,
}
#: The models the simulator serves unless told otherwise (``known_models=``): the service's ten FLUX models (those
#: without a schema here are served unvalidated).
_PLAIN = ("flux-2-pro", "flux-2-dev", "flux-2-flex", "flux-pro", "flux-1.1-pro-ultra")
DEFAULT_KNOWN_MODELS: frozenset[str] = frozenset(MODEL_SCHEMAS) | {f"black-forest-labs/{n}" for n in _PLAIN}
_REQUIRED = ("prompt",)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if math.isfinite(value) and value.is_integer() else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    return "object"


def _matches(expected: str, given: str) -> bool:
    return given == expected or (expected == "number" and given == "integer")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def invalid_fields(model: str, model_input: dict[str, Any]) -> list[dict[str, str]]:
    """
    Check ``input`` against a known model's schema.

    :param model: ``owner/name``; a model without a schema here is not checked.
    :param model_input: the create request's ``input``.
    :return: Replicate's ``invalid_fields`` entries (``type``, ``field``, ``description``); empty when valid.
    """
    schema = MODEL_SCHEMAS.get(model)
    if schema is None:
        return []
    problems: list[dict[str, str]] = []
    for name in _REQUIRED:
        if name not in model_input:
            problems.append({"type": "required", "field": "input", "description": f"{name} is required"})
    for name, spec in schema.items():
        if name not in model_input:
            continue
        value, where = model_input[name], f"input.{name}"
        given = _json_type(value)
        if not _matches(spec.type, given):
            description = f"Invalid type. Expected: {spec.type}, given: {given}"
            problems.append({"type": "invalid_type", "field": where, "description": description})
            continue
        if spec.enum is not None and value not in spec.enum:
            allowed = ", ".join(json.dumps(choice) for choice in spec.enum)
            description = f"{name} must be one of the following: {allowed}"
            problems.append({"type": "enum", "field": where, "description": description})
        if spec.minimum is not None and value < spec.minimum:
            description = f"Must be greater than or equal to {_number(spec.minimum)}"
            problems.append({"type": "number_gte", "field": where, "description": description})
        if spec.maximum is not None and value > spec.maximum:
            description = f"Must be less than or equal to {_number(spec.maximum)}"
            problems.append({"type": "number_lte", "field": where, "description": description})
    return problems


def validation_problem_body(problems: list[dict[str, str]]) -> dict[str, Any]:
    """The 422 body for ``problems`` (from :func:`invalid_fields`)."""
    detail = "".join(f"- {item['field']}: {item['description']}\n" for item in problems)
    return {"title": "Input validation failed", "detail": detail, "status": 422, "invalid_fields": problems}


def model_not_found_body() -> dict[str, Any]:
    """The 404 body of a create for a model the service does not have (Replicate's wording)."""
    return {"detail": "The requested resource could not be found.", "status": 404}
