"""
Small, dependency-free image writers used by the CometAPI simulator.

Every function here returns the bytes of a real, decodable image file, so code under test can hand
the simulator's outputs to any image library. No third-party imaging library is needed:

* PNG is a straightforward truecolour encoder (``zlib`` for the ``IDAT`` stream) drawing a diagonal
  gradient between two seed-derived colours.
* JPEG is a baseline (SOF0) encoder for images whose 8x8 blocks are flat: every block carries only a DC
  coefficient, which is enough for a blocky gradient in seed-derived colours.
* WebP is a lossless (VP8L) encoder for two-colour stripe patterns, wrapped in the extended (``VP8X``)
  container so that extra metadata chunks are allowed.

Each file also carries the seed in a metadata field (PNG ``tEXt``, JPEG ``COM``, WebP ``SEED`` chunk), and
``pad_to`` grows a file to an exact byte size with ignorable data (a private PNG chunk, JPEG ``COM``
segments, an unknown WebP chunk) so tests can serve large downloads.
"""

from __future__ import annotations

import random
import struct
import zlib

__all__ = ["CONTENT_TYPES", "content_type_for", "image_size_for", "normalise_format", "render_image"]

#: Content-Type for each supported format name.
CONTENT_TYPES: dict[str, str] = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp"}

_JPEG_SEGMENT_MAX_PAYLOAD = 65533  # a segment length field counts itself and is at most 65535
_COMMENT_PREFIX = b"cometapi-simulator seed="


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


def image_size_for(
    aspect_ratio: str | None,
    *,
    long_side: int = 64,
    width: int | None = None,
    height: int | None = None,
) -> tuple[int, int]:
    """
    Work out a small image size for a model's ``aspect_ratio`` input.

    :param aspect_ratio: ``"W:H"`` (e.g. ``"16:9"``), ``"custom"`` (uses ``width``/``height``),
        ``"match_input_image"`` or ``None`` (both square); anything unparseable is treated as square.
    :param long_side: the length of the longer side in pixels.
    :param width: the requested width for ``"custom"``.
    :param height: the requested height for ``"custom"``.
    :return: ``(width, height)``, each at least 1 pixel.
    """
    ratio_w, ratio_h = 1.0, 1.0
    if aspect_ratio == "custom" and width and height and width > 0 and height > 0:
        ratio_w, ratio_h = float(width), float(height)
    elif isinstance(aspect_ratio, str) and ":" in aspect_ratio:
        left, _, right = aspect_ratio.partition(":")
        try:
            parsed_w, parsed_h = float(left), float(right)
        except ValueError:
            parsed_w, parsed_h = 1.0, 1.0
        if parsed_w > 0 and parsed_h > 0:
            ratio_w, ratio_h = parsed_w, parsed_h
    if ratio_w >= ratio_h:
        return long_side, max(1, round(long_side * ratio_h / ratio_w))
    return max(1, round(long_side * ratio_w / ratio_h)), long_side


def render_image(fmt: str, *, seed: int, width: int, height: int, pad_to: int | None = None) -> bytes:
    """
    Render a small, valid image file.

    The same arguments always give the same bytes; different seeds give different colours and
    different metadata.

    :param fmt: ``png``, ``jpg`` (or ``jpeg``) or ``webp``.
    :param seed: any integer; picks the colours and the pattern.
    :param width: width in pixels (1..16383).
    :param height: height in pixels (1..16383).
    :param pad_to: if given and larger than the natural file size, grow the file to exactly this many
        bytes with ignorable metadata (when the gap is too small to hold one metadata block, the file
        is left as it is).
    :return: the encoded file.
    """
    name = normalise_format(fmt)
    if not (1 <= width <= 16383 and 1 <= height <= 16383):
        raise ValueError(f"image size out of range: {width}x{height}")
    rng = random.Random(seed)
    colour_a = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
    colour_b = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
    if colour_a == colour_b:
        colour_b = (255 - colour_a[0], colour_b[1], colour_b[2])
    stripe = 2 + rng.randrange(7)
    if name == "png":
        return _render_png(seed, width, height, colour_a, colour_b, pad_to)
    if name == "jpg":
        return _render_jpeg(seed, width, height, colour_a, colour_b, pad_to)
    return _render_webp(seed, width, height, colour_a, colour_b, stripe, pad_to)


def _padding_bytes(seed: int, size: int) -> bytes:
    """Return ``size`` incompressible, seed-determined bytes."""
    return random.Random(seed ^ 0x5EED).randbytes(size) if size > 0 else b""


def _seed_comment(seed: int) -> bytes:
    return _COMMENT_PREFIX + str(seed).encode("ascii")


