"""
The simulator's output images, drawn with Pillow (the ``testing`` extra).

Each image has the size FLUX would give it for the requested ``aspect_ratio`` and ``megapixels`` (the table of
Replicate's FLUX models: 1:1 at 1 MP is 1024x1024, at 0.25 MP 512x512; 16:9 is 1344x768 ...), is saved in the
requested format and quality, and shows the prompt on a gradient whose colours come from the prediction id and
output index: the same prediction and index always give the same bytes.
"""

from __future__ import annotations

import io
import math
import random
import struct
import textwrap
import unicodedata
from functools import lru_cache
from typing import Any

from airflow_provider_cometflux.contract import CONTENT_TYPES

__all__ = [
    "CONTENT_TYPES",
    "FLUX_SIZES",
    "content_type_for",
    "flux_size",
    "normalise_format",
    "render_image",
]


#: Width and height at 1 megapixel for each aspect ratio of FLUX on Replicate (``0.25`` megapixels halves both).
FLUX_SIZES: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "16:9": (1344, 768),
    "21:9": (1536, 640),
    "3:2": (1216, 832),
    "2:3": (832, 1216),
    "4:5": (896, 1088),
    "5:4": (1088, 896),
    "3:4": (896, 1152),
    "4:3": (1152, 896),
    "9:16": (768, 1344),
    "9:21": (640, 1536),
    # kontext only
    "2:1": (1440, 720),
    "1:2": (720, 1440),
}

#: FLUX.2's ``resolution`` choices, in megapixels (``1 MP`` and ``match_input_image`` keep the size above).
FLUX2_RESOLUTIONS: dict[str, float] = {"0.5 MP": 0.5, "2 MP": 2.0, "4 MP": 4.0}
#: FLUX.2's largest side ("Max image size 2048x2048").
FLUX2_MAX_SIDE = 2048

_JPEG_SEGMENT_MAX_PAYLOAD = 65533  # a segment's length field counts itself and is at most 65535


def normalise_format(fmt: str) -> str:
    """
    Return the canonical name of an image format.

    :param fmt: ``png``, ``jpg``, ``jpeg`` or ``webp`` (any case, optional leading dot).
    :raises ValueError: for any other format.
    """
    name = fmt.lower().lstrip(".")
    if name == "jpeg":
        name = "jpg"
    if name not in CONTENT_TYPES:
        raise ValueError(f"unsupported image format {fmt!r}; expected one of png, jpg, webp")
    return name


def content_type_for(fmt: str) -> str:
    """
    Return the HTTP Content-Type of an image format.

    :param fmt: ``png``, ``jpg``, ``jpeg`` or ``webp``.
    """
    return CONTENT_TYPES[normalise_format(fmt)]


def flux_size(
    aspect_ratio: Any = None,
    megapixels: Any = None,
    *,
    width: Any = None,
    height: Any = None,
    long_side: int | None = None,
    resolution: Any = None,
    step: int = 32,
) -> tuple[int, int]:
    """
    Return the ``(width, height)`` FLUX gives an image.

    :param aspect_ratio: ``input.aspect_ratio``; an unknown one, ``match_input_image`` or none means 1:1.
    :param megapixels: ``input.megapixels`` (``"1"`` or ``"0.25"``; anything else means 1).
    :param width: ``input.width``, used with ``aspect_ratio="custom"`` (rounded to a multiple of ``step``, as
        FLUX does).
    :param height: ``input.height``, likewise.
    :param long_side: if set, scale the result down so its longer side is at most this many pixels.
    :param resolution: FLUX.2's ``input.resolution`` (``"0.5 MP"`` ... ``"4 MP"``): the area of the image, its
        sides multiples of 16 and at most 2048; ignored with ``aspect_ratio="custom"``, as FLUX.2 ignores it.
    :param step: the multiple ``width`` and ``height`` are rounded to (32, or 16 for FLUX.2 pro, flex and max).
    """
    if aspect_ratio == "custom" and isinstance(width, int) and isinstance(height, int):
        w, h = (max(step, round(width / step) * step), max(step, round(height / step) * step))
    else:
        w, h = FLUX_SIZES.get(aspect_ratio if isinstance(aspect_ratio, str) else "1:1", FLUX_SIZES["1:1"])
        if str(megapixels) == "0.25":
            w, h = w // 2, h // 2
        area = FLUX2_RESOLUTIONS.get(resolution) if isinstance(resolution, str) else None
        if area is not None:
            scale = min(math.sqrt(area), FLUX2_MAX_SIDE / max(w, h))
            w, h = max(16, round(w * scale / 16) * 16), max(16, round(h * scale / 16) * 16)
    if long_side is not None and max(w, h) > long_side:
        scale = long_side / max(w, h)
        w, h = max(1, round(w * scale)), max(1, round(h * scale))
    return w, h


