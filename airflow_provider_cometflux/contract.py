"""What a task of this provider leaves behind, named once: XCom keys, file names, record fields, image formats.

Completion and storage write these, provenance builds and reads the records, the UI plugin reads all of them back
and the simulator serves the image formats. Pure data, no Airflow import: every side can read it cheaply.
"""

from __future__ import annotations

import re

# ------------------------------------------------------------------------------------------------------- XComs

#: The prediction's id (the operator pushes it as soon as it is created).
XCOM_PREDICTION_ID = "prediction_id"
#: The prediction's summary with the request's input (:meth:`~airflow_provider_cometflux.models.Prediction.summary`).
XCOM_PREDICTION = "prediction"
#: The stored images' metadata (:data:`IMAGE_FIELDS`): a list for a prediction, a list of lists for a batch.
XCOM_IMAGES = "images"
#: A batch's prediction ids, per prompt (``None`` where none was created).
XCOM_PREDICTION_IDS = "prediction_ids"
#: A batch's :data:`XCOM_PREDICTION` values, per prompt (``None`` where it has no images).
XCOM_PREDICTIONS = "predictions"
#: A batch's failed prompts (:data:`FAILURE_FIELDS`), in prompt order.
XCOM_FAILURES = "failures"
#: Why a batch's prompts have no prediction, by position (kept for the task's completion; not for users).
XCOM_CREATE_ERRORS = "_cometflux_create_errors"
#: A review task's images and verdicts (:data:`REVIEW_FIELDS`, :data:`REVIEW_ROUND_FIELDS`), pushed every round.
XCOM_REVIEW = "review"
#: What the task's predictions cost (:data:`COST_FIELDS`); reused images at 0.
XCOM_COST = "cost"
#: The predictions a task reused from ``reuse_path``, by position (kept across the deferral; not for users).
XCOM_REUSED = "_cometflux_reused"
#: Airflow's own key: the stored URIs, or the delivery URLs without ``output_path`` (a list per prompt in a batch).
XCOM_RETURN_VALUE = "return_value"

#: Every key a task of this provider writes for others to read.
XCOM_KEYS = (
    XCOM_PREDICTION,
    XCOM_PREDICTIONS,
    XCOM_IMAGES,
    XCOM_FAILURES,
    XCOM_PREDICTION_IDS,
    XCOM_PREDICTION_ID,
    XCOM_REVIEW,
    XCOM_COST,
    XCOM_RETURN_VALUE,
)
#: The keys only a batch writes.
BATCH_XCOM_KEYS = (XCOM_PREDICTION_IDS, XCOM_PREDICTIONS, XCOM_FAILURES)

#: XCom :data:`XCOM_COST`: US dollars (``None`` when a model has no price), images, predictions, reused predictions.
COST_FIELDS = ("usd", "images", "predictions", "reused")
#: A prediction record's field (XCom ``prediction``, sidecar, manifest line): ``{"usd", "images"}`` of that prediction.
RECORD_COST = "cost"
#: A prediction record's field saying where its images were reused from (:data:`REUSED_FROM_FIELDS`), else ``None``.
RECORD_REUSED_FROM = "reused_from"
#: The earlier prediction whose stored images were copied, and the folder they were copied from.
REUSED_FROM_FIELDS = ("prediction_id", "stored_in")
#: One entry of XCom :data:`XCOM_IMAGES`.
IMAGE_FIELDS = ("uri", "source_url", "sha256", "bytes", "content_type")
#: One entry of XCom :data:`XCOM_FAILURES`.
FAILURE_FIELDS = ("index", "prompt", "prediction_id", "status", "message")

# ------------------------------------------------------------------------------------------------------ review

#: A verdict not given yet, and the two a reviewer gives.
PENDING = "pending"
KEPT = "kept"
REJECTED = "rejected"
VERDICTS = (PENDING, KEPT, REJECTED)
#: XCom :data:`XCOM_REVIEW`: ``{"round", "max_rounds", "options", "images": [...], "rounds": [...]}``.
REVIEW_FIELDS = ("round", "max_rounds", "options", "images", "rounds")
#: One image under review (its slot is its position in the ``images`` the review was given).
REVIEW_IMAGE_FIELDS = (
    "slot",
    "uri",
    "prompt",
    "prediction_id",
    "model",
    "sha256",
    "bytes",
    "content_type",
    "round",
    "verdict",
    "by",
    "at",
)
#: One answered round: who answered, when, the slots kept, whether new versions were asked for, the images.
REVIEW_ROUND_FIELDS = ("round", "by", "at", "kept", "redo", "images")
#: One verdict as a sidecar's or a manifest line's ``review`` list holds it.
VERDICT_FIELDS = ("uri", "verdict", "by", "at", "round", "task_id", "run_id")

# ---------------------------------------------------------------------------------------------- image formats

