"""Provenance kept next to the images: a JSON sidecar per stored prediction and a JSON Lines manifest per batch run.

A sidecar, ``<output_path>/<prediction_id>.json``, says what made the images beside it: the prediction id, model,
version, the input (inline images only as their size and sha256), status, times, metrics, and per image its URI,
sha256, size and content type. A batch task run also writes ``manifest.jsonl``: one line per prompt, in prompt
order, failed prompts with their error (and the model, input and times known of them); a mapped task (batch or
prediction) writes ``manifest-<map index>.jsonl`` instead. Both carry ``"format": SIDECAR_FORMAT``; the readers
(:func:`load_sidecar`, :func:`load_record` from an image, :func:`load_manifest`, :func:`load_manifests` for every
manifest of a folder) give typed records back and refuse a format they do not know.

Both files are written whole or not at all, by storage's writer (:func:`~airflow_provider_cometflux.storage.
write_whole`: a temporary name beside the target, then a rename), so a reader that lists the folder never sees a
partial one; a retry overwrites them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from airflow_provider_cometflux.contract import (
    CONTENT_TYPES,
    KNOWN_FORMATS,
    MANIFEST_FIELDS,
    MANIFEST_NAME,
    RECORD_COST,
    RECORD_IMAGE_FIELDS,
    RECORD_REUSED_FROM,
    SIDECAR_FORMAT,
    SIDECAR_PREDICTION_FIELDS,
    SUCCEEDED,
    parse_stored_image_name,
    sidecar_name,
)
from airflow_provider_cometflux.exceptions import ProvenanceFormatError, RecordNotFoundError
from airflow_provider_cometflux.models import check_prediction_id, public_input
from airflow_provider_cometflux.storage import as_storage_path, write_whole

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

__all__ = [  # the format names are the contract's; importable from here as they always were
    "KNOWN_FORMATS",
    "MANIFEST_NAME",
    "SIDECAR_FORMAT",
    "SUCCEEDED",
    "ImageRecord",
    "ManifestRecord",
    "PredictionRecord",
    "ProvenanceFormatError",
    "RecordNotFoundError",
    "load_manifest",
    "load_manifests",
    "load_record",
    "load_sidecar",
    "manifest_row",
    "record_verdicts",
    "sidecar_record",
    "write_manifest",
    "write_sidecar",
]

#: Parts of key names whose values are never written (as Airflow's secrets masker hides them).
_SENSITIVE_NAMES = (
    "access_token",
    "api_key",
    "apikey",
    "authorization",
    "passphrase",
    "passwd",
    "password",
    "private_key",
    "secret",
    "token",
)


@dataclass(frozen=True)
class ImageRecord:
    """
    One stored image, as a sidecar or manifest line describes it.

    :param uri: where the image is stored (``file:///...``, ``s3://...``).
    :param sha256: hex digest of the stored bytes.
    :param bytes: size of the stored file.
    :param content_type: its MIME type.
    :param source_url: the delivery URL it was copied from (no query string; it expires), if known.
    """

    uri: str
    sha256: str
    bytes: int
    content_type: str
    source_url: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ImageRecord:
        """:param data: an entry of a sidecar's or manifest line's ``images``."""
        return cls(
            uri=str(data["uri"]),
            sha256=str(data["sha256"]),
            bytes=int(data["bytes"]),
            content_type=str(data.get("content_type") or ""),
            source_url=data.get("source_url"),
        )


@dataclass(frozen=True)
class PredictionRecord:
    """
    A sidecar, read back.

    :param format: the format version (:data:`SIDECAR_FORMAT`).
    :param prediction_id: the prediction's id at the service.
    :param model: ``owner/name`` of the model.
    :param version: the model version the service reported, if any.
    :param status: the prediction's final status.
    :param input: the input as sent (inline images as ``{"data_uri": True, "bytes", "sha256"}``).
    :param images: the stored images, in output order.
    :param created_at: when the service created the prediction (ISO 8601 text, as the service gave it).
    :param started_at: when it started, if known.
    :param completed_at: when it completed, if known.
    :param metrics: the service's metrics (``predict_time``, ``image_count``, ...).
    :param error: the service's error, if any.
    :param web_url: the prediction's page for people, if any.
    :param review: the verdicts a review task gave its images (:data:`VERDICT_FIELDS`), oldest first.
    :param cost: ``{"usd", "images"}``: what the prediction cost (``usd`` 0 when reused, ``None`` without a price).
    :param reused_from: ``{"prediction_id", "stored_in"}`` when its images were reused from an earlier run.
    """

    format: str
    prediction_id: str
    model: str | None
    version: str | None
    status: str | None
    input: Mapping[str, Any] = field(default_factory=dict)
    images: tuple[ImageRecord, ...] = ()
    created_at: str | None = None
    started_at: str | None = None
    completed_at: str | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    error: Any = None
    web_url: str | None = None
    review: tuple[Mapping[str, Any], ...] = ()
    cost: Mapping[str, Any] | None = None
    reused_from: Mapping[str, Any] | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PredictionRecord:
        """
        :param data: a sidecar's JSON object.
        :raises ProvenanceFormatError: for another format, or a sidecar without a prediction id.
        """
        fmt = _check_format(data, "sidecar")
        if not data.get("prediction_id"):
            raise ProvenanceFormatError("sidecar: no 'prediction_id'")
        return cls(
            format=fmt,
            prediction_id=str(data["prediction_id"]),
            model=data.get("model"),
            version=data.get("version"),
            status=data.get("status"),
            input=dict(data.get("input") or {}),
            images=tuple(ImageRecord.from_dict(image) for image in data.get("images") or ()),
            created_at=data.get("created_at"),
            started_at=data.get("started_at"),
            completed_at=data.get("completed_at"),
            metrics=dict(data.get("metrics") or {}),
            error=data.get("error"),
            web_url=data.get("web_url"),
            review=_verdicts(data.get("review")),
            cost=_mapping_or_none(data.get(RECORD_COST)),
            reused_from=_mapping_or_none(data.get(RECORD_REUSED_FROM)),
        )


@dataclass(frozen=True)
class ManifestRecord:
    """
    One manifest line (one prompt of a batch), read back.

    :param format: the format version (:data:`SIDECAR_FORMAT`).
    :param index: the prompt's position in the batch.
    :param prompt: the prompt.
    :param status: ``succeeded``, or why it has no images (``failed``, ``canceled``, ``timeout``, ``not_created``,
        ``not_stored``...).
    :param prediction_id: its prediction, or ``None`` when none was created.
    :param model: ``owner/name`` of the model, when the prompt succeeded.
    :param error: the failure's message, for a failed prompt.
    :param sidecar: the URI of the prompt's sidecar, when it succeeded.
    :param images: the stored images, when it succeeded.
    :param input: the input as sent, when it succeeded.
    :param created_at: when the service created the prediction, when it succeeded.
    :param completed_at: when it completed, when it succeeded.
    :param metrics: the service's metrics, when it succeeded.
    :param review: the verdicts a review task gave the prompt's images (:data:`VERDICT_FIELDS`), oldest first.
    :param cost: ``{"usd", "images"}``, when it succeeded.
    :param reused_from: ``{"prediction_id", "stored_in"}`` when its images were reused from an earlier run.
    """

    format: str
    index: int
    prompt: str
    status: str
    prediction_id: str | None = None
    model: str | None = None
    error: str | None = None
    sidecar: str | None = None
    images: tuple[ImageRecord, ...] = ()
    input: Mapping[str, Any] = field(default_factory=dict)
    created_at: str | None = None
    completed_at: str | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    review: tuple[Mapping[str, Any], ...] = ()
    cost: Mapping[str, Any] | None = None
    reused_from: Mapping[str, Any] | None = None

    @property
    def succeeded(self) -> bool:
        return self.status == SUCCEEDED

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ManifestRecord:
        """
        :param data: one manifest line's JSON object.
        :raises ProvenanceFormatError: for another format, or a line without ``index``/``prompt``/``status``.
        """
        fmt = _check_format(data, "manifest line")
        missing = [key for key in ("index", "prompt", "status") if data.get(key) is None]
        if missing:
            raise ProvenanceFormatError(f"manifest line: no {', '.join(repr(k) for k in missing)}")
        return cls(
            format=fmt,
            index=int(data["index"]),
            prompt=str(data["prompt"]),
            status=str(data["status"]),
            prediction_id=data.get("prediction_id"),
            model=data.get("model"),
            error=data.get("error"),
            sidecar=data.get("sidecar"),
            images=tuple(ImageRecord.from_dict(image) for image in data.get("images") or ()),
            input=dict(data.get("input") or {}),
            created_at=data.get("created_at"),
            completed_at=data.get("completed_at"),
            metrics=dict(data.get("metrics") or {}),
            review=_verdicts(data.get("review")),
            cost=_mapping_or_none(data.get(RECORD_COST)),
            reused_from=_mapping_or_none(data.get(RECORD_REUSED_FROM)),
        )


def _mapping_or_none(value: Any) -> dict[str, Any] | None:
    return dict(value) if isinstance(value, Mapping) else None


def sidecar_record(prediction: Mapping[str, Any], images: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """
    The sidecar of one stored prediction, as a JSON-ready dict.

    Inline images in the input become their size and sha256 (also nested ones), secrets Airflow masks (and values
    under names such as ``api_key`` or ``token``) become ``***``, and delivery URLs lose their query string.

    :param prediction: the XCom ``prediction`` value (``id, model, version, status, error, created_at,
        started_at, completed_at, metrics, output, web_url, input``).
    :param images: the XCom ``images`` entries of that prediction (``uri, source_url, sha256, bytes,
        content_type``), in output order.
    :return: ``{"format", "prediction_id", "model", "version", "status", "error", "created_at", "started_at",
        "completed_at", "metrics", "web_url", "input", "images": [{"uri", "sha256", "bytes", "content_type",
        "source_url"}], "review": [], "cost": {"usd", "images"}, "reused_from": {"prediction_id", "stored_in"} or
        None}``.
    """
    record: dict[str, Any] = {"format": SIDECAR_FORMAT, "prediction_id": str(prediction.get("id") or "")}
    for key in SIDECAR_PREDICTION_FIELDS:
        record[key] = prediction.get(key)
    record["error"] = prediction.get("error")
    metrics = prediction.get("metrics")
    record["metrics"] = dict(metrics) if isinstance(metrics, Mapping) else {}
    raw_input = prediction.get("input")
    record["input"] = _record_input(raw_input) if isinstance(raw_input, Mapping) else {}
    record["images"] = [
        dict(
            zip(
                RECORD_IMAGE_FIELDS,
                (
                    str(image["uri"]),
                    str(image["sha256"]),
                    int(image["bytes"]),
                    str(image.get("content_type") or ""),
                    _without_query(image.get("source_url")),
                ),
                strict=True,
            )
        )
        for image in images
    ]
    record["review"] = []
    record[RECORD_COST] = _mapping_or_none(prediction.get(RECORD_COST))
    record[RECORD_REUSED_FROM] = _mapping_or_none(prediction.get(RECORD_REUSED_FROM))
    return record


def write_sidecar(folder: str | ObjectStoragePath, record: Mapping[str, Any]) -> str:
    """
    Write ``<folder>/<prediction id>.json``, whole or not at all; a second write (a retry) replaces it.

    :param folder: the task's ``output_path`` (a URI, a local path or an ObjectStoragePath).
    :param record: a :func:`sidecar_record`.
    :return: the sidecar's URI.
    :raises CometFluxInputError: when the record's prediction id is not a safe file name.
    :raises ProvenanceFormatError: when the record is not in :data:`SIDECAR_FORMAT`.
    """
    _check_format(record, "sidecar")
    prediction_id = check_prediction_id(record.get("prediction_id"))
    text = json.dumps(dict(record), indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n"
    return write_whole(folder, sidecar_name(prediction_id), text)


def manifest_row(
    index: int,
    prompt: str,
    *,
    record: Mapping[str, Any] | None,
    failure: Mapping[str, Any] | None,
    sidecar_uri: str | None,
    details: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """
    One manifest line: one prompt of a batch.

    Every line has the same columns, so pandas and DuckDB read the file as one table.

    :param index: the prompt's position.
    :param prompt: the prompt.
    :param record: the prompt's :func:`sidecar_record`, when it succeeded.
    :param failure: the prompt's entry of XCom ``failures`` (``index, prompt, prediction_id, status, message``),
        when it failed.
    :param sidecar_uri: the URI of the prompt's sidecar, when one was written.
    :param details: for a failed prompt, what is known of it: ``model``, ``input`` (as sent; recorded as a sidecar
        records it), ``created_at``, ``completed_at``.
    :return: ``{"format", "index", "prompt", "status", "prediction_id", "model", "error", "sidecar", "images",
        "input", "created_at", "completed_at", "metrics", "review", "cost", "reused_from"}``.
    """
    row: dict[str, Any] = dict.fromkeys(MANIFEST_FIELDS)
    row.update(format=SIDECAR_FORMAT, index=int(index), prompt=str(prompt), review=[])
    if record is not None and failure is None:
        row.update(
            status=SUCCEEDED,
            prediction_id=record.get("prediction_id"),
            model=record.get("model"),
            error=None,
            sidecar=sidecar_uri,
            images=[dict(image) for image in record.get("images") or ()],
            input=dict(record.get("input") or {}),
            created_at=record.get("created_at"),
            completed_at=record.get("completed_at"),
            metrics=dict(record.get("metrics") or {}),
            cost=_mapping_or_none(record.get(RECORD_COST)),
            reused_from=_mapping_or_none(record.get(RECORD_REUSED_FROM)),
        )
        return row
    failure = failure or {}
    details = details or {}
    raw_input = details.get("input")
    row.update(
        status=str(failure.get("status") or "error"),
        prediction_id=failure.get("prediction_id"),
        model=details.get("model") or (None if record is None else record.get("model")),
        error=str(failure.get("message") or "no result was recorded for this prompt"),
        sidecar=None,
        images=[],
        input=_record_input(raw_input) if isinstance(raw_input, Mapping) else {},
        created_at=details.get("created_at"),
        completed_at=details.get("completed_at"),
        metrics={},
    )
    return row


def write_manifest(
    folder: str | ObjectStoragePath, rows: Sequence[Mapping[str, Any]], *, name: str = MANIFEST_NAME
) -> str:
    """
    Write a JSON Lines manifest (one object per line, UTF-8), whole or not at all; a retry replaces it.

    ``pandas.read_json(uri, lines=True)`` and DuckDB's ``read_json_auto(path)`` read it as is.

    :param folder: the task's ``output_path``.
    :param rows: :func:`manifest_row` values, in prompt order.
    :param name: the file name inside ``folder`` (no folder part).
    :return: the manifest's URI.
    :raises ValueError: for a name with a folder part or a leading dot.
    :raises ProvenanceFormatError: for a row not in :data:`SIDECAR_FORMAT`.
    """
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"manifest name {name!r}: expected a plain file name")
    lines = []
    for row in rows:
        _check_format(row, "manifest line")
        lines.append(json.dumps(dict(row), sort_keys=True, ensure_ascii=False, default=str) + "\n")
    return write_whole(folder, name, "".join(lines))


def load_sidecar(path: str | ObjectStoragePath) -> PredictionRecord:
    """
    Read a sidecar back.

    :param path: the sidecar's URI, local path or ObjectStoragePath.
    :raises ProvenanceFormatError: for a file that is not a sidecar of a known format.
    """
    target = as_storage_path(path)
    try:
        data = json.loads(target.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ProvenanceFormatError(f"{target}: not JSON ({exc})") from None
    if not isinstance(data, Mapping):
        raise ProvenanceFormatError(f"{target}: expected a JSON object")
    try:
        return PredictionRecord.from_dict(data)
    except ProvenanceFormatError as exc:
        raise ProvenanceFormatError(f"{target}: {exc}") from None


def load_manifest(path: str | ObjectStoragePath) -> list[ManifestRecord]:
    """
    Read a manifest back, one :class:`ManifestRecord` per prompt, in file order.

    :param path: the manifest's URI, local path or ObjectStoragePath.
    :raises ProvenanceFormatError: for a line that is not JSON, or not in a known format (with its line number).
    """
    target = as_storage_path(path)
    return list(_parse_manifest(target.read_text(encoding="utf-8").splitlines(), str(target)))


def _parse_manifest(lines: Iterable[str], where: str) -> Iterable[ManifestRecord]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ProvenanceFormatError(f"{where}, line {number}: not JSON ({exc})") from None
        if not isinstance(data, Mapping):
            raise ProvenanceFormatError(f"{where}, line {number}: expected a JSON object")
        try:
            yield ManifestRecord.from_dict(data)
        except ProvenanceFormatError as exc:
            raise ProvenanceFormatError(f"{where}, line {number}: {exc}") from None


def load_record(image: str | ObjectStoragePath) -> PredictionRecord:
    """
    The record of a stored image: the sidecar written beside it (``<prediction id>.json`` in the same folder).

    :param image: a stored image's URI, local path or ObjectStoragePath (``<prediction id>-<index>.<ext>``), as
        XCom ``return_value`` or ``images`` and the manifests give it.
    :raises RecordNotFoundError: when the name is not a stored image's, or no sidecar is beside it.
    :raises ProvenanceFormatError: for a sidecar of a format this provider does not read.
    """
    path = as_storage_path(image)
    parsed = parse_stored_image_name(path.name)
    if parsed is None:
        raise RecordNotFoundError(
            f"{image}: not an image this provider stored (expected <prediction id>-<index>.<ext>, with ext one of "
            f"{', '.join(CONTENT_TYPES)}), so it has no record"
        )
    sidecar = path.parent / sidecar_name(parsed[0])
    if not sidecar.exists():
        raise RecordNotFoundError(
            f"{image}: no record beside it ({sidecar} does not exist). Sidecars are written after the images: "
            "the task may have failed between the two, or the sidecar was moved or deleted"
        )
    return load_sidecar(sidecar)


def load_manifests(folder: str | ObjectStoragePath) -> list[ManifestRecord]:
    """
    Every manifest line of a folder: ``manifest.jsonl`` (a batch) and every ``manifest-<map index>.jsonl`` (a
    mapped batch or a mapped prediction task), in map index order.

    :param folder: a run's ``output_path``.
    :return: every line of every manifest, an empty list when there is none.
    :raises ProvenanceFormatError: for a line that is not JSON or not in a known format.
    """
    base = as_storage_path(folder)
    if not base.exists():
        return []
    found: list[tuple[int, ObjectStoragePath]] = []
    for entry in base.iterdir():
        order = _manifest_order(entry.name)
        if order is not None:
            found.append((order, entry))
    return [row for _, path in sorted(found, key=lambda item: item[0]) for row in load_manifest(path)]


def record_verdicts(folder: str | ObjectStoragePath, verdicts: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
    """
    Add a review's verdicts to the records of a folder: each prediction's sidecar and its line in every manifest of
    the folder get them appended to their ``review`` list, each file rewritten whole (:func:`write_whole`). Recording
    the same verdicts again (a resumed task) changes nothing.

    A prediction without a sidecar here is skipped (its images were stored elsewhere); other lines stay as they were.

    :param folder: the folder holding the images, their sidecars and manifests.
    :param verdicts: per prediction id, its images' verdicts (:data:`VERDICT_FIELDS`).
    :raises ProvenanceFormatError: for a sidecar or manifest line of a format this provider does not read.
    """
    base = as_storage_path(folder)
    wanted = {check_prediction_id(pid): [dict(v) for v in given] for pid, given in verdicts.items() if given}
    for prediction_id, added in wanted.items():
        sidecar = base / sidecar_name(prediction_id)
        if not sidecar.exists():
            continue
        data = json.loads(sidecar.read_text(encoding="utf-8"))
        _check_format(data, f"{sidecar}")
        data["review"] = _with_verdicts(data.get("review"), added)
        write_sidecar(base, data)
    for entry in list(base.iterdir()) if base.exists() else []:
        if _manifest_order(entry.name) is None:
            continue
        lines = [line for line in entry.read_text(encoding="utf-8").splitlines() if line.strip()]
        rows = [json.loads(line) for line in lines]
        touched = False
        for row in rows:
            more = wanted.get(str(row.get("prediction_id") or ""))
            if isinstance(row, dict) and more:
                row["review"] = _with_verdicts(row.get("review"), more)
                touched = True
        if touched:
            write_manifest(base, rows, name=entry.name)


def _with_verdicts(existing: Any, added: Sequence[Mapping[str, Any]]) -> list[Any]:
    """A ``review`` list with ``added`` appended, each verdict once: a resumed task recording again adds nothing."""
    merged = list(existing or [])
    merged.extend(verdict for verdict in added if verdict not in merged)
    return merged


def _verdicts(value: Any) -> tuple[Mapping[str, Any], ...]:
    """A record's ``review`` list (absent in records written before reviews existed)."""
    return tuple(dict(item) for item in value or () if isinstance(item, Mapping))


def _manifest_order(name: str) -> int | None:
    """:return: ``-1`` for :data:`MANIFEST_NAME`, the map index of ``manifest-<n>.jsonl``, else ``None``."""
    if name == MANIFEST_NAME:
        return -1
    stem, dot, ext = name.partition(".")
    if dot and ext == "jsonl" and stem.startswith("manifest-") and stem[len("manifest-") :].isdigit():
        return int(stem[len("manifest-") :])
    return None


def _record_input(raw_input: Mapping[str, Any]) -> dict[str, Any]:
    """The input as records keep it: inline images as size and sha256, secrets as ``***``."""
    return _redact(public_input(raw_input))


def _check_format(data: Mapping[str, Any], what: str) -> str:
    fmt = data.get("format")
    if fmt in KNOWN_FORMATS:
        return str(fmt)
    if fmt is None:
        raise ProvenanceFormatError(f"{what}: no 'format' field; expected {SIDECAR_FORMAT!r}")
    raise ProvenanceFormatError(
        f"{what}: format {str(fmt)[:80]!r} is not one this provider reads ({', '.join(sorted(KNOWN_FORMATS))}); "
        "a newer provider may have written it"
    )


def _redact(value: dict[str, Any]) -> dict[str, Any]:
    """Airflow's own secret masking: registered secrets and values under sensitive names become ``***``."""
    from airflow_provider_cometflux._compat import redact

    try:
        redacted = redact(value)
    except (ImportError, RuntimeError):  # no masker (logging not set up): at least the sensitive names
        return _redact_names(value)
    return dict(redacted) if isinstance(redacted, Mapping) else _redact_names(value)


def _redact_names(value: Any, name: str = "") -> Any:
    if name and any(word in name.lower() for word in _SENSITIVE_NAMES):
        return "***"
    if isinstance(value, Mapping):
        return {key: _redact_names(item, str(key)) for key, item in value.items()}
    if isinstance(value, list):
        return [_redact_names(item) for item in value]
    return value


def _without_query(url: Any) -> str | None:
    """A delivery URL without query string or fragment (where a signed URL keeps its token)."""
    if not isinstance(url, str) or not url:
        return None
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))
