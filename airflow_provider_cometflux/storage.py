"""Durable copies of a prediction's outputs, through Airflow's ObjectStoragePath (file://, s3://, gs://, ...).

Each image is streamed in chunks to a temporary name beside its target and moved into place only when whole,
so a reader never sees a partial file; :func:`write_whole` does the same for a whole text (provenance's sidecars
and manifests). Names come from the prediction id and the output's position, never from
the remote side.
"""

from __future__ import annotations

import hashlib
import logging
import pathlib
import uuid
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_cometflux.contract import EXTENSIONS, FORMATS, UNKNOWN_EXTENSION, stored_image_stem
from airflow_provider_cometflux.exceptions import CometAPIError, CometFluxInputError
from airflow_provider_cometflux.hooks.cometapi import DOWNLOAD_TIMEOUT, MAX_OUTPUT_BYTES
from airflow_provider_cometflux.models import safe_text

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_cometflux.hooks.cometapi import CometAPIHook

log = logging.getLogger(__name__)

CHUNK_SIZE = 64 * 1024


@dataclass(frozen=True)
class StoredImage:
    """What XCom ``images`` holds for one image (:data:`~airflow_provider_cometflux.contract.IMAGE_FIELDS`)."""

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
    max_bytes: int = MAX_OUTPUT_BYTES,
    timeout: float = DOWNLOAD_TIMEOUT,
) -> list[StoredImage]:
    """
    Copy every output URL to ``<output_path>/<prediction_id>-<index>.<ext>``, whole or not at all.

    :param hook: the hook that downloads (the only code that speaks HTTP; its retry policy applies).
    :param urls: the prediction's output URLs, in order.
    :param output_path: the folder to copy into.
    :param prediction_id: names the files.
    :param output_format: the requested ``output_format``; the delivered Content-Type must match it.
    :param max_bytes: the largest output accepted.
    :param timeout: seconds the copy of one output may take.
    :return: one :class:`StoredImage` per URL, in order.
    """
    folder = as_storage_path(output_path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (PermissionError, NotADirectoryError, FileExistsError) as exc:
        raise unwritable(folder, exc) from exc
    outputs = [
        _Output(url, folder, stored_image_stem(prediction_id, index), prediction_id, output_format)
        for index, url in enumerate(urls)
    ]
    return [_already_stored(output) or _download(hook, output, max_bytes, timeout) for output in outputs]


def unwritable(folder: object, exc: OSError) -> CometFluxInputError:
    """The error of an ``output_path`` the worker cannot write to (fails the task without retries)."""
    return CometFluxInputError(
        f"output_path: cannot write to {safe_text(folder, limit=300)} ({type(exc).__name__}: "
        f"{safe_text(exc.strerror or exc, limit=200)}); give the user the worker runs as write access to that "
        "folder, or set output_path to one it can write to (the prediction itself succeeded: on Airflow 3.3+ "
        "clearing the task then reattaches to it and copies its images, while the service still has them)."
    )


@dataclass(frozen=True)
class _Output:
    """One output to copy: where from, where to, and what it must be."""

    url: str
    folder: ObjectStoragePath
    stem: str
    prediction_id: str
    output_format: str | None


class _PartialFile:
    """
    A file written under a temporary name beside its target (``.<name>.<random>.part``), and the sha256 of what
    was written to it; :meth:`move_into_place` gives it the target's name once whole. A download's sink.

    :param folder: the target's folder.
    :param name: the target's name (or, for a download, its name without the extension it is not yet known to have).
    """

    def __init__(self, folder: ObjectStoragePath, name: str) -> None:
        self.path = folder / f".{name}.{uuid.uuid4().hex}.part"
        self._out: Any = None
        self.sha = hashlib.sha256()

    def begin(self) -> None:
        self.close()
        self.sha = hashlib.sha256()
        try:
            self._out = self.path.open("wb")
        except PermissionError as exc:  # not a download failure: retrying the download would not help
            raise unwritable(self.path.parent, exc) from exc

    def write(self, chunk: bytes) -> None:
        self.sha.update(chunk)
        self._out.write(chunk)

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    def move_into_place(self, target: ObjectStoragePath) -> None:
        """Close the file and rename it to ``target`` (which it replaces)."""
        self.close()
        self.path.rename(target)

    def discard(self) -> None:
        """Close the file and remove it, if it is still there (after a failure; a no-op once moved)."""
        self.close()
        if self.path.exists():
            self.path.unlink()


def write_whole(folder: str | ObjectStoragePath, name: str, text: str) -> str:
    """
    Write ``text`` (UTF-8) to ``<folder>/<name>`` through a temporary name beside it, moved into place when whole,
    so a reader never sees a partial file; a second write replaces the first.

    :param folder: the folder (a URI, a local path or an ObjectStoragePath), created if needed.
    :param name: the file's name inside it.
    :return: the file's URI.
    """
    base = as_storage_path(folder)
    base.mkdir(parents=True, exist_ok=True)
    target = base / name
    partial = _PartialFile(base, name)
    try:
        partial.begin()
        partial.write(text.encode("utf-8"))
        partial.move_into_place(target)
    finally:
        partial.discard()
    return str(target)


#: The prefix of the hidden file :func:`check_writable` writes and removes.
PROBE_PREFIX = ".cometflux-probe-"


def check_writable(output_path: str | ObjectStoragePath) -> None:
    """
    Make sure images can be stored in ``output_path`` before anything is paid for: create the folder, then write
    and remove a small hidden file (``.cometflux-probe-<random>``) through ``ObjectStoragePath``.

    :param output_path: the task's ``output_path``.
    :raises CometFluxInputError: naming the folder and the reason, when it cannot be created or written to.
    """
    try:
        folder = as_storage_path(output_path)
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f"{PROBE_PREFIX}{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except CometFluxInputError:
        raise
    except Exception as exc:  # any store's refusal (PermissionError, a missing bucket, an unknown protocol...)
        raise CometFluxInputError(
            f"output_path: {safe_text(str(output_path), limit=300)!r} cannot be written to "
            f"({type(exc).__name__}: {safe_text(exc, limit=300)}). Nothing was created or paid for; give a folder "
            "the worker can write to (its permissions, the bucket and the connection's credentials)."
        ) from None


def _download(hook: CometAPIHook, output: _Output, max_bytes: int, timeout: float) -> StoredImage:
    folder, stem, pid = output.folder, output.stem, output.prediction_id
    partial = _PartialFile(folder, stem)
    try:
        got = hook.download_output(output.url, partial, max_bytes=max_bytes, timeout=timeout, prediction_id=pid)
        partial.close()
        target = folder / f"{stem}.{_extension(got.content_type, output)}"
        partial.move_into_place(target)
    finally:
        partial.discard()
    digest = partial.sha.hexdigest()
    log.info("Stored %s (%d bytes, sha256 %s).", target, got.bytes, digest)
    return StoredImage(str(target), output.url, digest, got.bytes, got.content_type)


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
            digest, size = file_digest(target)
            log.info("%s is already stored (%d bytes); not downloading it again.", target, size)
            return StoredImage(str(target), output.url, digest, size, content_type)
    return None


def copy_verified(
    source: str | ObjectStoragePath, folder: str | ObjectStoragePath, name: str, sha256: str, content_type: str
) -> StoredImage | None:
    """
    Copy a stored image to ``<folder>/<name>`` (whole or not at all), checking on the way that its bytes still have
    the recorded sha256; a source that is the target is only checked.

    :param source: the stored image.
    :param folder: the folder to copy into (created if needed).
    :param name: the copy's name.
    :param sha256: the digest the image was recorded with.
    :param content_type: its recorded MIME type.
    :return: the copy, or ``None`` when the source is gone or its bytes changed (then nothing is left behind).
    """
    src = as_storage_path(source)
    base = as_storage_path(folder)
    target = base / name
    if not src.exists():
        return None
    if str(src) == str(target):
        digest, size = file_digest(src)
        return StoredImage(str(target), "", digest, size, content_type) if digest == sha256 else None
    base.mkdir(parents=True, exist_ok=True)
    partial = _PartialFile(base, name)
    size = 0
    try:
        partial.begin()
        with src.open("rb") as f:
            while chunk := f.read(CHUNK_SIZE):
                partial.write(chunk)
                size += len(chunk)
        if partial.sha.hexdigest() != sha256:
            return None
        partial.move_into_place(target)
    finally:
        partial.discard()
    return StoredImage(str(target), "", sha256, size, content_type)


def file_digest(path: ObjectStoragePath) -> tuple[str, int]:
    sha = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            sha.update(chunk)
            size += len(chunk)
    return sha.hexdigest(), size


def _extension(content_type: str, output: _Output) -> str:
    if output.output_format in FORMATS:
        ext, wanted = FORMATS[output.output_format]
        if content_type and content_type != wanted:
            raise CometAPIError(
                f"{safe_text(output.url)} is {safe_text(repr(content_type))}, but output_format "
                f"{output.output_format!r} asks for {wanted!r}",
                prediction_id=output.prediction_id,
            )
        return ext
    return EXTENSIONS.get(content_type, UNKNOWN_EXTENSION)


def images_metadata(images: list[StoredImage]) -> list[dict[str, Any]]:
    """The XCom ``images`` value: ``[{uri, source_url, sha256, bytes, content_type}, ...]``."""
    return [asdict(image) for image in images]