#: ``output_format`` -> (file extension, Content-Type): the only images stored, served or simulated.
FORMATS: dict[str, tuple[str, str]] = {
    "webp": ("webp", "image/webp"),
    "jpg": ("jpg", "image/jpeg"),
    "png": ("png", "image/png"),
}
#: Stored file extension -> Content-Type.
CONTENT_TYPES: dict[str, str] = dict(FORMATS.values())
#: Content-Type -> stored file extension.
EXTENSIONS: dict[str, str] = {content_type: ext for ext, content_type in FORMATS.values()}
#: The extension of a stored file whose Content-Type is none of :data:`FORMATS` (and no format was asked for).
UNKNOWN_EXTENSION = "bin"

# ------------------------------------------------------------------------------------------------- file names

#: A batch task's manifest; a mapped batch task writes ``manifest-<map index>.jsonl``.
MANIFEST_NAME = "manifest.jsonl"
_STORED_NAME = re.compile(rf"^(?P<pid>[A-Za-z0-9_-]+)-(?P<n>\d+)\.(?P<ext>{'|'.join(CONTENT_TYPES)})$")


def stored_image_stem(prediction_id: str, index: int) -> str:
    """
    :param prediction_id: the prediction.
    :param index: the output's position in the prediction's output.
    :return: a stored image's name without its extension: ``<prediction id>-<index>``.
    """
    return f"{prediction_id}-{index}"


def stored_image_name(prediction_id: str, index: int, ext: str) -> str:
    """
    :param prediction_id: the prediction.
    :param index: the output's position.
    :param ext: the file extension (:data:`FORMATS`).
    :return: ``<prediction id>-<index>.<ext>``.
    """
    return f"{stored_image_stem(prediction_id, index)}.{ext}"


def parse_stored_image_name(name: str) -> tuple[str, int, str] | None:
    """
    :param name: a file name (no folder part).
    :return: ``(prediction id, index, extension)`` for a name storage writes with a known image extension, else
        ``None``.
    """
    match = _STORED_NAME.match(name)
    if match is None:
        return None
    return match["pid"], int(match["n"]), match["ext"]


def sidecar_name(prediction_id: str) -> str:
    """
    :param prediction_id: the prediction (already checked as a safe file name).
    :return: its sidecar's name, ``<prediction id>.json``.
    """
    return f"{prediction_id}.json"


def manifest_name(map_index: int | None) -> str:
    """
    :param map_index: the batch task's map index (``-1`` or ``None`` when it is not mapped).
    :return: :data:`MANIFEST_NAME`, or ``manifest-<map index>.jsonl`` for a mapped task.
    """
    return MANIFEST_NAME if map_index is None or map_index < 0 else f"manifest-{map_index}.jsonl"


# ----------------------------------------------------------------------------------- sidecars and manifests

#: The format (and its version) written in every sidecar and every manifest line, as the field ``format``.
SIDECAR_FORMAT = "cometflux.prediction/1"
#: The formats the readers accept.
KNOWN_FORMATS = frozenset({SIDECAR_FORMAT})
#: The status of a manifest line whose prompt produced images.
SUCCEEDED = "succeeded"
#: The fields of the prediction a sidecar copies as they are.
SIDECAR_PREDICTION_FIELDS = ("model", "version", "status", "created_at", "started_at", "completed_at", "web_url")
#: What the provider adds to a prediction's ``metrics`` (XCom ``prediction``, sidecars, manifests): how many images
#: were asked for (``num_outputs``, else 1) and how many came back (flux-schnell and flux-dev's safety checker drops
#: unsafe ones; a shorter list is still a success).
METRIC_IMAGES_ASKED = "images_asked"
METRIC_IMAGES_RETURNED = "images_returned"
#: Every field of a sidecar.
SIDECAR_FIELDS = (
    "format",
    "prediction_id",
    *SIDECAR_PREDICTION_FIELDS,
    "error",
    "metrics",
    "input",
    "images",
    "review",
    RECORD_COST,
    RECORD_REUSED_FROM,
)
#: One image of a sidecar or a manifest line.
RECORD_IMAGE_FIELDS = ("uri", "sha256", "bytes", "content_type", "source_url")
#: Every field of a manifest line (every line has them all, so pandas and DuckDB read the file as one table).
MANIFEST_FIELDS = (
    "format",
    "index",
    "prompt",
    "status",
    "prediction_id",
    "model",
    "error",
    "sidecar",
    "images",
    "input",
    "created_at",
    "completed_at",
    "metrics",
    "review",
    RECORD_COST,
    RECORD_REUSED_FROM,
)

# ---------------------------------------------------------------------------------------------- reuse index

#: The format (and its version) of an entry of the index under ``reuse_path``.
REUSE_FORMAT = "cometflux.reuse/1"


def reuse_entry_name(key: str) -> str:
    """
    :param key: a reuse key (a sha256 hex digest of the model and the whole input).
    :return: the index entry's file name under ``reuse_path``: ``<key>.json``.
    """
    return f"{key}.json"