def _lerp(colour_a: tuple[int, int, int], colour_b: tuple[int, int, int], t: float) -> tuple[int, int, int]:
    return (
        round(colour_a[0] + (colour_b[0] - colour_a[0]) * t),
        round(colour_a[1] + (colour_b[1] - colour_a[1]) * t),
        round(colour_a[2] + (colour_b[2] - colour_a[2]) * t),
    )


# --------------------------------------------------------------------------------------------------- PNG


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _render_png(
    seed: int,
    width: int,
    height: int,
    colour_a: tuple[int, int, int],
    colour_b: tuple[int, int, int],
    pad_to: int | None,
) -> bytes:
    span = max(1, width + height - 2)
    raw = bytearray()
    for y in range(height):
        raw.append(0)  # filter type: none
        for x in range(width):
            raw.extend(_lerp(colour_a, colour_b, (x + y) / span))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit truecolour
    body = (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"tEXt", b"Comment\x00" + _seed_comment(seed))
        + _png_chunk(b"IDAT", zlib.compress(bytes(raw), 9))
    )
    end = _png_chunk(b"IEND", b"")
    if pad_to is not None:
        gap = pad_to - len(body) - len(end)
        if gap >= 12:
            # "cfPd": ancillary, private, safe-to-copy; decoders skip it.
            body += _png_chunk(b"cfPd", _padding_bytes(seed, gap - 12))
    return body + end


# -------------------------------------------------------------------------------------------------- JPEG

