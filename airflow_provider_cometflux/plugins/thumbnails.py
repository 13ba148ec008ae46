"""Thumbnails of stored images for the UI's grids: made once with Pillow, kept in a bounded cache on the API server.

A thumbnail is named by the image's sha256 (as the task recorded it) and its size, so it is made once per image
and a changed image never shows an old thumbnail. The cache holds about :data:`MAX_ENTRIES` files; the oldest go
first (it is trimmed every :data:`TRIM_EVERY` new thumbnails). Each file is written under a temporary name and
moved into place, so a reader never sees half of one. Without Pillow (it is the ``testing`` extra's)
:func:`thumbnail` answers ``None`` and the plugin serves the image.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

#: The longest side of a thumbnail, in pixels (the HITL body shows images at up to 300 px wide).
EDGE = 320
#: Thumbnails kept at most; the oldest are removed beyond.
MAX_ENTRIES = 5000
#: The largest image a thumbnail is made of (pixels), against decompression bombs.
MAX_PIXELS = 64_000_000
CONTENT_TYPE = "image/webp"
#: The cache is trimmed every this many new thumbnails (so it holds at most MAX_ENTRIES + TRIM_EVERY files).
TRIM_EVERY = 64
_lock = threading.Lock()
_made = [0]


def cache_dir() -> Path:
    """:return: the cache folder, ``$COMETFLUX_THUMBNAIL_CACHE`` or ``<temp dir>/cometflux-thumbnails``."""
    folder = Path(os.environ.get("COMETFLUX_THUMBNAIL_CACHE") or Path(tempfile.gettempdir()) / "cometflux-thumbnails")
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return folder


def cache_key(uri: str, sha256: str, size: int) -> str:
    """:return: the thumbnail's file name: the image's digest and size (its URI's digest when none was recorded)."""
    digest = sha256 if len(sha256) == 64 and all(c in "0123456789abcdef" for c in sha256) else ""
    digest = digest or hashlib.sha256(uri.encode()).hexdigest()
    return f"{digest}-{size}-{EDGE}.webp"


def thumbnail(path: ObjectStoragePath, *, uri: str, sha256: str, size: int) -> bytes | None:
    """
    The thumbnail of a stored image, from the cache or made now.

    :param path: the image (already checked to be one storage wrote).
    :param uri: its recorded URI.
    :param sha256: its recorded digest.
    :param size: its size now, in bytes.
    :return: WebP bytes, or ``None`` without Pillow.
    :raises OSError, ValueError: the image cannot be read or is not an image Pillow opens.
    """
    try:
        from PIL import Image
    except ImportError:
        return None
    folder = cache_dir()
    target = folder / cache_key(uri, sha256, size)
    try:
        data = target.read_bytes()
        os.utime(target)
        return data
    except FileNotFoundError:
        pass
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    with path.open("rb") as source, Image.open(source) as image:
        image.draft("RGB", (EDGE, EDGE))  # JPEG decodes at a reduced scale
        image.thumbnail((EDGE, EDGE))
        out = image.convert("RGBA" if image.mode in ("RGBA", "LA", "P") else "RGB")
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".part-", suffix=".webp", delete=False) as part:
            out.save(part, "WEBP", quality=75, method=4)
    os.replace(part.name, target)
    with _lock:
        _made[0] += 1
        trim = (_made[0] - 1) % TRIM_EVERY == 0
    if trim:
        _bound(folder)
    return target.read_bytes()


def _bound(folder: Path) -> None:
    """
    Remove the oldest thumbnails beyond :data:`MAX_ENTRIES`, and parts a crash left behind. Other requests (and
    other processes sharing the folder) write and rename files meanwhile: a file gone before it is read is skipped,
    and a part being written is left alone.
    """
    with _lock:
        entries = []
        for entry in os.scandir(folder):
            try:
                mtime = entry.stat().st_mtime
            except FileNotFoundError:  # renamed or removed since the folder was listed
                continue
            if entry.name.startswith(".part-"):
                if mtime < time.time() - 3600:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
            elif entry.name.endswith(".webp"):
                entries.append((mtime, entry.path))
        if len(entries) <= MAX_ENTRIES:
            return
        entries.sort()
        for _, old in entries[: len(entries) - MAX_ENTRIES]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(old)
