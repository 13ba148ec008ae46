"""Reuse across runs: an index under ``reuse_path`` of earlier successful predictions, by model and whole input.

A task with ``reuse_path`` looks here, in the worker and before any create, for a prediction of the same model made
from the same whole input (inline images counted by their sha256: :func:`reuse_key`). An entry whose every image
still reads back with its recorded sha256 is used: its images are copied into this run's ``output_path``
(:func:`copy_images`) and no request is made. A new success is added (:meth:`ReuseIndex.add`).

One file per key, ``<reuse_path>/<key>.json`` (:data:`~airflow_provider_cometflux.contract.REUSE_FORMAT`), written
whole through storage's writer (a temporary name, then a rename): two tasks adding the same key at once each leave
a whole file, the last one wins, and a reader never sees a partial one. At worst both created. An entry that cannot
be read, is of another format or whose images changed is a miss, logged, never an error.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_cometflux.contract import (
    RECORD_REUSED_FROM,
    REUSE_FORMAT,
    REUSED_FROM_FIELDS,
    reuse_entry_name,
)
from airflow_provider_cometflux.models import SUCCESS_STATUS, safe_text

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_cometflux.storage import StoredImage

log = logging.getLogger(__name__)


def _canonical(value: Any) -> Any:
    """
    The input with every inline image replaced by the sha256 of its bytes: a ``data:`` URI, however nested, or an
    inline image as the records keep it (a mapping with ``data_uri`` and ``sha256``), so a key computed from a
    recorded input is the key of the input sent.
    """
    if isinstance(value, Mapping) and value.get("data_uri") and isinstance(value.get("sha256"), str):
        return {"data_uri_sha256": value["sha256"]}
    if isinstance(value, str) and value.startswith("data:"):
        header, _, payload = value.partition(",")
        try:
            raw = base64.b64decode(payload, validate=False) if header.endswith(";base64") else payload.encode()
        except (binascii.Error, ValueError):
            raw = payload.encode()
        return {"data_uri_sha256": hashlib.sha256(raw).hexdigest()}
    if isinstance(value, Mapping):
        return {str(key): _canonical(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(item) for item in value]
    return value


def reuse_key(model: str, model_input: Mapping[str, Any]) -> str:
    """
    The key of a prediction in the index: the sha256 of the model and the canonical JSON of the whole input as sent
    (keys sorted, inline images as the sha256 of their bytes), so a changed seed, prompt or image is a new key.

    :param model: ``owner/name``.
    :param model_input: the input as sent (inline images as data URIs).
    """
    text = json.dumps(
        {"model": model, "input": _canonical(dict(model_input))},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def reused_from(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A record's ``reused_from``: the earlier prediction id and the folder its images were stored in."""
    return dict(zip(REUSED_FROM_FIELDS, (entry.get("prediction_id"), entry.get("stored_in")), strict=True))


def reused_event(entry: Mapping[str, Any]) -> dict[str, Any]:
    """
    The event of a prediction served from the index: a success (the earlier prediction's record), marked with
    ``reused_from``, so completion copies the stored images instead of downloading.
    """
    prediction = dict(entry.get("prediction") or {})
    prediction["status"] = SUCCESS_STATUS
    pid = str(entry.get("prediction_id") or prediction.get("id") or "")
    prediction["id"] = pid
    return {
        "status": SUCCESS_STATUS,
        "prediction_id": pid,
        "prediction": prediction,
        "message": f"reused prediction {pid} from {entry.get('stored_in')}",
        RECORD_REUSED_FROM: dict(entry),
    }