def _printable(text: str) -> str:
    """Replace control characters (ANSI escapes, newlines) with spaces so they can be drawn."""
    return "".join(" " if unicodedata.category(ch).startswith("C") else ch for ch in text)


@lru_cache(maxsize=16)
def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def render_image(
    fmt: str,
    *,
    seed: int,
    width: int,
    height: int,
    prompt: str = "",
    caption: str = "",
    quality: int | None = None,
    pad_to: int | None = None,
) -> bytes:
    """
    Draw one output image and return the bytes of its file.

    :param fmt: ``png``, ``jpg`` or ``webp``.
    :param seed: picks the gradient's colours (the simulator derives it from the prediction id and index).
    :param width: the width in pixels.
    :param height: the height in pixels.
    :param prompt: the text drawn on the image (control characters are drawn as spaces).
    :param caption: a smaller line drawn under the prompt (the simulator writes the prediction id and index).
    :param quality: the JPEG/WebP quality (``input.output_quality``; default 80, as FLUX's).
    :param pad_to: if larger than the file, grow it to exactly this many bytes with ignorable data (a private
        PNG chunk, JPEG ``COM`` segments, an unknown WebP chunk; WebP sizes are even).
    :raises ValueError: for an unsupported format.
    """
    name = normalise_format(fmt)
    try:
        from PIL import Image, ImageDraw
    except ImportError as exc:  # pragma: no cover - the testing extra is missing
        raise ImportError(
            "the simulator draws its images with Pillow: pip install 'airflow-provider-cometflux[testing]'"
        ) from exc

    rng = random.Random(seed)
    corners = [tuple(rng.randrange(40, 216) for _ in range(3)) for _ in range(4)]
    small = Image.new("RGB", (2, 2))
    small.putdata(corners)  # type: ignore[arg-type]
    image = small.resize((width, height), Image.Resampling.BILINEAR)

    draw = ImageDraw.Draw(image)
    text_size = max(8, min(width, height) // 18)
    font = _font(text_size)
    columns = max(8, int(width / (text_size * 0.6)) - 2)
    lines = textwrap.wrap(_printable(prompt), width=columns)[: max(1, height // (text_size * 2))] or [""]
    y = max(2, text_size // 2)
    for line in lines:
        draw.text((text_size // 2 + 1, y + 1), line, fill=(0, 0, 0), font=font)
        draw.text((text_size // 2, y), line, fill=(255, 255, 255), font=font)
        y += int(text_size * 1.25)
    if caption:
        small_font = _font(max(8, text_size // 2))
        draw.text((text_size // 2, height - text_size), _printable(caption), fill=(255, 255, 255), font=small_font)

    out = io.BytesIO()
    level = 80 if quality is None else max(0, min(100, int(quality)))
    if name == "png":
        image.save(out, format="PNG", compress_level=3)
    elif name == "jpg":
        image.save(out, format="JPEG", quality=max(1, level))
    else:
        image.save(out, format="WEBP", quality=level, method=0)
    data = out.getvalue()
    if pad_to is not None and pad_to > len(data):
        data = _pad(name, data, pad_to, seed)
    return data


def _filler(seed: int, size: int) -> bytes:
    """``size`` incompressible, seed-determined bytes."""
    return random.Random(seed ^ 0x5EED).randbytes(size) if size > 0 else b""


def _pad(name: str, data: bytes, pad_to: int, seed: int) -> bytes:
    gap = pad_to - len(data)
    if name == "png":  # a private ancillary chunk before IEND (12 bytes of chunk framing)
        import zlib

        if gap < 12:
            return data
        payload = _filler(seed, gap - 12)
        chunk = struct.pack(">I", len(payload)) + b"cfPd" + payload
        chunk += struct.pack(">I", zlib.crc32(b"cfPd" + payload) & 0xFFFFFFFF)
        return data[:-12] + chunk + data[-12:]
    if name == "jpg":  # COM segments right after SOI
        if gap < 4:
            return data
        count = -(-gap // (_JPEG_SEGMENT_MAX_PAYLOAD + 4))
        total = gap - 4 * count
        filler = _filler(seed, total)
        pieces, offset = [], 0
        for index in range(count):
            size = total // count + (1 if index < total % count else 0)
            pieces.append(struct.pack(">BBH", 0xFF, 0xFE, size + 2) + filler[offset : offset + size])
            offset += size
        return data[:2] + b"".join(pieces) + data[2:]
    # WebP: an unknown RIFF chunk at the end (decoders skip it); chunks are even-sized
    gap -= gap % 2
    if gap < 8:
        return data
    payload = _filler(seed, gap - 8)
    body = data[12:] + b"PADD" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", len(body) + 4) + b"WEBP" + body
