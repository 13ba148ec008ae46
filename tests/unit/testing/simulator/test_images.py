"""The simulator's images: Pillow files of FLUX's sizes, in the requested format, showing the prompt."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_cometflux.testing.simulator import CometAPISimulator
from airflow_provider_cometflux.testing.simulator.images import FLUX_SIZES, flux_size, render_image
from tests.unit.testing.conftest import (
    DEV,
    KONTEXT_PRO,
    PIL_FORMATS,
    PRO,
    SCHNELL,
    decode,
    finished,
    post_create,
)
from tests.unit.testing.simulator.conftest import create_id, wait_done


@pytest.mark.parametrize(
    ("aspect_ratio", "megapixels", "size"),
    [
        (None, None, (1024, 1024)),
        ("1:1", "1", (1024, 1024)),
        ("1:1", "0.25", (512, 512)),
        ("16:9", "1", (1344, 768)),
        ("16:9", "0.25", (672, 384)),
        ("9:16", None, (768, 1344)),
        ("21:9", None, (1536, 640)),
        ("9:21", "0.25", (320, 768)),
        ("3:2", None, (1216, 832)),
        ("2:3", None, (832, 1216)),
        ("4:5", None, (896, 1088)),
        ("5:4", None, (1088, 896)),
        ("3:4", None, (896, 1152)),
        ("4:3", None, (1152, 896)),
    ],
)
def test_flux_sizes(aspect_ratio: str | None, megapixels: str | None, size: tuple[int, int]) -> None:
    assert flux_size(aspect_ratio, megapixels) == size


def test_flux_sizes_are_multiples_of_16_near_one_megapixel() -> None:
    for width, height in FLUX_SIZES.values():
        assert width % 16 == 0 and height % 16 == 0
        assert 0.9 < width * height / 2**20 < 1.1
    assert flux_size("custom", width=1000, height=700) == (992, 704)  # FLUX 1.1 pro rounds to 32
    assert flux_size("match_input_image") == (1024, 1024)
    assert flux_size("16:9", long_side=64) == (64, 37)


@pytest.mark.parametrize("fmt", ["png", "jpg", "webp"])
def test_render_image_formats_determinism_and_padding(fmt: str) -> None:
    data = render_image(fmt, seed=1, width=300, height=200, prompt="a red fox")
    assert decode(data) == (PIL_FORMATS[fmt], (300, 200))
    assert data == render_image(fmt, seed=1, width=300, height=200, prompt="a red fox")
    assert data != render_image(fmt, seed=2, width=300, height=200, prompt="a red fox")
    padded = render_image(fmt, seed=1, width=300, height=200, prompt="a red fox", pad_to=300_001)
    assert len(padded) == (300_000 if fmt == "webp" else 300_001)
    assert decode(padded) == (PIL_FORMATS[fmt], (300, 200))
    with pytest.raises(ValueError, match="unsupported image format"):
        render_image("gif", seed=1, width=8, height=8)


def test_render_image_draws_the_prompt() -> None:
    from PIL import Image, ImageChops

    plain = Image.open(io.BytesIO(render_image("png", seed=5, width=640, height=360, prompt="")))
    text = Image.open(io.BytesIO(render_image("png", seed=5, width=640, height=360, prompt="a lighthouse at dusk")))
    other = Image.open(io.BytesIO(render_image("png", seed=5, width=640, height=360, prompt="a fox \x1b[31m\nin snow")))
    box = ImageChops.difference(plain.convert("RGB"), text.convert("RGB")).getbbox()
    assert box is not None and box[1] < 60  # the text is drawn at the top
    assert ImageChops.difference(text.convert("RGB"), other.convert("RGB")).getbbox() is not None
    assert (255, 255, 255) in {
        text.convert("RGB").getpixel((x, y)) for x in range(box[0], box[2]) for y in range(box[1], box[3])
    }


def test_jpeg_and_webp_honour_output_quality() -> None:
    for fmt in ("jpg", "webp"):
        low = render_image(fmt, seed=3, width=512, height=512, prompt="a cat", quality=5)
        high = render_image(fmt, seed=3, width=512, height=512, prompt="a cat", quality=100)
        assert len(low) < len(high)


@pytest.mark.parametrize(
    ("model", "inputs", "fmt", "size"),
    [
        (SCHNELL, {"aspect_ratio": "16:9"}, "webp", (1344, 768)),
        (SCHNELL, {"aspect_ratio": "1:1", "megapixels": "0.25", "output_format": "png"}, "png", (512, 512)),
        (DEV, {"aspect_ratio": "9:16", "output_format": "jpg"}, "jpg", (768, 1344)),
        (PRO, {"aspect_ratio": "custom", "width": 800, "height": 608}, "webp", (800, 608)),
        (KONTEXT_PRO, {"aspect_ratio": "4:3"}, "png", (1152, 896)),
    ],
)
def test_downloads_have_the_requested_size_and_format(
    model: str, inputs: dict, fmt: str, size: tuple[int, int]
) -> None:
    with CometAPISimulator(run_seconds=0.05) as sim:
        response = post_create(sim, model, prompt="a lighthouse", **inputs)
        output = finished(sim, response.json()["id"])["output"]
        url = output[0] if isinstance(output, list) else output
        assert url.endswith(f".{fmt}")
        download = requests.get(url, timeout=30)
        assert download.status_code == 200
        assert decode(download.content) == (PIL_FORMATS[fmt], size)


def test_images_are_deterministic_per_prediction_and_index_and_drawn_lazily_once() -> None:
    with CometAPISimulator(run_seconds=0.05, known_models=None) as sim:
        started = time.perf_counter()
        ids = [post_create(sim, SCHNELL, prompt=f"cat {i}", num_outputs=2).json()["id"] for i in range(200)]
        creating = time.perf_counter() - started
        assert sim.stats["images_drawn"] == 0  # nothing drawn for predictions nobody downloads
        urls = finished(sim, ids[0])["output"]
        first = requests.get(urls[0], timeout=30).content
        again = requests.get(urls[0], timeout=30).content
        second = requests.get(urls[1], timeout=30).content
        assert first == again and first != second
        assert sim.stats["images_drawn"] == 2  # the repeated download came from the cache
        assert sim.file_bytes(ids[0], 0) == first and sim.stats["images_drawn"] == 2
        other = requests.get(finished(sim, ids[1])["output"][0], timeout=30).content
        assert other != first
        assert creating < 20, creating


@pytest.mark.parametrize(
    ("fmt", "content_type", "aspect_ratio", "size"),
    [
        ("webp", "image/webp", "16:9", (1344, 768)),
        ("jpg", "image/jpeg", "2:3", (832, 1216)),
        ("png", "image/png", None, (1024, 1024)),
    ],
)
def test_downloads_are_real_stable_images(
    sim: CometAPISimulator, fmt: str, content_type: str, aspect_ratio: str | None, size: tuple[int, int]
) -> None:
    inputs: dict[str, Any] = {"output_format": fmt, "num_outputs": 2}
    if aspect_ratio:
        inputs["aspect_ratio"] = aspect_ratio
    pid = create_id(sim, "a cat", SCHNELL, **inputs)
    first_url, second_url = wait_done(sim, pid)["output"]
    first = requests.get(first_url, timeout=10)
    assert first.status_code == 200
    assert first.headers["Content-Type"] == content_type
    assert int(first.headers["Content-Length"]) == len(first.content)
    assert decode(first.content) == (PIL_FORMATS[fmt], size)
    assert requests.get(first_url, timeout=10).content == first.content
    second = requests.get(second_url, timeout=10).content
    assert second != first.content and decode(second) == (PIL_FORMATS[fmt], size)
    assert sim.file_bytes(pid, 0) == first.content


def test_large_images(tmp_path: Path) -> None:
    with CometAPISimulator(run_seconds=0.05, image_bytes=8 * 1024 * 1024) as sim:
        pid = create_id(sim, "a big cat", PRO, output_format="png")
        response = requests.get(wait_done(sim, pid)["output"], timeout=10)
        assert len(response.content) == 8 * 1024 * 1024
        assert decode(response.content) == ("PNG", (1024, 1024))