# The standard luminance DC table (ITU T.81 Annex K.3): code-length counts for lengths 1..16, symbols.
_DC_BITS = (0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0)
_DC_VALUES = tuple(range(12))
# Flat blocks only need end-of-block (0x00); a second symbol keeps the table a complete prefix code.
_AC_BITS = (0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
_AC_VALUES = (0x00, 0x01)


def _huffman_codes(bits: tuple[int, ...], values: tuple[int, ...]) -> dict[int, tuple[int, int]]:
    """Build canonical Huffman codes: symbol -> (code, length)."""
    codes: dict[int, tuple[int, int]] = {}
    code = 0
    index = 0
    for length, count in enumerate(bits, start=1):
        for _ in range(count):
            codes[values[index]] = (code, length)
            code += 1
            index += 1
        code <<= 1
    return codes


class _JpegBitWriter:
    """MSB-first bit writer with JPEG byte stuffing."""

    def __init__(self) -> None:
        self.out = bytearray()
        self._acc = 0
        self._count = 0

    def write(self, value: int, length: int) -> None:
        self._acc = (self._acc << length) | (value & ((1 << length) - 1))
        self._count += length
        while self._count >= 8:
            self._count -= 8
            byte = (self._acc >> self._count) & 0xFF
            self.out.append(byte)
            if byte == 0xFF:
                self.out.append(0x00)
        self._acc &= (1 << self._count) - 1

    def flush(self) -> bytes:
        if self._count:
            self.write((1 << (8 - self._count)) - 1, 8 - self._count)  # pad with 1-bits
        return bytes(self.out)


def _jpeg_segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


def _jpeg_padding(seed: int, gap: int) -> bytes:
    """COM segments totalling exactly ``gap`` bytes (``gap`` >= 4)."""
    count = -(-gap // (_JPEG_SEGMENT_MAX_PAYLOAD + 4))
    payload_total = gap - 4 * count
    filler = _padding_bytes(seed, payload_total)
    pieces = []
    offset = 0
    for i in range(count):
        size = payload_total // count + (1 if i < payload_total % count else 0)
        pieces.append(_jpeg_segment(0xFE, filler[offset : offset + size]))
        offset += size
    return b"".join(pieces)


def _render_jpeg(
    seed: int,
    width: int,
    height: int,
    colour_a: tuple[int, int, int],
    colour_b: tuple[int, int, int],
    pad_to: int | None,
) -> bytes:
    blocks_x = -(-width // 8)
    blocks_y = -(-height // 8)
    span = max(1, blocks_x + blocks_y - 2)
    dc_codes = _huffman_codes(_DC_BITS, _DC_VALUES)
    eob_code, eob_length = _huffman_codes(_AC_BITS, _AC_VALUES)[0x00]
    writer = _JpegBitWriter()
    predictors = [0, 0, 0]
    for block_y in range(blocks_y):
        for block_x in range(blocks_x):
            red, green, blue = _lerp(colour_a, colour_b, (block_x + block_y) / span)
            samples = (
                0.299 * red + 0.587 * green + 0.114 * blue,
                128 - 0.168736 * red - 0.331264 * green + 0.5 * blue,
                128 + 0.5 * red - 0.418688 * green - 0.081312 * blue,
            )
            for component, sample in enumerate(samples):
                # A flat block's DC coefficient is 8 * (sample - 128); with a quantiser of 8 it is the
                # level shift itself.
                level = max(-128, min(127, round(sample) - 128))
                diff = level - predictors[component]
                predictors[component] = level
                category = abs(diff).bit_length()
                code, length = dc_codes[category]
                writer.write(code, length)
                if category:
                    writer.write(diff if diff >= 0 else diff + (1 << category) - 1, category)
                writer.write(eob_code, eob_length)
    scan = writer.flush()

    def dht(table_class: int, bits: tuple[int, ...], values: tuple[int, ...]) -> bytes:
        return _jpeg_segment(0xC4, bytes([table_class << 4]) + bytes(bits) + bytes(values))

    head = b"\xff\xd8" + _jpeg_segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
    head += _jpeg_segment(0xFE, _seed_comment(seed))
    tail = (
        _jpeg_segment(0xDB, b"\x00" + bytes([8] * 64))
        + _jpeg_segment(0xC0, struct.pack(">BHHB", 8, height, width, 3) + b"\x01\x11\x00\x02\x11\x00\x03\x11\x00")
        + dht(0, _DC_BITS, _DC_VALUES)
        + dht(1, _AC_BITS, _AC_VALUES)
        + _jpeg_segment(0xDA, b"\x03\x01\x00\x02\x00\x03\x00\x00\x3f\x00")
        + scan
        + b"\xff\xd9"
    )
    if pad_to is not None:
        gap = pad_to - len(head) - len(tail)
        if gap >= 4:
            head += _jpeg_padding(seed, gap)
    return head + tail


# -------------------------------------------------------------------------------------------------- WebP


class _LsbBitWriter:
    """LSB-first bit writer (the VP8L bit order)."""

    def __init__(self) -> None:
        self._acc = 0
        self._count = 0

    def write(self, value: int, length: int) -> None:
        self._acc |= (value & ((1 << length) - 1)) << self._count
        self._count += length

    def getvalue(self) -> bytes:
        return self._acc.to_bytes((self._count + 7) // 8, "little")


def _riff_chunk(fourcc: bytes, payload: bytes) -> bytes:
    return fourcc + struct.pack("<I", len(payload)) + payload + (b"\x00" if len(payload) % 2 else b"")


def _vp8l_simple_code(writer: _LsbBitWriter, symbols: list[int]) -> None:
    """Write a VP8L "simple" prefix code of one or two 8-bit symbols."""
    writer.write(1, 1)  # simple code
    writer.write(len(symbols) - 1, 1)
    writer.write(1, 1)  # first symbol uses 8 bits
    for symbol in symbols:
        writer.write(symbol, 8)


def _render_webp(
    seed: int,
    width: int,
    height: int,
    colour_a: tuple[int, int, int],
    colour_b: tuple[int, int, int],
    stripe: int,
    pad_to: int | None,
) -> bytes:
    # Two colours that differ only in green, so one 1-bit prefix code draws the stripes and the red,
    # blue and alpha codes have a single symbol (zero bits per pixel).
    red, blue = colour_a[0], colour_a[2]
    greens = sorted({colour_a[1], colour_b[1]})
    if len(greens) == 1:
        greens.append((greens[0] + 128) % 256)
        greens.sort()
    writer = _LsbBitWriter()
    writer.write(0x2F, 8)  # VP8L signature
    writer.write(width - 1, 14)
    writer.write(height - 1, 14)
    writer.write(0, 1)  # alpha is not used
    writer.write(0, 3)  # version
    writer.write(0, 1)  # no transforms
    writer.write(0, 1)  # no colour cache
    writer.write(0, 1)  # no meta prefix codes
    _vp8l_simple_code(writer, greens)  # green + length prefixes
    _vp8l_simple_code(writer, [red])
    _vp8l_simple_code(writer, [blue])
    _vp8l_simple_code(writer, [255])  # alpha
    _vp8l_simple_code(writer, [0])  # distance
    for y in range(height):
        for x in range(width):
            writer.write(((x + y) // stripe) & 1, 1)
    bitstream = writer.getvalue()

    vp8x = struct.pack("<I", 0) + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    chunks = _riff_chunk(b"VP8X", vp8x) + _riff_chunk(b"VP8L", bitstream)
    chunks += _riff_chunk(b"SEED", _seed_comment(seed))
    if pad_to is not None:
        gap = pad_to - (12 + len(chunks))
        if gap >= 8:
            payload = gap - 8 - (gap % 2)
            chunks += _riff_chunk(b"PADD", _padding_bytes(seed, payload))
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WEBP" + chunks
