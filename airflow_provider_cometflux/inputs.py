"""Image inputs sent inline: every image a task names is read in the worker, checked, and sent as a data URI.

The service reads an image input only as an http(s) URL or a ``data:`` URI; it cannot read a path of the worker's.
:func:`inline_images` runs in the worker before the create, over ``image``, ``image_prompt``, ``input_image`` (one
image each) and every item of ``input_images`` (a list). Each may be:

- an http(s) URL or a ``data:`` URI: sent as it is;
- a local path, a ``file://`` URI, any :class:`~airflow.sdk.ObjectStoragePath` URI (``s3://``, ``gs://``, ...) or
  an ``ObjectStoragePath``: read (at most ``max_bytes``), its content sniffed as jpeg, png, gif or webp, and sent
  as a data URI;
- for a list, an upstream task's outputs passed as an XComArg (``input={"input_images": base.output}``), which
  arrive resolved as a list of URIs, or a batch's list of lists (flattened, in order; a failed prompt's empty list
  adds nothing). A single-image input takes a one-item list (a task's output) as its item.

A list holds at most as many images as the model's schema allows (:func:`~airflow_provider_cometflux.schema.
most_images`, unless the input is in ``unchecked_inputs``), all inline images together at most
:data:`~airflow_provider_cometflux.schema.MAX_INLINE_TOTAL_BYTES`, and the request body at most
:data:`~airflow_provider_cometflux.schema.MAX_REQUEST_BYTES`, the size the simulator accepts. Every error names
the field (``input.input_images.2`` for the third item), the value and what is allowed, and is raised before any
request.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Collection, Mapping, Sequence
from typing import Any, TypeGuard

from airflow_provider_cometflux import schema
from airflow_provider_cometflux.exceptions import CometFluxInputError
from airflow_provider_cometflux.models import safe_text

log = logging.getLogger(__name__)

#: The largest file sent inline for one image by default (the operator's ``max_input_image_bytes``).
MAX_INPUT_IMAGE_BYTES = 10 * 1024 * 1024

#: The image types the service reads, by their first bytes.
IMAGE_TYPES = ("jpeg", "png", "gif", "webp")
_URL_PREFIXES = ("http://", "https://")


def sniff(head: bytes) -> str | None:
    """
    :param head: the first bytes of a file (12 are enough).
    :return: its MIME type if it is a jpeg, png, gif or webp image, else ``None``.
    """
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def has_images(model_input: Any) -> TypeGuard[Mapping[str, Any]]:
    """:return: whether a model input names any image input (and so may need :func:`inline_images`)."""
    return isinstance(model_input, Mapping) and any(
        name in model_input for name in (*schema.IMAGE_INPUTS, *schema.IMAGE_LIST_INPUTS)
    )


def inline_images(
    model: str,
    model_input: Mapping[str, Any],
    *,
    max_bytes: int = MAX_INPUT_IMAGE_BYTES,
    unchecked: Collection[str] = (),
) -> dict[str, Any]:
    """
    Every image input of ``model_input`` as the service reads it: URLs and data URIs as they are, files inlined.

    :param model: ``owner/name`` (its schema gives the most images a list may hold).
    :param model_input: the model inputs, as the task was given them (rendered: an XComArg is already resolved).
    :param max_bytes: the largest file sent inline for one image.
    :param unchecked: inputs whose schema rules are overridden (``unchecked_inputs``): no count limit for them.
    :return: a copy of ``model_input`` with each image input inlined (a list input as a list).
    :raises CometFluxInputError: naming the field (and the item's index), before any request.
    """
    out = dict(model_input)
    total = _Total()
    for name in schema.IMAGE_INPUTS:
        if name in out and out[name] is not None:
            items = _flatten(out[name])
            if len(items) != 1:
                raise CometFluxInputError(
                    f"input.{name}: {len(items)} images are not allowed; expected one image (an http(s) URL, a "
                    "data: URI, a local path, a storage URI, or a task's output of one image)."
                )
            out[name] = _inline(f"input.{name}", items[0], max_bytes, total)
    for name in schema.IMAGE_LIST_INPUTS:
        if name in out and out[name] is not None:
            items = _flatten(out[name])
            most = schema.most_images(model, name)
            if most is not None and len(items) > most and name not in unchecked:
                raise CometFluxInputError(
                    f"input.{name}: {len(items)} images are too many for {model}; expected at most {most} "
                    "(an upstream task's outputs count each image; pass fewer, or name the input in "
                    "unchecked_inputs if the service now takes more)."
                )
            out[name] = [_inline(f"input.{name}.{index}", item, max_bytes, total) for index, item in enumerate(items)]
    return out


def check_request_size(payload: Mapping[str, Any], *, where: str = "input") -> None:
    """
    :param payload: a create's whole model input, images inlined.
    :param where: what to name in the error.
    :raises CometFluxInputError: when its body would be over
        :data:`~airflow_provider_cometflux.schema.MAX_REQUEST_BYTES`.
    """
    size = len(json.dumps({"input": payload}, separators=(",", ":")).encode())
    if size > schema.MAX_REQUEST_BYTES:
        raise CometFluxInputError(
            f"{where}: the request would be {size} bytes; a create may be at most {schema.MAX_REQUEST_BYTES} bytes. "
            "Pass large images as https URLs instead of inline."
        )


class _Total:
    """The bytes of inline images one request holds so far."""

    def __init__(self) -> None:
        self.bytes = 0

    def add(self, field: str, shown: str, size: int) -> None:
        self.bytes += size
        if self.bytes > schema.MAX_INLINE_TOTAL_BYTES:
            raise CometFluxInputError(
                f"{field}: {shown} brings the images sent inline to {self.bytes} bytes; all of a request's inline "
                f"images together may be at most {schema.MAX_INLINE_TOTAL_BYTES} bytes. Pass some as https URLs "
                "instead."
            )


def _flatten(value: Any) -> list[Any]:
    """A value, a list, or a list of lists (a batch's outputs) as one flat list of items."""
    if isinstance(value, (str, bytes, os.PathLike)) or not isinstance(value, Sequence):
        return [value]
    return [item for part in value for item in _flatten(part)]


def _inline(field: str, value: Any, max_bytes: int, total: _Total) -> str:
    """One image as the service reads it."""
    from airflow.sdk import ObjectStoragePath

    if isinstance(value, str) and value.startswith(_URL_PREFIXES):
        return value
    if isinstance(value, str) and value.startswith("data:"):
        total.add(field, "this data: URI", len(value.partition(",")[2]) * 3 // 4)
        return value
    if not isinstance(value, (str, os.PathLike, ObjectStoragePath)) or str(value).strip() == "":
        raise CometFluxInputError(
            f"{field}: {safe_text(repr(value), limit=200)} is not allowed; expected an http(s) URL, a data: URI, a "
            "local path, a file:// or storage URI, or an ObjectStoragePath."
        )
    shown = safe_text(repr(str(value)), limit=300)
    data = _read(field, value, shown, max_bytes)
    mime = sniff(data[:12])
    if mime is None:
        raise CometFluxInputError(
            f"{field}: {shown} is not allowed; its content is not an image the service reads (expected "
            f"{', '.join(IMAGE_TYPES)})."
        )
    total.add(field, shown, len(data))
    log.info("Sending %s inline from %s (%d bytes, %s).", field, shown, len(data), mime)
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _read(field: str, value: Any, shown: str, max_bytes: int) -> bytes:
    """The file's bytes, at most ``max_bytes`` of them."""
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_cometflux.storage import as_storage_path

    try:
        path = as_storage_path(value if isinstance(value, ObjectStoragePath) else os.fspath(value))
        with path.open("rb") as f:
            data = f.read(max_bytes + 1)
    except (FileNotFoundError, IsADirectoryError):
        raise CometFluxInputError(f"{field}: {shown} does not exist (or is not a file).") from None
    except Exception as exc:  # a storage that refuses, a scheme without a filesystem...
        raise CometFluxInputError(
            f"{field}: {shown} could not be read ({type(exc).__name__}: {safe_text(exc, limit=300)})."
        ) from None
    if len(data) > max_bytes:
        raise CometFluxInputError(
            f"{field}: {shown} is over {max_bytes} bytes; an image sent inline may be at most {max_bytes} bytes "
            "(max_input_image_bytes): pass a smaller file or an https URL instead."
        )
    return data
