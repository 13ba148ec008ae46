"""The input rules of the FLUX models the provider knows, as data: one table read by the provider and the simulator.

Each model's :class:`ModelSchema` holds its inputs (JSON-schema type, enumeration, range, image format, array
limits), the cross-field rules (:class:`Needs`), the default ``output_format``, the output's shape (one URL or a
list), a valid example, and where and when the rules were last checked. :func:`problems` checks an input against
it; :func:`airflow_provider_cometflux.models.validate_input` and the simulator's
:func:`~airflow_provider_cometflux.testing.simulator.validation.invalid_fields` word its findings each their way,
so they refuse the same inputs, naming the same field.

Adding a model is adding an entry to :data:`MODELS`. The facts and their sources are in the project's notes on the
FLUX models (Replicate's input schemas, which CometAPI's Replicate format passes on as they are).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Output shapes: one URL string, or a list of them.
OUTPUT_URI = "uri"
OUTPUT_URI_LIST = "uri_list"

#: The most bytes of images one create sends inline, all its images together (FLUX.2 flex takes "up to ten
#: reference photos (14 MB total)").
MAX_INLINE_TOTAL_BYTES = 14 * 1024 * 1024
#: Room in a create's body for everything but the inline images (the prompt, the other inputs, the JSON).
REQUEST_ROOM_BYTES = 1024 * 1024
#: The largest create body the provider sends: :data:`MAX_INLINE_TOTAL_BYTES` in base64 and the room above. The
#: simulator accepts exactly this much (413 above it).
MAX_REQUEST_BYTES = 4 * -(-MAX_INLINE_TOTAL_BYTES // 3) + REQUEST_ROOM_BYTES

#: Kinds of :class:`Problem`.
REQUIRED = "required"
TYPE = "type"
ENUM = "enum"
MINIMUM = "minimum"
MAXIMUM = "maximum"
FORMAT = "format"
MAX_ITEMS = "max_items"
NEEDS = "needs"
LIMIT = "limit"

#: The one value of :attr:`Input.format`: an http(s) URL or a ``data:`` URI (an image sent inline).
URI = "uri"
_URI_PREFIXES = ("http://", "https://", "data:")
_TYPE_NAMES = {
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "string": "a string",
    "array": "a list",
}


@dataclass(frozen=True)
class Input:
    """
    The rule for one model input.

    :param type: the JSON-schema type: ``string``, ``integer``, ``number``, ``boolean`` or ``array``.
    :param enum: the allowed values, if the input is a choice.
    :param minimum: the smallest allowed number.
    :param maximum: the largest allowed number.
    :param format: :data:`URI` for an image: an http(s) URL or a ``data:`` URI.
    :param items: the rule for each item of an ``array``.
    :param max_items: the most items an ``array`` may have.
    :param step: the service rounds the number to a multiple of it (documentation: never refused).
    """

    type: str
    enum: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    format: str | None = None
    items: Input | None = None
    max_items: int | None = None
    step: int | None = None

    def describe(self) -> str:
        """:return: what is allowed, in words (``one of '1:1', '16:9'``, ``an integer from 1 to 4``, ...)."""
        if self.enum is not None:
            return "one of " + ", ".join(repr(choice) for choice in self.enum)
        if self.format == URI:
            return "an http(s) URL or a data: URI"
        text = _TYPE_NAMES.get(self.type, self.type)
        if self.type == "array":
            if self.max_items is not None:
                text += f" of at most {self.max_items}"
            if self.items is not None:
                text += f" ({self.items.describe()} each)"
        if self.minimum is not None and self.maximum is not None:
            text += f" from {self.minimum:g} to {self.maximum:g}"
        elif self.minimum is not None:
            text += f" of at least {self.minimum:g}"
        elif self.maximum is not None:
            text += f" of at most {self.maximum:g}"
        if self.step is not None:
            text += f" (rounded to a multiple of {self.step})"
        return text


@dataclass(frozen=True)
class Needs:
    """
    A cross-field rule: when input ``field`` is ``value``, every input of ``needs`` must be given too.

    :param field: the input whose value asks for the others.
    :param value: the value that asks for them.
    :param needs: the inputs it needs.
    """

    field: str
    value: Any
    needs: tuple[str, ...]


@dataclass(frozen=True)
class Limit:
    """
    A cross-field rule: when input ``when`` is given, input ``field`` may be at most ``maximum``.

    :param field: the limited input.
    :param maximum: its largest allowed value then.
    :param when: the input whose presence lowers the limit.
    """

    field: str
    maximum: float
    when: str

    def describe(self) -> str:
        """:return: what is allowed, in words."""
        return f"at most {self.maximum:g} when input.{self.when} is given"


@dataclass(frozen=True)
class Ignored:
    """
    A documented quirk, not a refusal: when input ``when`` is ``value``, the service ignores input ``field``.

    :param field: the input the service ignores.
    :param when: the input whose value makes it ignored.
    :param value: that value.
    """

    field: str
    when: str
    value: Any


@dataclass(frozen=True)
class ModelSchema:
    """
    One model's inputs and what it answers.

    :param inputs: every input the model takes, by name.
    :param example: a valid input (the tests send it to the validation and to the simulator).
    :param checked: the date (``YYYY-MM-DD``) of the newest source the rules were checked against.
    :param source: where the rules come from (the model version and the sources' keys in the notes).
    :param required: the inputs the model cannot do without.
    :param needs: the cross-field rules.
    :param default_output_format: the ``output_format`` used when none is given.
    :param output: the output's shape, :data:`OUTPUT_URI` or :data:`OUTPUT_URI_LIST`.
    :param limits: cross-field limits (:class:`Limit`).
    :param ignored: inputs the service ignores in some cases (:class:`Ignored`): logged, never refused.
    :param served_by_cometapi: whether CometAPI lists the model; a model it does not list (known from Replicate)
        is still validated and sent.
    """

    inputs: Mapping[str, Input]
    example: Mapping[str, Any]
    checked: str
    source: str
    required: tuple[str, ...] = ("prompt",)
    needs: tuple[Needs, ...] = ()
    default_output_format: str = "webp"
    output: str = OUTPUT_URI
    limits: tuple[Limit, ...] = ()
    ignored: tuple[Ignored, ...] = ()
    served_by_cometapi: bool = True


@dataclass(frozen=True)
class Problem:
    """
    One input a model's schema refuses.

    :param field: the input's name (``num_outputs``; ``input_images.2`` for an array's third item).
    :param kind: :data:`REQUIRED`, :data:`TYPE`, :data:`ENUM`, :data:`MINIMUM`, :data:`MAXIMUM`, :data:`FORMAT`,
        :data:`MAX_ITEMS`, :data:`NEEDS` or :data:`LIMIT`.
    :param value: the refused value (``None`` for a missing input).
    :param rule: the input's rule (:class:`Input`), or the cross-field rule (:class:`Needs`, :class:`Limit`);
        ``None`` for :data:`REQUIRED`.
    """

    field: str
    kind: str
    value: Any = None
    rule: Input | Needs | Limit | None = None

    @property
    def where(self) -> str:
        """:return: the field as the service names it: ``input.<name>``."""
        return f"input.{self.field}"


# ------------------------------------------------------------------------------------------------------ data

_STRING = Input("string")
_INTEGER = Input("integer")
_BOOLEAN = Input("boolean")
_IMAGE = Input("string", format=URI)
_IMAGE_LIST = Input("array", items=_IMAGE)
_QUALITY = Input("integer", minimum=0, maximum=100)
_SIDE_1440 = Input("integer", minimum=256, maximum=1440, step=32)
_SIDE_2048 = Input("integer", minimum=256, maximum=2048, step=16)
_ALL_FORMATS = Input("string", enum=("webp", "jpg", "png"))
_JPG_PNG = Input("string", enum=("jpg", "png"))
# aspect_ratio enumerations in the order Replicate lists them (its 422 message quotes them in this order)
_FLUX1_RATIOS = ("1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21")
_PRO_RATIOS = ("custom", "1:1", "16:9", "3:2", "2:3", "4:5", "5:4", "9:16", "3:4", "4:3")
_KONTEXT_RATIOS: tuple[str, ...] = ("match_input_image", "1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3", "4:5")
_KONTEXT_RATIOS += ("5:4", "21:9", "9:21", "2:1", "1:2")

_SCHNELL = {
    "prompt": _STRING,
    "aspect_ratio": Input("string", enum=_FLUX1_RATIOS),
    "num_outputs": Input("integer", minimum=1, maximum=4),
    "num_inference_steps": Input("integer", minimum=1, maximum=4),
    "seed": _INTEGER,
    "output_format": _ALL_FORMATS,
    "output_quality": _QUALITY,
    "disable_safety_checker": _BOOLEAN,
    "go_fast": _BOOLEAN,
    "megapixels": Input("string", enum=("1", "0.25")),
}
_DEV = {
    **_SCHNELL,
    "num_inference_steps": Input("integer", minimum=1, maximum=50),
    "guidance": Input("number", minimum=0, maximum=10),
    "image": _IMAGE,
    "prompt_strength": Input("number", minimum=0, maximum=1),
}
_PRO_11 = {
    "prompt": _STRING,
    "aspect_ratio": Input("string", enum=_PRO_RATIOS),
    "width": _SIDE_1440,
    "height": _SIDE_1440,
    "image_prompt": _IMAGE,
    "safety_tolerance": Input("integer", minimum=1, maximum=6),
    "seed": _INTEGER,
    "prompt_upsampling": _BOOLEAN,
    "output_format": _ALL_FORMATS,
    "output_quality": _QUALITY,
}
_KONTEXT = {
    "prompt": _STRING,
    "input_image": _IMAGE,
    "aspect_ratio": Input("string", enum=_KONTEXT_RATIOS),
    "output_format": _JPG_PNG,
    "safety_tolerance": Input("integer", minimum=0, maximum=6),
    "seed": _INTEGER,
    "prompt_upsampling": _BOOLEAN,
}
_FLUX2_RATIOS = ("match_input_image", "custom", "1:1", "16:9", "3:2", "2:3", "4:5", "5:4", "9:16", "3:4", "4:3")
_ULTRA_RATIOS = ("21:9", "16:9", "3:2", "4:3", "5:4", "1:1", "4:5", "3:4", "2:3", "9:16", "9:21")
_RESOLUTIONS = ("match_input_image", "0.5 MP", "1 MP", "2 MP", "4 MP")


def _images(most: int) -> Input:
    """FLUX.2's ``input_images``: a list of image URLs (the limit is in Replicate's description, not its schema)."""
    return Input("array", items=_IMAGE, max_items=most)


_FLUX2_PRO = {
    "prompt": _STRING,
    "input_images": _images(8),
    "aspect_ratio": Input("string", enum=_FLUX2_RATIOS),
    "resolution": Input("string", enum=_RESOLUTIONS),
    "width": _SIDE_2048,
    "height": _SIDE_2048,
    "safety_tolerance": Input("integer", minimum=1, maximum=5),
    "seed": _INTEGER,
    "output_format": _ALL_FORMATS,
    "output_quality": _QUALITY,
}
_FLUX2_FLEX = {
    **_FLUX2_PRO,
    "input_images": _images(10),
    "prompt_upsampling": _BOOLEAN,
    "steps": Input("integer", minimum=1, maximum=50),
    "guidance": Input("number", minimum=1.5, maximum=10),
}
_FLUX2_DEV = {
    "prompt": _STRING,
    "input_images": _images(4),
    "go_fast": _BOOLEAN,
    "aspect_ratio": Input("string", enum=_FLUX2_RATIOS),
    "width": _SIDE_1440,
    "height": _SIDE_1440,
    "seed": _INTEGER,
    "output_format": _ALL_FORMATS,
    "output_quality": _QUALITY,
    "disable_safety_checker": _BOOLEAN,
}
_PRO = {
    "prompt": _STRING,
    "image_prompt": _IMAGE,
    "aspect_ratio": Input("string", enum=_PRO_RATIOS),
    "width": _SIDE_1440,
    "height": _SIDE_1440,
    "steps": Input("integer", minimum=1, maximum=50),
    "guidance": Input("number", minimum=2, maximum=5),
    "interval": Input("number", minimum=1, maximum=4),
    "safety_tolerance": Input("integer", minimum=1, maximum=6),
    "seed": _INTEGER,
    "prompt_upsampling": _BOOLEAN,
    "output_format": _ALL_FORMATS,
    "output_quality": _QUALITY,
}
_ULTRA = {
    "prompt": _STRING,
    "aspect_ratio": Input("string", enum=_ULTRA_RATIOS),
    "raw": _BOOLEAN,
    "image_prompt": _IMAGE,
    "image_prompt_strength": Input("number", minimum=0, maximum=1),
    "safety_tolerance": Input("integer", minimum=1, maximum=6),
    "seed": _INTEGER,
    "output_format": _JPG_PNG,
}
_CUSTOM_SIZE = Needs("aspect_ratio", "custom", ("width", "height"))
_KONTEXT_SAFETY = Limit("safety_tolerance", 2, when="input_image")
_RESOLUTION_WITH_CUSTOM = Ignored("resolution", when="aspect_ratio", value="custom")
_FLUX2_SOURCE = "(RENKU 2026-03-28, NODETOOL a9e5eef, R-API, GETAIAPI, MIRROR)"

#: The known FLUX models; any other model id is passed through unchecked (but for its prompt).
MODELS: dict[str, ModelSchema] = {
    "black-forest-labs/flux-2-pro": ModelSchema(
        _FLUX2_PRO,
        example={
            "prompt": "a lighthouse",
            "input_images": ["https://example.com/a.png"] * 8,
            "aspect_ratio": "16:9",
            "resolution": "2 MP",
        },
        checked="2026-04-23",
        source="version ccb5e331 " + _FLUX2_SOURCE,
        needs=(_CUSTOM_SIZE,),
        ignored=(_RESOLUTION_WITH_CUSTOM,),
    ),
    "black-forest-labs/flux-2-flex": ModelSchema(
        _FLUX2_FLEX,
        example={
            "prompt": "a lighthouse",
            "input_images": ["https://example.com/a.png"] * 10,
            "steps": 50,
            "guidance": 1.5,
            "prompt_upsampling": False,
        },
        checked="2026-04-23",
        source="version 51d0412f " + _FLUX2_SOURCE,
        needs=(_CUSTOM_SIZE,),
        ignored=(_RESOLUTION_WITH_CUSTOM,),
    ),
    "black-forest-labs/flux-2-dev": ModelSchema(
        _FLUX2_DEV,
        example={"prompt": "a lighthouse", "aspect_ratio": "custom", "width": 1440, "height": 256, "go_fast": False},
        checked="2026-03-06",
        source="version 7bba46bd (R-API, GETAIAPI, MIRROR)",
        needs=(_CUSTOM_SIZE,),
    ),
    "black-forest-labs/flux-2-max": ModelSchema(
        _FLUX2_PRO,
        example={"prompt": "a lighthouse", "aspect_ratio": "custom", "width": 2048, "height": 256},
        checked="2026-04-23",
        source="version 9c23b0aa (R-API, RENKU 2026-03-28, NODETOOL); on Replicate, not in CometAPI's list",
        needs=(_CUSTOM_SIZE,),
        ignored=(_RESOLUTION_WITH_CUSTOM,),
        served_by_cometapi=False,
    ),
    "black-forest-labs/flux-kontext-max": ModelSchema(
        _KONTEXT,
        example={"prompt": "make it night", "input_image": "data:image/png;base64,iVBORw0K", "aspect_ratio": "1:2"},
        checked="2026-03-06",
        source="version 8389ed8e (GETAIAPI); the 14 ratios from KONTEXT-ZOD and KKIAI (secondary)",
        default_output_format="png",
        limits=(_KONTEXT_SAFETY,),
    ),
    "black-forest-labs/flux-kontext-pro": ModelSchema(
        _KONTEXT,
        example={"prompt": "make it night", "input_image": "https://example.com/a.png", "aspect_ratio": "2:1"},
        checked="2026-04-23",
        source="version 897a70f5 (RENKU, NODETOOL, GETAIAPI)",
        default_output_format="png",
        limits=(_KONTEXT_SAFETY,),
    ),
    "black-forest-labs/flux-schnell": ModelSchema(
        _SCHNELL,
        example={"prompt": "a lighthouse", "aspect_ratio": "21:9", "num_outputs": 4, "megapixels": "0.25"},
        checked="2026-04-23",
        source="version c846a699 (NODETOOL, GETAIAPI, MIRROR)",
        output=OUTPUT_URI_LIST,
    ),
    "black-forest-labs/flux-pro": ModelSchema(
        _PRO,
        example={"prompt": "a lighthouse", "image_prompt": "https://example.com/a.png", "guidance": 5, "interval": 1},
        checked="2026-04-23",
        source="version ce4035b9 (NODETOOL, GETAIAPI; R-API 2b8181d8)",
        needs=(_CUSTOM_SIZE,),
    ),
    "black-forest-labs/flux-dev": ModelSchema(
        _DEV,
        example={"prompt": "a lighthouse", "image": "https://example.com/a.png", "prompt_strength": 0.8, "guidance": 3},
        checked="2026-04-23",
        source="version 6e4a938f (NODETOOL, GETAIAPI, MIRROR)",
        output=OUTPUT_URI_LIST,
    ),
    "black-forest-labs/flux-1.1-pro-ultra": ModelSchema(
        _ULTRA,
        example={"prompt": "a lighthouse", "aspect_ratio": "9:21", "raw": True, "image_prompt_strength": 0.5},
        checked="2026-04-23",
        source="version 5ea10f73 (NODETOOL, GETAIAPI, KKIAI)",
        default_output_format="jpg",
    ),
    "black-forest-labs/flux-1.1-pro": ModelSchema(
        _PRO_11,
        example={"prompt": "a lighthouse", "aspect_ratio": "custom", "width": 1440, "height": 256},
        checked="2026-03-06",
        source="version 609793a6 (GETAIAPI); enumeration and ranges from R-API 96ccd0e7",
        needs=(_CUSTOM_SIZE,),
    ),
}

#: Every input that carries an image (a URL or a data URI; the operator inlines local and storage paths).
IMAGE_INPUTS: tuple[str, ...] = tuple(
    sorted({name for model in MODELS.values() for name, rule in model.inputs.items() if rule.format == URI})
)
#: Every input that carries a list of images (FLUX.2's ``input_images``), each an http(s) URL or a data URI.
IMAGE_LIST_INPUTS: tuple[str, ...] = tuple(
    sorted(
        {
            name
            for model in MODELS.values()
            for name, rule in model.inputs.items()
            if rule.items is not None and rule.items.format == URI
        }
    )
)


def most_images(model: str, name: str) -> int | None:
    """
    :param model: ``owner/name``.
    :param name: an image list input (:data:`IMAGE_LIST_INPUTS`).
    :return: how many images the model takes in it; ``None`` when its schema sets no limit (or does not know it).
    """
    table = MODELS.get(model)
    rule = table.inputs.get(name) if table is not None else None
    return rule.max_items if rule is not None else None


# -------------------------------------------------------------------------------------------------- checking


def json_type(value: Any) -> str:
    """
    :param value: an input value as decoded from JSON (or about to be encoded).
    :return: its JSON-schema type; a float with no fraction is an ``integer``, as JSON-schema counts it.
    """
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


def type_matches(expected: str, given: str) -> bool:
    """:return: whether a value of JSON type ``given`` is allowed where ``expected`` is (an integer is a number)."""
    return given == expected or (expected == "number" and given == "integer")


def problems(model: str, model_input: Mapping[str, Any]) -> list[Problem]:
    """
    Check an input against a known model's schema.

    :param model: ``owner/name``; a model not in :data:`MODELS` is not checked.
    :param model_input: the model inputs.
    :return: every problem, in the schema's order (required inputs, then each input, then cross-field rules);
        empty when the input is valid. Inputs the schema does not name are not problems.
    """
    schema = MODELS.get(model)
    if schema is None:
        return []
    found = [Problem(name, REQUIRED) for name in schema.required if name not in model_input]
    for name, rule in schema.inputs.items():
        if name in model_input:
            found.extend(_check(name, rule, model_input[name]))
    for needs in schema.needs:
        if model_input.get(needs.field) == needs.value and not all(name in model_input for name in needs.needs):
            found.append(Problem(needs.field, NEEDS, needs.value, needs))
    for limit in schema.limits:
        value = model_input.get(limit.field)
        if limit.when not in model_input or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if value > limit.maximum:
            found.append(Problem(limit.field, LIMIT, value, limit))
    return found


def image_problems(model_input: Mapping[str, Any]) -> list[Problem]:
    """
    Check only the image inputs, whatever the model: the service reads an image as an http(s) URL or a ``data:``
    URI, never a path of the caller's (what a model outside :data:`MODELS` is still checked for).

    :param model_input: the model inputs.
    :return: a :data:`FORMAT` (or :data:`TYPE`) problem per image input or item that is neither.
    """
    found: list[Problem] = []
    for name in IMAGE_INPUTS:
        if name in model_input:
            found.extend(_check(name, _IMAGE, model_input[name]))
    for name in IMAGE_LIST_INPUTS:
        if name in model_input:
            found.extend(_check(name, _IMAGE_LIST, model_input[name]))
    return found


def ignored(model: str, model_input: Mapping[str, Any]) -> list[str]:
    """
    :param model: ``owner/name``.
    :param model_input: the model inputs.
    :return: the inputs the service will ignore (:attr:`ModelSchema.ignored`), each with why, in words.
    """
    schema = MODELS.get(model)
    if schema is None:
        return []
    return [
        f"input.{rule.field} is ignored when input.{rule.when} is {rule.value!r}"
        for rule in schema.ignored
        if rule.field in model_input and model_input.get(rule.when) == rule.value
    ]


def _check(name: str, rule: Input, value: Any) -> list[Problem]:
    if not type_matches(rule.type, json_type(value)):
        return [Problem(name, TYPE, value, rule)]
    found = []
    if rule.enum is not None and value not in rule.enum:
        found.append(Problem(name, ENUM, value, rule))
    if rule.format == URI and not value.startswith(_URI_PREFIXES):
        found.append(Problem(name, FORMAT, value, rule))
    if rule.minimum is not None and value < rule.minimum:
        found.append(Problem(name, MINIMUM, value, rule))
    if rule.maximum is not None and value > rule.maximum:
        found.append(Problem(name, MAXIMUM, value, rule))
    if rule.type == "array":
        if rule.max_items is not None and len(value) > rule.max_items:
            found.append(Problem(name, MAX_ITEMS, value, rule))
        if rule.items is not None:
            for index, item in enumerate(value):
                found.extend(_check(f"{name}.{index}", rule.items, item))
    return found


def default_output_format(model: str) -> str:
    """:return: the ``output_format`` a model uses when none is given (``webp`` for a model not in the table)."""
    schema = MODELS.get(model)
    return schema.default_output_format if schema is not None else "webp"


#: The models whose output is a list of URLs (the others answer one URL).
LIST_OUTPUT_MODELS = frozenset(name for name, model in MODELS.items() if model.output == OUTPUT_URI_LIST)

__all__ = [
    "ENUM",
    "FORMAT",
    "IMAGE_INPUTS",
    "IMAGE_LIST_INPUTS",
    "LIMIT",
    "LIST_OUTPUT_MODELS",
    "MAXIMUM",
    "MAX_INLINE_TOTAL_BYTES",
    "MAX_ITEMS",
    "MAX_REQUEST_BYTES",
    "MINIMUM",
    "MODELS",
    "NEEDS",
    "OUTPUT_URI",
    "OUTPUT_URI_LIST",
    "REQUEST_ROOM_BYTES",
    "REQUIRED",
    "TYPE",
    "URI",
    "Ignored",
    "Input",
    "Limit",
    "ModelSchema",
    "Needs",
    "Problem",
    "default_output_format",
    "ignored",
    "image_problems",
    "json_type",
    "most_images",
    "problems",
    "type_matches",
]
