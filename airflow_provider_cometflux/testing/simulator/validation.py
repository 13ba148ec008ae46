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
Inputs a schema does not name are ignored, as the service ignores them. The rules are the provider's own table
(:mod:`airflow_provider_cometflux.schema`), so the simulator refuses exactly what the provider's validation refuses,
naming the same field; a refused image is ``Does not match format 'uri'`` (``format``), a list too long ``Array must
have at most N items`` (``array_max_items``), and a cross-field rule (``aspect_ratio`` ``custom`` without ``width``
and ``height``) names the input that asks for the others (``needs``), a cross-field limit (kontext's
``safety_tolerance`` at most 2 with an ``input_image``) the limited input (``number_lte``).
"""

from __future__ import annotations

import json
from typing import Any

from airflow_provider_cometflux import schema
from airflow_provider_cometflux.schema import MODELS, Input, Limit, Needs, Problem

__all__ = [
    "DEFAULT_KNOWN_MODELS",
    "MODEL_SCHEMAS",
    "invalid_fields",
    "model_not_found_body",
    "validation_problem_body",
]

#: Each known model's schema (the provider's table).
MODEL_SCHEMAS = MODELS
#: The models the simulator serves unless told otherwise (``known_models=``).
DEFAULT_KNOWN_MODELS: frozenset[str] = frozenset(MODELS)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _entry(problem: Problem) -> dict[str, str]:
    """One ``invalid_fields`` entry, in the words of Replicate's validator."""
    rule, name, where = problem.rule, problem.field.rpartition(".")[2], problem.where
    if problem.kind == schema.REQUIRED:
        return {"type": "required", "field": "input", "description": f"{problem.field} is required"}
    if isinstance(rule, Needs):
        needed = " and ".join(rule.needs)
        description = f"{name} {json.dumps(rule.value)} needs {needed}"
        return {"type": "needs", "field": where, "description": description}
    if isinstance(rule, Limit):
        description = f"Must be less than or equal to {_number(rule.maximum)} when {rule.when} is given"
        return {"type": "number_lte", "field": where, "description": description}
    assert isinstance(rule, Input)
    if problem.kind == schema.TYPE:
        description = f"Invalid type. Expected: {rule.type}, given: {schema.json_type(problem.value)}"
        return {"type": "invalid_type", "field": where, "description": description}
    if problem.kind == schema.ENUM:
        allowed = ", ".join(json.dumps(choice) for choice in rule.enum or ())
        return {"type": "enum", "field": where, "description": f"{name} must be one of the following: {allowed}"}
    if problem.kind == schema.MINIMUM:
        description = f"Must be greater than or equal to {_number(rule.minimum or 0)}"
        return {"type": "number_gte", "field": where, "description": description}
    if problem.kind == schema.MAXIMUM:
        description = f"Must be less than or equal to {_number(rule.maximum or 0)}"
        return {"type": "number_lte", "field": where, "description": description}
    if problem.kind == schema.MAX_ITEMS:
        description = f"Array must have at most {rule.max_items} items"
        return {"type": "array_max_items", "field": where, "description": description}
    return {"type": "format", "field": where, "description": f"Does not match format '{rule.format}'"}


def invalid_fields(model: str, model_input: dict[str, Any]) -> list[dict[str, str]]:
    """
    Check ``input`` against a known model's schema.

    :param model: ``owner/name``; a model without a schema here (``--any-model``) is checked for its image inputs
        only: an image that is neither an http(s) URL nor a data URI is refused, as the service cannot read it.
    :param model_input: the create request's ``input``.
    :return: Replicate's ``invalid_fields`` entries (``type``, ``field``, ``description``); empty when valid.
    """
    found = schema.problems(model, model_input) if model in MODELS else schema.image_problems(model_input)
    return [_entry(problem) for problem in found]


def validation_problem_body(problems: list[dict[str, str]]) -> dict[str, Any]:
    """The 422 body for ``problems`` (from :func:`invalid_fields`)."""
    detail = "".join(f"- {item['field']}: {item['description']}\n" for item in problems)
    return {"title": "Input validation failed", "detail": detail, "status": 422, "invalid_fields": problems}


def model_not_found_body() -> dict[str, Any]:
    """The 404 body of a create for a model the service does not have (Replicate's wording)."""
    return {"detail": "The requested resource could not be found.", "status": 404}
