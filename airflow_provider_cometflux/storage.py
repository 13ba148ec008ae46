"""Durable copies of a prediction's outputs, through Airflow's ObjectStoragePath (file://, s3://, gs://, ...).

Each image is streamed in chunks to a temporary name beside its target and moved into place only when whole,
so a reader never sees a partial file. Names come from the prediction id and the output's position, never from
the remote side.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import pathlib
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_cometflux.exceptions import CometAPIError, CometFluxInputError, OutputExpiredError
from airflow_provider_cometflux.models import IMAGE_INPUTS
from airflow_provider_cometflux.retries import RetryPolicy

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_cometflux.hooks.cometapi import CometAPIHook

log = logging.getLogger(__name__)

CHUNK_SIZE = 64 * 1024

#: output_format -> (file extension, Content-Type)
FORMATS: dict[str, tuple[str, str]] = {
    "webp": ("webp", "image/webp"),
    "jpg": ("jpg", "image/jpeg"),
    "png": ("png", "image/png"),
}
_EXT_BY_CONTENT_TYPE = {ctype: ext for ext, ctype in FORMATS.values()}


class IncompleteDownloadError(CometAPIError):
    """A download ended before its Content-Length (retried, then raised)."""


@dataclass(frozen=True)
class StoredImage:
    """What XCom ``images`` holds for one image."""

    uri: str
    source_url: str
    sha256: str
    bytes: int
    content_type: str


def as_storage_path(output_path: str | ObjectStoragePath) -> ObjectStoragePath:
    """
    :param output_path: a URI (``file:///data/images``, ``s3://bucket/prefix``, a local path) or a path object.
    """
    from airflow.sdk import ObjectStoragePath

    if isinstance(output_path, ObjectStoragePath):
        return output_path
    text = str(output_path)
    if "://" not in text:
        text = "file://" + str(pathlib.Path(text).resolve())
    return ObjectStoragePath(text)


def store_outputs(
    hook: CometAPIHook,
    urls: list[str],
    output_path: str | ObjectStoragePath,
    prediction_id: str,
    *,
    output_format: str | None = None,
    retry_policy: RetryPolicy | None = None,
) -> list[StoredImage]:
    """
    Copy every output URL to ``<output_path>/<prediction_id>-<index>.<ext>``, whole or not at all.

    :param hook: the hook that opens the delivery URLs (the only place that speaks HTTP).
    :param urls: the prediction's output URLs, in order.
    :param output_path: the folder to copy into.
    :param prediction_id: names the files.
    :param output_format: the requested ``output_format``; the delivered Content-Type must match it.
    :param retry_policy: backoff for cut-short downloads and transient errors.
    :return: one :class:`StoredImage` per URL, in order.
    """
    folder = as_storage_path(output_path)
    folder.mkdir(parents=True, exist_ok=True)
    policy = retry_policy or RetryPolicy(max_retries=4)
    outputs = [
        _Output(url, folder, f"{prediction_id}-{index}", prediction_id, output_format) for index, url in enumerate(urls)
    ]
    return [_store_one(hook, output, policy) for output in outputs]


@dataclass(frozen=True)
class _Output:
    """One output to copy: where from, where to, and what it must be."""

    url: str
    folder: ObjectStoragePath
    stem: str
    prediction_id: str
    output_format: str | None


def _store_one(hook: CometAPIHook, output: _Output, policy: RetryPolicy) -> StoredImage:
    stored = _already_stored(output)
    if stored is not None:
        return stored
    for attempt in range(policy.max_retries + 1):
        try:
            return _download(hook, output)
        except OutputExpiredError:
            raise
        except CometAPIError as exc:
            if not exc.transient or attempt >= policy.max_retries:
                raise
            delay = policy.delay(attempt)
            log.warning("Copying %s failed (%s); retrying in %.1fs.", output.url, exc, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def _download(hook: CometAPIHook, output: _Output) -> StoredImage:
    import requests

    url, folder, stem, pid = output.url, output.folder, output.stem, output.prediction_id
    try:
        with hook.open_output(url, prediction_id=pid) as resp:
            content_type = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
            target = folder / f"{stem}.{_extension(content_type, output)}"
            expected = _content_length(resp.headers)
            partial = folder / f".{stem}.{uuid.uuid4().hex}.part"
            try:
                digest, size = _write(resp, partial)
                if expected is not None and size != expected:
                    raise IncompleteDownloadError(
                        f"download of {url} stopped at {size} of {expected} bytes", prediction_id=pid, transient=True
                    )
                partial.rename(target)
            finally:
                if partial.exists():
                    partial.unlink()
    except requests.RequestException as exc:
        raise CometAPIError(f"download of {url} failed: {exc}", prediction_id=pid, transient=True) from exc
    log.info("Stored %s (%d bytes, sha256 %s).", target, size, digest)
    return StoredImage(str(target), url, digest, size, content_type)


def _already_stored(output: _Output) -> StoredImage | None:
    """
    A copy left by an earlier attempt. Files only ever appear whole (moved into place when complete) and are
    named after the prediction, so one that exists is this output: it is not downloaded again, which also
    keeps a retry working after the delivery URL has expired.
    """
    formats = [output.output_format] if output.output_format in FORMATS else list(FORMATS)
    for fmt in formats:
        ext, content_type = FORMATS[fmt]
        target = output.folder / f"{output.stem}.{ext}"
        if target.exists():
            digest, size = _hash_existing(target)
            log.info("%s is already stored (%d bytes); not downloading it again.", target, size)
            return StoredImage(str(target), output.url, digest, size, content_type)
    return None


def _write(resp: Any, partial: ObjectStoragePath) -> tuple[str, int]:
    sha = hashlib.sha256()
    size = 0
    with partial.open("wb") as out:
        for chunk in resp.iter_content(CHUNK_SIZE):
            sha.update(chunk)
            size += len(chunk)
            out.write(chunk)
    return sha.hexdigest(), size


def _hash_existing(path: ObjectStoragePath) -> tuple[str, int]:
    sha = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            sha.update(chunk)
            size += len(chunk)
    return sha.hexdigest(), size


def _content_length(headers: Mapping[str, str]) -> int | None:
    try:
        return int(headers["Content-Length"])
    except (KeyError, ValueError):
        return None


def _extension(content_type: str, output: _Output) -> str:
    if output.output_format in FORMATS:
        ext, wanted = FORMATS[output.output_format]
        if content_type and content_type != wanted:
            raise CometAPIError(
                f"{output.url} is {content_type!r}, but output_format {output.output_format!r} asks for {wanted!r}",
                prediction_id=output.prediction_id,
            )
        return ext
    return _EXT_BY_CONTENT_TYPE.get(content_type, "bin")


def images_metadata(images: list[StoredImage]) -> list[dict[str, Any]]:
    """The XCom ``images`` value: ``[{uri, source_url, sha256, bytes, content_type}, ...]``."""
    return [asdict(image) for image in images]


#: File suffix -> MIME type of the input images that can be sent inline.
INPUT_IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".gif": "image/gif",
}


def inline_input_images(model_input: Mapping[str, Any], *, max_bytes: int) -> dict[str, Any]:
    """
    Replace image inputs that are local paths or ObjectStoragePaths by data URIs; URLs pass through unchanged.

    :param model_input: the model inputs.
    :param max_bytes: the largest file sent inline.
    :return: a copy of ``model_input`` with the image inputs inlined.
    :raises CometFluxInputError: for a missing file, one over ``max_bytes``, or a type that is not an image.
    """
    from airflow.sdk import ObjectStoragePath

    out = dict(model_input)
    for key in IMAGE_INPUTS:
        value = out.get(key)
        if value is None or (isinstance(value, str) and value.startswith(("http://", "https://", "data:"))):
            continue
        if not isinstance(value, (str, os.PathLike, ObjectStoragePath)) or str(value) == "":
            raise CometFluxInputError(
                f"input.{key}: {value!r} is not allowed; expected an http(s) URL, a data: URI, a local path "
                "or an ObjectStoragePath."
            )
        path = as_storage_path(value if isinstance(value, ObjectStoragePath) else os.fspath(value))
        mime = INPUT_IMAGE_TYPES.get(pathlib.PurePosixPath(path.path).suffix.lower())
        if mime is None:
            allowed = ", ".join(sorted(INPUT_IMAGE_TYPES))
            raise CometFluxInputError(f"input.{key}: {value!r} is not allowed; expected an image file ({allowed}).")
        if not path.exists():
            raise CometFluxInputError(f"input.{key}: {value!r} does not exist.")
        size = int(path.stat()["size"])
        if size > max_bytes:
            raise CometFluxInputError(
                f"input.{key}: {value!r} is {size} bytes; images sent inline may be at most {max_bytes} bytes "
                "(max_input_image_bytes): pass a smaller file or an https URL instead."
            )
        out[key] = f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"
        log.info("Sending input.%s inline from %s (%d bytes).", key, path, size)
    return out