class ReuseIndex:
    """
    The index under ``reuse_path``.

    :param reuse_path: a folder URI, local path or ``ObjectStoragePath``.
    """

    def __init__(self, reuse_path: str | ObjectStoragePath) -> None:
        self.reuse_path = reuse_path

    def _entry_path(self, key: str) -> ObjectStoragePath:
        from airflow_provider_cometflux.storage import as_storage_path

        return as_storage_path(self.reuse_path) / reuse_entry_name(key)

    def lookup(self, model: str, model_input: Mapping[str, Any]) -> dict[str, Any] | None:
        """
        The entry of an earlier success of the same model and whole input whose images all still read back with
        their recorded sha256, or ``None`` (nothing there, unreadable, another format, an image gone or changed).
        """
        key = reuse_key(model, model_input)
        path = self._entry_path(key)
        try:
            if not path.exists():
                return None
            entry = json.loads(path.read_text(encoding="utf-8"))
        except Exception as exc:  # a store's refusal or a damaged file: a miss, never a failure
            log.warning("Reuse index entry %s cannot be read (%s); creating anew.", path, safe_text(exc, limit=200))
            return None
        if not _usable(entry, key, model):
            log.warning("Reuse index entry %s is not one this provider reads; creating anew.", path)
            return None
        if not images_hold(entry):
            log.warning("Reuse index entry %s: an image is gone or changed since; creating anew.", path)
            return None
        log.info("Reusing prediction %s (stored in %s): no request.", entry["prediction_id"], entry["stored_in"])
        return dict(entry)

    def add(
        self,
        model: str,
        model_input: Mapping[str, Any],
        prediction: Mapping[str, Any],
        images: Sequence[Mapping[str, Any]],
        stored_in: str,
    ) -> str:
        """
        Add a success, whole or not at all (a second add of the same key replaces the first).

        :param model: ``owner/name``.
        :param model_input: the input as sent.
        :param prediction: its XCom ``prediction`` record.
        :param images: its stored images (XCom ``images`` entries).
        :param stored_in: the folder they are stored in.
        :return: the entry's URI.
        """
        from airflow_provider_cometflux.storage import write_whole

        key = reuse_key(model, model_input)
        entry = {
            "format": REUSE_FORMAT,
            "key": key,
            "model": model,
            "prediction_id": str(prediction.get("id") or ""),
            "stored_in": stored_in,
            "images": [
                {name: image.get(name) for name in ("uri", "sha256", "bytes", "content_type")} for image in images
            ],
            "prediction": {k: v for k, v in prediction.items() if k != RECORD_REUSED_FROM},
        }
        text = json.dumps(entry, sort_keys=True, ensure_ascii=False, default=str) + "\n"
        return write_whole(self.reuse_path, reuse_entry_name(key), text)


def copy_images(entry: Mapping[str, Any], output_path: str | ObjectStoragePath) -> list[StoredImage] | None:
    """
    Copy an entry's images into ``output_path``, under their stored names, each checked against its sha256.

    :return: the copies, in output order, or ``None`` when an image is gone or changed since the lookup.
    """
    from airflow_provider_cometflux.storage import as_storage_path, copy_verified

    copies = []
    for image in entry.get("images") or ():
        source = as_storage_path(str(image["uri"]))
        copy = copy_verified(source, output_path, source.name, str(image["sha256"]), str(image.get("content_type")))
        if copy is None:
            return None
        copies.append(copy)
    return copies


def images_hold(entry: Mapping[str, Any]) -> bool:
    """Whether every image of an entry still reads back with its recorded sha256."""
    images = entry.get("images")
    if not isinstance(images, list) or not images:
        return False
    return all(isinstance(i, Mapping) and i.get("sha256") and _digest(str(i.get("uri"))) == i["sha256"] for i in images)


def _usable(entry: Any, key: str, model: str) -> bool:
    if not isinstance(entry, Mapping) or entry.get("format") != REUSE_FORMAT:
        return False
    if entry.get("key") != key or entry.get("model") != model or not entry.get("prediction_id"):
        return False
    images = entry.get("images")
    return (
        isinstance(images, list)
        and bool(images)
        and all(isinstance(i, Mapping) and i.get("uri") and i.get("sha256") for i in images)
    )


def _digest(uri: str) -> str | None:
    from airflow_provider_cometflux.storage import as_storage_path, file_digest

    try:
        return file_digest(as_storage_path(uri))[0]
    except Exception:
        return None
